//! The watcher element's operations: make, start/stop/restart/reload,
//! scale, and the process verbs it answers (signal, stdout, stderr), peek.
//! `mod.rs` knows processes and policy; this file knows streams and the wire.

use std::sync::Arc;

use circuit_proto::WireError;
use circuit_proto::conn::StreamHandle;
use circuit_proto::{ErrorKind, Path, ProcOp, Reply, Response, ScaleOp, WatchAction, WatchOp, WatchSpec, WatchStat};
use tracing::info;

use super::{Watch, WatchError};
use crate::elements::{Ctx, Element, ProcessInfo};

fn wire(path: &Path, e: WatchError) -> WireError {
    WireError::at(e.kind(), path, format!("{path}: {e}"))
}

/// Serves a watcher's own `op`.
pub(crate) async fn serve(watch: &Watch, path: &Path, op: WatchOp) -> Response {
    match op {
        WatchOp::Make(_) => Err(WireError::at(
            ErrorKind::Exists,
            path,
            format!("anchor {path} already holds a watch"),
        )),
        WatchOp::Control(action) => control(watch, path, action).await,
        WatchOp::Scale(op) => scale(watch, path, op).await,
    }
}

/// Serves the process verbs a watcher answers: `stdout`, `stderr`, `signal`.
pub(crate) async fn serve_proc(watch: &Watch, path: &Path, op: ProcOp, stream: &mut StreamHandle) -> Option<Response> {
    match op {
        ProcOp::Stdout => read_out(watch, path, "stdout", stream).await,
        ProcOp::Stderr => read_out(watch, path, "stderr", stream).await,
        ProcOp::Signal(name) => Some(signal(watch, path, &name).await),
        other => Some(Err(crate::elements::wrong_kind(
            path,
            circuit_proto::ElementKind::Watch,
            &circuit_proto::Op::Proc(other),
        ))),
    }
}

/// The watcher's processes, for `stats`.
pub(crate) fn processes(watch: &Watch) -> Vec<ProcessInfo> {
    watch
        .processes()
        .into_iter()
        .map(|(wid, pid)| ProcessInfo {
            pid,
            label: format!("wid {wid}"),
        })
        .collect()
}

/// `mkwatch`: starts the processes and places the watcher at `path`. If a
/// first process cannot be started, nothing is kept and the request fails
/// with the exec error.
pub(crate) fn make(ctx: &Ctx, path: &Path, spec: WatchSpec) -> Response {
    ctx.check_free(path, "watch")?;
    // Started without the namespace lock (spawning many processes takes a
    // while); if another element took the anchor meanwhile, this watcher is
    // dropped, which stops its processes, and its events are never released.
    let (bus, at) = (ctx.events.clone(), path.clone());
    let emit = Box::new(move |kind| bus.emit(&at, kind));
    let watch = Watch::start(&ctx.rt, path.to_string(), spec, emit).map_err(|e| wire(path, e))?;
    let watch = Arc::new(watch);
    ctx.make(path, "watch", || (Some(Element::Watch(watch.clone())), ()))?;
    watch.release();
    Ok(Reply::Done)
}

/// `watch start|stop|restart|reload`.
async fn control(watch: &Watch, path: &Path, action: WatchAction) -> Response {
    watch.control(action).await.map_err(|e| wire(path, e))?;
    Ok(Reply::Done)
}

/// `numprocs`, `incr`, `decr`: answers the count after.
async fn scale(watch: &Watch, path: &Path, op: ScaleOp) -> Response {
    let n = watch.scale(op).await.map_err(|e| wire(path, e))?;
    Ok(Reply::Count(n.into()))
}

/// `signal` on a watch: every running process gets it.
async fn signal(watch: &Watch, path: &Path, name: &str) -> Response {
    let n = watch.signal(name).await.map_err(|e| wire(path, e))?;
    info!(op = "signal", %path, signal = name, processes = n, "signalled the watcher's processes");
    Ok(Reply::Done)
}

/// `peek` of a watch: its task answers.
pub(crate) async fn peek(watch: &Watch, path: &Path) -> Result<WatchStat, WireError> {
    watch.stat().await.map_err(|e| wire(path, e))
}

/// `stdout` / `stderr` of a watch: answers `Done`, then the rings of every
/// process (each line prefixed by `[WID] `, by slot) as raw bytes, then ends
/// the stream. Fails unless the spec keeps that stream in rings.
async fn read_out(watch: &Watch, path: &Path, which: &'static str, stream: &mut StreamHandle) -> Option<Response> {
    let bytes = match watch.output(which == "stderr") {
        Ok(b) => b,
        Err(e) => return Some(Err(wire(path, e))),
    };
    if circuit_proto::conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    // As a process's output: chunks, then the end chunk that says it is whole.
    for piece in bytes.chunks(circuit_proto::chunk::MAX_CHUNK) {
        if circuit_proto::chunk::write_data(stream, piece).await.is_err() {
            return None;
        }
    }
    let _ = circuit_proto::chunk::write_end(stream).await;
    info!(op = which, %path, bytes = bytes.len(), "watcher output sent");
    None
}
