//! Where a request goes: the cluster root, this server's namespace, or
//! (with membership) the server that owns the path.

use std::sync::Arc;
use std::time::Duration;

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{Entry, ErrorKind, Path, Reply, Request, Response, ServerId, WireError};
use tokio::io::AsyncReadExt;
use tracing::info;

use crate::State;
use crate::elements::Element;

/// Serves `req` and answers on `stream`.
pub async fn route(state: Arc<State>, req: Request, mut stream: StreamHandle) {
    let resp = match req.path().server_id() {
        None => match &req {
            Request::Events { .. } => super::events::cluster(&state, &mut stream).await,
            _ => Some(root(&state, &req).await),
        },
        Some(id) if id == state.id => local(&state, &req, &mut stream).await,
        Some(id) => match state.members.get(id) {
            Some(node) => super::peers::forward(&state, &node, &req, &mut stream).await,
            None => Some(Err(no_server(id))),
        },
    };
    // `None`: a streaming handler has answered and streamed already.
    let Some(resp) = resp else {
        conn::finish(&mut stream).await;
        return;
    };
    let stopping = matches!(req, Request::Stop { .. }) && resp.is_ok();
    let _ = conn::respond(&mut stream, &resp).await;
    if stopping {
        // Let the answer reach the caller before the process goes away.
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
        state.stop.notify_one();
    }
    conn::finish(&mut stream).await;
}

/// The error for a path on a server that is not a member.
pub fn no_server(id: ServerId) -> WireError {
    WireError::new(
        ErrorKind::NoServer,
        format!("server {id} is not in the cluster (see `circuit ls /`)"),
    )
}

