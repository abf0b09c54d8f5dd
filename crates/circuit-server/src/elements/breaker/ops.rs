//! The breaker element's operations: `mkbreaker`, `allow`, `record`,
//! `reset`, `open`, `close`. Each is one log line.

use std::sync::{Arc, Mutex};

use circuit_breaker::{Breakers, Limits};
use circuit_proto::{BreakerOp, BreakerReply, BreakerSpec, ErrorKind, Path, Reply, Response, WireError};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::store::{self, Store};
use super::{Breaker, Inner};
use crate::elements::{Ctx, Element};

fn invalid(path: &Path, msg: impl std::fmt::Display) -> WireError {
    WireError::at(ErrorKind::Invalid, path, format!("{path}: {msg}"))
}

/// `mkbreaker PATH` with `spec`: checks the spec, then places the element.
/// With `--var DIR`, a state saved there for this anchor is taken up (Open
/// stays Open until its original expiry).
pub(crate) fn make(ctx: &Ctx, path: &Path, spec: BreakerSpec) -> Response {
    let refused = |e: WireError| {
        info!(op = "mkbreaker", %path, error = %e.message, "refused");
        e
    };
    spec.validate().map_err(|e| refused(invalid(path, e)))?;
    ctx.check_free(path, "breaker").map_err(refused)?;
    let store = ctx.var.as_deref().map(|var| Store::new(var, path.names()));
    let saved = store.as_ref().and_then(|s| s.load(path));
    let origin = ctx.rt.clock.now();
    let restored = saved.as_ref().map(|s| (s.state.keys.len(), s.age()));
    let core = match saved {
        Some(s) => {
            let age = s.age();
            Breakers::restore(spec, Limits::default(), s.state, std::time::Duration::ZERO, age)
        }
        None => Breakers::new(spec, Limits::default()),
    };
    let stop = ctx.rt.shutdown.child_token();
    let b = Arc::new(Breaker {
        inner: Mutex::new(Inner {
            armed: core.next_deadline(),
            core,
        }),
        clock: ctx.rt.clock,
        origin,
        path: path.clone(),
        events: ctx.events.clone(),
        wake: Notify::new(),
        dirty: Notify::new(),
        store,
        stop,
        shutdown: ctx.rt.shutdown.clone(),
    });
    ctx.make(path, "breaker", || (Some(Element::Breaker(b.clone())), ()))
        .map_err(refused)?;
    ctx.rt.tasks.spawn(b.clone().timer());
    if b.store.is_some() {
        ctx.rt.tasks.spawn(b.clone().persister());
        // The file exists from the start: a restart finds the element.
        b.save();
    }
    match restored {
        Some((keys, age)) => info!(op = "mkbreaker", %path, keys, down_for = ?age, "made, with its saved state"),
        None => info!(op = "mkbreaker", %path, "made"),
    }
    Ok(Reply::Done)
}

/// Makes again, at start, every breaker saved under `--var DIR` that the
/// config file did not make already.
pub fn restore_all(ctx: &Ctx) {
    let Some(var) = ctx.var.as_deref() else { return };
    for saved in store::saved(var) {
        let path = match saved.names.iter().try_fold(Path::server(ctx.id), |p, n| p.child(n)) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "breaker file with a bad anchor: skipped");
                continue;
            }
        };
        if ctx.get(&path).is_some() {
            continue;
        }
        if let Err(e) = make(ctx, &path, saved.spec) {
            warn!(%path, error = %e.message, "cannot make a saved breaker again");
        }
    }
}

