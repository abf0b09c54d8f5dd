//! The process element's operations: make, stdin/stdout/stderr streams,
//! wait, signal. `mod.rs` knows processes; this file knows streams and
//! the wire.

use std::sync::Arc;

use circuit_proto::chunk;
use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{ErrorKind, Path, ProcOp, ProcSpec, Reply, Response, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::{OutLease, PIPE_SIZE, Proc, ProcError};
use crate::elements::streams;
use crate::elements::{Ctx, Element, ProcessInfo};

fn wire(path: &Path, e: ProcError) -> WireError {
    WireError::at(e.kind(), path, format!("{path}: {e}"))
}

/// Serves `op` on the process `proc` at `path`.
pub(crate) async fn serve(proc: &Proc, path: &Path, op: ProcOp, stream: &mut StreamHandle) -> Option<Response> {
    match op {
        ProcOp::Make(_) => Some(Err(WireError::at(
            ErrorKind::Exists,
            path,
            format!("anchor {path} already holds a proc"),
        ))),
        ProcOp::Stdin => write_in(proc, path, stream).await,
        ProcOp::Stdout => read_out(proc, path, "stdout", stream).await,
        ProcOp::Stderr => read_out(proc, path, "stderr", stream).await,
        ProcOp::Wait => wait(proc, path, stream).await,
        ProcOp::Signal(name) => Some(signal(proc, path, &name)),
    }
}

/// The process, for `stats`, while it runs.
pub(crate) fn processes(proc: &Proc) -> Vec<ProcessInfo> {
    proc.pid()
        .filter(|_| !proc.stat().phase.is_final())
        .map(|pid| ProcessInfo {
            pid,
            label: String::new(),
        })
        .into_iter()
        .collect()
}

/// `mkproc`: starts the process and places it at `path`. A process that
/// cannot be started stays as an element in phase `unknown` (unless its spec
/// says `Scrub`), and the request fails with the exec error.
pub(crate) fn make(ctx: &Ctx, path: &Path, spec: ProcSpec) -> Response {
    super::validate(&spec).map_err(|e| wire(path, e))?;
    // Spawned under the namespace lock so that two makers of one path cannot both start.
    let proc = ctx.make(path, "process", || {
        let proc = Proc::spawn(&ctx.reaper, spec.clone());
        let keep = proc.spawn_error().is_none() || !spec.scrub;
        (keep.then(|| Element::Proc(proc.clone())), proc)
    })?;
    if let Some(err) = proc.spawn_error() {
        warn!(op = "mkproc", %path, cmd = %spec.path, error = %err, kept = !spec.scrub, "cannot start");
        return Err(WireError::new(ErrorKind::Io, err));
    }
    info!(op = "mkproc", %path, cmd = %spec.path, args = ?spec.args, pid = proc.pid(), scrub = spec.scrub, "started");
    if let Some(pid) = proc.pid() {
        ctx.events.emit(path, circuit_proto::EventKind::Spawned { pid });
    }
    // Watches the process until it ends (scrubbed or not): logs the end,
    // reports it as an event and, with `Scrub`, removes the element.
    // On the server's tracker; a process that outlives the server (it is
    // abandoned at stop, as in the original) is not waited for.
    let (ctx, path) = (ctx.clone(), path.clone());
    let rt = ctx.rt.clone();
    rt.tasks.spawn(async move {
        let ended = tokio::select! {
            s = proc.ended() => s,
            _ = ctx.rt.shutdown.cancelled() => return,
        };
        let Some(stat) = ended else { return };
        info!(op = "exit", %path, pid = proc.pid(), phase = %stat.phase, exit = ?stat.exit, "process ended");
        ctx.events.emit(
            &path,
            circuit_proto::EventKind::Exited {
                pid: stat.pid,
                phase: stat.phase,
                code: stat.exit.as_ref().map_or(-1, |e| e.code),
                signal: stat.exit.as_ref().and_then(|e| e.signal),
            },
        );
        if !proc.spec().scrub {
            return;
        }
        let mut ns = ctx.ns.lock().unwrap();
        if matches!(ns.get(path.names()), Some(Element::Proc(p)) if Arc::ptr_eq(&p, &proc)) {
            ns.remove(path.names());
            drop(ns);
            info!(op = "scrub", %path, "scrubbed on exit, as its spec asks");
            proc.scrub();
        }
    });
    Ok(Reply::Done)
}

/// Reads at most one byte from the client; returns once the client has
/// gone (it never writes on a read stream, so any answer means that).
async fn gone<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut probe = [0u8; 1];
    let _ = rd.read(&mut probe).await;
}

