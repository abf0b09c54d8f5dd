//! Requests on watch elements: make, start/stop/restart/reload, scale,
//! signal, peek. The element (`elements::watch`) knows processes and policy;
//! this glue knows the namespace and the wire.

use std::sync::Arc;

use circuit_proto::{ErrorKind, Path, Reply, Response, ScaleOp, WatchAction, WatchSpec, WireError};
use tracing::info;

use crate::State;
use crate::elements::Element;
use crate::elements::watch::{Watch, WatchError};

fn wire(path: &Path, e: WatchError) -> WireError {
    WireError::new(e.kind(), format!("{path}: {e}"))
}

/// The watch at `path`, if that is what it holds (for requests that several
/// kinds answer, like `peek` and `signal`).
pub fn find(state: &State, path: &Path) -> Option<Arc<Watch>> {
    match state.ns.lock().unwrap().get(path.names()) {
        Some(Element::Watch(w)) => Some(w),
        _ => None,
    }
}

/// The watch at `path`, or why there is none.
pub fn get(state: &State, path: &Path) -> Result<Arc<Watch>, WireError> {
    match state.ns.lock().unwrap().get(path.names()) {
        Some(Element::Watch(w)) => Ok(w),
        Some(other) => Err(WireError::new(
            ErrorKind::WrongKind,
            format!("anchor {path} holds a {}, not a watch", other.kind()),
        )),
        None => Err(WireError::new(ErrorKind::NotFound, format!("no watch at {path}"))),
    }
}

/// `mkwatch`: starts the processes and places the watcher at `path`. If a
/// first process cannot be started, nothing is kept and the request fails
/// with the exec error.
pub fn make(state: &Arc<State>, path: &Path, spec: &WatchSpec) -> Response {
    if path.is_server_root() {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("{path} is a server; make the watch below it, like {path}/name"),
        ));
    }
    let taken = |kind: &str| WireError::new(ErrorKind::Exists, format!("anchor {path} already holds a {kind}"));
    if let Some(old) = state.ns.lock().unwrap().get(path.names()) {
        return Err(taken(old.kind()));
    }
    // Started without the namespace lock (spawning many processes takes a
    // while); if another element took the anchor meanwhile, this watcher is
    // dropped, which stops its processes, and its events are never released.
    let (bus, at) = (state.events.clone(), path.clone());
    let emit = Box::new(move |kind| bus.emit(&at, kind));
    let watch = Watch::start(&state.ctx, path.to_string(), spec.clone(), emit).map_err(|e| wire(path, e))?;
    let watch = Arc::new(watch);
    {
        let mut ns = state.ns.lock().unwrap();
        if let Some(old) = ns.get(path.names()) {
            return Err(taken(old.kind()));
        }
        ns.insert(path.names(), Element::Watch(watch.clone()))
            .expect("checked free under the same lock");
    }
    watch.release();
    Ok(Reply::Done)
}

/// `watch start|stop|restart|reload`.
pub async fn control(state: &State, path: &Path, action: WatchAction) -> Response {
    let watch = get(state, path)?;
    watch.control(action).await.map_err(|e| wire(path, e))?;
    Ok(Reply::Done)
}

/// `numprocs`, `incr`, `decr`: answers the count after, as JSON.
pub async fn scale(state: &State, path: &Path, op: ScaleOp) -> Response {
    let watch = get(state, path)?;
    let n = watch.scale(op).await.map_err(|e| wire(path, e))?;
    Ok(Reply::Json(n.to_string()))
}

/// `signal` on a watch: every running process gets it.
pub async fn signal(watch: &Watch, path: &Path, name: &str) -> Response {
    let n = watch.signal(name).await.map_err(|e| wire(path, e))?;
    info!(op = "signal", %path, signal = name, processes = n, "signalled the watcher's processes");
    Ok(Reply::Done)
}

/// `peek` of a watch.
pub async fn peek(watch: &Watch, path: &Path) -> Response {
    let stat = watch.stat().await.map_err(|e| wire(path, e))?;
    serde_json::to_string(&stat)
        .map(Reply::Json)
        .map_err(|e| WireError::new(ErrorKind::Internal, format!("{path}: {e}")))
}

/// `stdout` / `stderr` of a watch: answers `Done`, then the rings of every
/// process (each line prefixed by `[WID] `, by slot) as raw bytes, then ends
/// the stream. Fails unless the spec keeps that stream in rings.
pub async fn read_out(
    watch: &Watch,
    path: &Path,
    which: &'static str,
    stream: &mut circuit_proto::conn::StreamHandle,
) -> Option<Response> {
    use tokio::io::AsyncWriteExt;
    let bytes = match watch.output(which == "stderr") {
        Ok(b) => b,
        Err(e) => return Some(Err(wire(path, e))),
    };
    if circuit_proto::conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    info!(op = which, %path, bytes = bytes.len(), "watcher output sent");
    None
}