/// Requests on `/`: the listing of the cluster; nothing else lives there.
async fn root(state: &Arc<State>, req: &Request) -> Response {
    match req {
        Request::List { recursive, .. } => {
            let me = Path::server(state.id);
            // Without recursion, `/` lists servers only, this one's anchors not included.
            let mine = if *recursive {
                list_local(state, &me, true)
            } else {
                Vec::new()
            };
            let mut groups = vec![(state.id, mine)];
            let others = state.members.members();
            let asks = others.iter().map(|node| async move {
                let below = if *recursive {
                    let req = Request::List {
                        path: Path::server(node.id),
                        recursive: true,
                    };
                    match super::peers::ask(state, node, &req).await {
                        Ok(Reply::List(v)) => v,
                        // A member that cannot answer now is still listed; it may be leaving.
                        _ => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                (node.id, below)
            });
            groups.extend(futures::future::join_all(asks).await);
            groups.sort_by_key(|(id, _)| *id);
            let mut out = Vec::new();
            for (id, below) in groups {
                out.push(Entry {
                    path: Path::server(id),
                    kind: "server".into(),
                });
                out.extend(below);
            }
            Ok(Reply::List(out))
        }
        Request::Peek { .. } => Ok(Reply::Json("null".into())),
        Request::Stats { .. } => super::stats::cluster(state).await,
        _ => Err(WireError::new(
            ErrorKind::Invalid,
            format!("{} needs a path below a server, like /{}/name", req.verb(), state.id),
        )),
    }
}

/// This server's anchors at or below `path`. Each path is built once from
/// its names (linear); a name the tree should never hold is left out and
/// logged rather than taking the server down.
fn list_local(state: &State, path: &Path, recursive: bool) -> Vec<Entry> {
    let listed = state.ns.lock().unwrap().list(path.names(), recursive);
    listed
        .into_iter()
        .filter_map(|(names, kind)| match Path::from_names(state.id, names) {
            Ok(path) => Some(Entry {
                path,
                kind: kind.into(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "anchor left out of a listing");
                None
            }
        })
        .collect()
}

/// Serves a request for this server. One-shot requests return their
/// response; streaming ones answer on `stream` themselves and return `None`.
async fn local(state: &Arc<State>, req: &Request, stream: &mut StreamHandle) -> Option<Response> {
    match req {
        Request::Stdin { path } => return super::proc::write_in(state, path, stream).await,
        Request::Stdout { path } => {
            if let Some(w) = super::watch::find(state, path) {
                return super::watch::read_out(&w, path, "stdout", stream).await;
            }
            return super::proc::read_out(state, path, "stdout", stream).await;
        }
        Request::Stderr { path } => {
            if let Some(w) = super::watch::find(state, path) {
                return super::watch::read_out(&w, path, "stderr", stream).await;
            }
            return super::proc::read_out(state, path, "stderr", stream).await;
        }
        Request::Wait { path } => return super::proc::wait(state, path, stream).await,
        Request::WatchCtl { path, action } => return Some(super::watch::control(state, path, *action).await),
        Request::Scale { path, op } => return Some(super::watch::scale(state, path, *op).await),
        // Peek and signal of a watch ask its task; of other kinds, below.
        Request::Peek { path } => {
            if let Some(w) = super::watch::find(state, path) {
                return Some(super::watch::peek(&w, path).await);
            }
        }
        Request::Signal { path, signal } => {
            if let Some(w) = super::watch::find(state, path) {
                return Some(super::watch::signal(&w, path, signal).await);
            }
        }
        Request::Events { path } => return super::events::local(state, path, stream).await,
        Request::Send { path } => return super::chan::send(state, path, stream).await,
        Request::Recv { path } => return super::chan::recv(state, path, stream).await,
        Request::SendMany { path } => return super::chan::send_many(state, path, stream).await,
        Request::RecvMany { path } => return super::chan::recv_many(state, path, stream).await,
        _ => {}
    }
    Some(match req {
        Request::List { path, recursive } => Ok(Reply::List(list_local(state, path, *recursive))),
        Request::Peek { path } => peek(state, path),
        Request::Scrub { path } => scrub(state, path),
        Request::Stop { path } => stop(state, path),
        Request::Join { path, url } => join(state, path, url),
        Request::Stats { path } => super::stats::local(state, path).await,
        Request::Members { .. } => {
            let members = state.members.snapshot().await;
            serde_json::to_string(&members)
                .map(Reply::Json)
                .map_err(|e| WireError::new(ErrorKind::Internal, format!("members: {e}")))
        }
        Request::MakeProc { path, spec } => super::proc::make(state, path, spec),
        Request::Signal { path, signal } => super::proc::signal(state, path, signal),
        Request::MakeChan { path, cap } => super::chan::make(state, path, *cap),
        Request::Close { path } => super::chan::close(state, path),
        Request::MakeSubscription { path, source } => super::subscription::make(state, path, *source),
        Request::MakeWatch { path, spec } => super::watch::make(state, path, spec),
        Request::ReloadConfig { path } => crate::config::reload(state, path),
        Request::WatchCtl { .. } | Request::Scale { .. } => unreachable!("served above"),
        Request::Send { .. } | Request::Recv { .. } | Request::SendMany { .. } | Request::RecvMany { .. } => {
            unreachable!("streaming requests are served above")
        }
        Request::Stdin { .. } | Request::Stdout { .. } | Request::Stderr { .. } | Request::Wait { .. } => {
            unreachable!("streaming requests are served above")
        }
        Request::Events { .. } => {
            unreachable!("streaming requests are served above")
        }
    })
}

fn peek(state: &State, path: &Path) -> Response {
    let el = state.ns.lock().unwrap().get(path.names());
    Ok(Reply::Json(match el {
        None => "null".into(),
        Some(Element::Server) => server_stat(state),
        Some(Element::Proc(p)) => serde_json::to_string(&p.stat()).expect("a proc status serializes"),
        Some(Element::Chan(c)) => serde_json::to_string(&c.stat()).expect("a chan status serializes"),
        Some(Element::Subscription(s)) => serde_json::to_string(&s.stat()).expect("a subscription status serializes"),
        // A watch is peeked by its task, above; one made since then was not there yet.
        Some(Element::Watch(_)) => "null".into(),
    }))
}

fn scrub(state: &State, path: &Path) -> Response {
    if path.is_server_root() {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("cannot scrub {path}: it is the server itself; use `circuit stop {path}` to stop it"),
        ));
    }
    let el = state.ns.lock().unwrap().remove(path.names());
    match el {
        None => Err(WireError::new(
            ErrorKind::NotFound,
            format!("nothing to scrub at {path}"),
        )),
        Some(el) => {
            info!(op = "scrub", %path, kind = el.kind(), "scrubbing");
            el.scrub();
            Ok(Reply::Done)
        }
    }
}

fn stop(state: &State, path: &Path) -> Response {
    if !path.is_server_root() {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("stop needs a server path like /{}, not {path}", state.id),
        ));
    }
    Ok(Reply::Done)
}

fn join(state: &State, path: &Path, url: &str) -> Response {
    if !path.is_server_root() {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("join needs a server path like /{}, not {path}", state.id),
        ));
    }
    let url: circuit_proto::CircuitUrl = url
        .parse()
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("{e}")))?;
    if url.id == state.id || state.members.get(url.id).is_some() {
        info!(op = "join", %url, "already in the same cluster");
        return Ok(Reply::Done);
    }
    let node = crate::membership::node::Node::from_url(&url)
        .ok_or_else(|| WireError::new(ErrorKind::Invalid, format!("join: cannot resolve the address of {url}")))?;
    info!(op = "join", %url, "merging with the cluster of {}", url.id);
    state.members.join(node);
    Ok(Reply::Done)
}

fn server_stat(state: &State) -> String {
    let elements = state.ns.lock().unwrap().len();
    serde_json::json!({
        "Addr": state.url.to_string(),
        "Joined": state.joined,
        "Version": circuit_proto::VERSION,
        "Elements": elements,
        "Members": state.members.len(),
    })
    .to_string()
}