/// `wait`: answers once the process has ended. Gives up quietly if the
/// client goes away first.
async fn wait(proc: &Proc, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    tokio::select! {
        r = proc.wait() => Some(match r {
            Ok(stat) => Ok(Reply::Exit(Box::new(stat))),
            Err(e) => Err(wire(path, e)),
        }),
        _ = gone(stream) => None,
    }
}

/// `signal`.
fn signal(proc: &Proc, path: &Path, name: &str) -> Response {
    let sig = proc.signal(name).map_err(|e| wire(path, e))?;
    info!(op = "signal", %path, pid = proc.pid(), signal = %sig, "signalled");
    Ok(Reply::Done)
}

/// `stdout` / `stderr`: streams the pipe to the client until end of file,
/// while the client stays. A client that leaves frees the stream for the next.
async fn read_out(proc: &Proc, path: &Path, which: &'static str, stream: &mut StreamHandle) -> Option<Response> {
    let lease = match which {
        "stderr" => proc.stderr(),
        _ => proc.stdout(),
    };
    let mut lease = match lease {
        Ok(l) => l,
        Err(e) => return Some(Err(wire(path, e))),
    };
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    info!(op = which, %path, "reader attached");
    let (bytes, end) = copy_out(proc, path, &mut lease, stream).await;
    info!(op = which, %path, bytes, end, "reader detached");
    None
}

/// Copies the pipe to the client as chunks ([`chunk`]): data, then the end
/// chunk once the process's end of file is reached, or a failure chunk if
/// the element is scrubbed meanwhile. A stream that stops without either
/// tells the client its output was cut short.
async fn copy_out(proc: &Proc, path: &Path, lease: &mut OutLease, stream: &mut StreamHandle) -> (u64, &'static str) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Read after a 4-byte gap for the chunk's length word: one write per chunk, no copy.
    let mut buf = vec![0u8; 4 + PIPE_SIZE];
    let mut total = 0u64;
    loop {
        let n = tokio::select! {
            r = lease.reader().read(&mut buf[4..]) => match r {
                Ok(0) => {
                    let _ = chunk::write_end(&mut wr).await;
                    return (total, "end of file");
                }
                Ok(n) => n,
                Err(e) => {
                    let err = wire(path, ProcError::Os(format!("reading the process's output: {e}")));
                    let _ = chunk::write_fail(&mut wr, &err).await;
                    return (total, "pipe error");
                }
            },
            _ = gone(&mut rd) => return (total, "client left"),
            _ = proc.scrubbed() => {
                let _ = chunk::write_fail(&mut wr, &wire(path, ProcError::Aborted)).await;
                return (total, "scrubbed");
            }
        };
        buf[..4].copy_from_slice(&chunk::header(n));
        tokio::select! {
            r = wr.write_all(&buf[..4 + n]) => if r.is_err() { return (total, "client left") },
            _ = gone(&mut rd) => return (total, "client left"),
            _ = proc.scrubbed() => return (total, "scrubbed"),
        }
        total += n as u64;
    }
}

/// `stdin` (see [`streams::write_in`]).
async fn write_in(proc: &Proc, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    match proc.stdin() {
        Ok(lease) => streams::write_in(lease, path, "process", proc.scrubbed(), stream).await,
        Err(e) => Some(Err(wire(path, e))),
    }
}