/// Serves `op` on the breaker at `path`.
pub(crate) fn serve(b: &Arc<Breaker>, path: &Path, op: BreakerOp) -> Response {
    let reply = match op {
        BreakerOp::Session => {
            return Err(invalid(path, "a breaker session is a stream: it is not served here"));
        }
        BreakerOp::Make(_) => {
            return Err(WireError::at(
                ErrorKind::Exists,
                path,
                format!("anchor {path} already holds a breaker"),
            ));
        }
        BreakerOp::Allow { key } => match b.with(|c, now| c.allow(&key, now)) {
            Ok(p) => {
                info!(op = "allow", %path, %key, permit = p.id, generation = p.generation, "admitted");
                BreakerReply::Permit(p)
            }
            Err(r) => {
                info!(op = "allow", %path, %key, reason = %r, "rejected");
                BreakerReply::Rejected(r)
            }
        },
        BreakerOp::Record { permit, outcome } => {
            let r = b.with(|c, now| c.record(permit.id, outcome, now));
            info!(op = "record", %path, key = %permit.key, permit = permit.id, generation = permit.generation,
                  %outcome, result = ?r, "recorded");
            BreakerReply::Recorded(r)
        }
        BreakerOp::Reset { key } => {
            let changed = b.with(|c, now| c.reset(&key, now));
            info!(op = "reset", %path, %key, changed, "reset");
            BreakerReply::Changed(changed)
        }
        BreakerOp::Open { key } => match b.with(|c, now| c.force_open(&key, now)) {
            Ok(()) => {
                info!(op = "open", %path, %key, "opened");
                BreakerReply::Changed(true)
            }
            Err(r) => {
                info!(op = "open", %path, %key, error = %r, "refused");
                return Err(invalid(path, r));
            }
        },
        BreakerOp::Close { key } => {
            let changed = b.with(|c, now| c.force_close(&key, now));
            info!(op = "close", %path, %key, changed, "closed");
            BreakerReply::Changed(changed)
        }
    };
    Ok(Reply::Breaker(reply))
}

/// `BreakerOp::Session`: many ops on one stream, answered in order. The
/// answers to the requests that came together are written together (one
/// flush per batch), so a pipelining client pays one round trip per batch,
/// not per op.
pub(crate) async fn session(
    b: &Arc<Breaker>,
    path: &Path,
    stream: &mut circuit_proto::conn::StreamHandle,
) -> Option<Response> {
    use circuit_proto::breaker::{SessionAnswer, SessionRequest};
    use circuit_proto::frame::{self, FrameError};
    use tokio::io::{AsyncWriteExt, BufReader};

    if circuit_proto::conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    info!(op = "breaker-session", %path, "session open");
    let mut io = BufReader::with_capacity(64 * 1024, stream);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut served = 0u64;
    let end = loop {
        let req: SessionRequest = match frame::read_frame(&mut io).await {
            Ok(r) => r,
            Err(FrameError::Eof) => break "client closed",
            Err(e) => {
                warn!(op = "breaker-session", %path, error = %e, "bad frame; session ended");
                break "bad frame";
            }
        };
        let aborted = b.stop.is_cancelled();
        let answer = if aborted {
            Err(WireError::at(
                ErrorKind::Aborted,
                path,
                format!("the breaker at {path} was scrubbed"),
            ))
        } else {
            match req.op {
                op @ (BreakerOp::Make(_) | BreakerOp::Session) => Err(invalid(
                    path,
                    format!("{} is not taken inside a breaker session", op.verb()),
                )),
                op => serve(b, path, op).and_then(|r| match r {
                    Reply::Breaker(r) => Ok(r),
                    other => Err(WireError::at(
                        ErrorKind::Internal,
                        path,
                        format!("{path}: {} from a breaker op", other.name()),
                    )),
                }),
            }
        };
        served += 1;
        match frame::encode(&SessionAnswer { id: req.id, answer }) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => {
                warn!(op = "breaker-session", %path, error = %e, "cannot encode an answer; session ended");
                break "encode";
            }
        }
        // Write once nothing more is waiting to be read (or a lot is out).
        if io.buffer().is_empty() || out.len() >= 64 * 1024 || aborted {
            let w = io.get_mut();
            if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                break "client gone";
            }
            out.clear();
        }
        if aborted {
            break "breaker scrubbed";
        }
    };
    info!(op = "breaker-session", %path, ops = served, why = end, "session closed");
    None
}
