//! Where a request goes: the cluster root, this server (its own ops, or
//! the element layer), or the server that owns the path.

use std::sync::Arc;

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{AnchorOp, ElementKind, Entry, ErrorKind, Op, Path, Reply, Request, Response, ServerId, WireError};

use crate::State;
use crate::elements::{self, server};

/// Serves `req` and answers on `stream`.
pub async fn route(state: Arc<State>, req: Request, mut stream: StreamHandle) {
    let Request { path, op } = req;
    let resp = match path.server_id() {
        None => root(&state, &path, op, &mut stream).await,
        Some(id) if id == state.ctx.id => match op {
            Op::Server(op) => server::serve(&state, &path, op, &mut stream).await,
            op => elements::serve(&state.ctx, &path, op, &mut stream).await,
        },
        Some(id) => match state.ctx.members.get(id) {
            Some(node) => super::peers::forward(&state, &node, Request { path, op }, &mut stream).await,
            None => Some(Err(no_server(id))),
        },
    };
    // `None`: a streaming handler has answered and streamed already.
    if let Some(resp) = resp {
        let _ = conn::respond(&mut stream, &resp).await;
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

/// Requests on `/`: the listing, the events and the stats of the cluster;
/// nothing else lives there.
async fn root(state: &Arc<State>, path: &Path, op: Op, stream: &mut StreamHandle) -> Option<Response> {
    Some(match op {
        Op::Anchor(AnchorOp::List { recursive }) => Ok(Reply::List(list_cluster(state, recursive).await)),
        Op::Anchor(AnchorOp::Peek) => Ok(Reply::Stat(None)),
        Op::Anchor(AnchorOp::Stats) => server::stats::cluster(state).await,
        Op::Anchor(AnchorOp::Events) => return server::events::cluster(state, stream).await,
        op => Err(WireError::at(
            ErrorKind::Invalid,
            path,
            format!("{} needs a path below a server, like /{}/name", op.verb(), state.ctx.id),
        )),
    })
}

/// `ls /` (the servers) and `ls /...` (the servers and everything below
/// each, asked of every member in parallel).
async fn list_cluster(state: &Arc<State>, recursive: bool) -> Vec<Entry> {
    let me = Path::server(state.ctx.id);
    // Without recursion, `/` lists servers only, this one's anchors not included.
    let mine = if recursive {
        state.ctx.list(&me, true)
    } else {
        Vec::new()
    };
    let mut groups = vec![(state.ctx.id, mine)];
    let others = state.ctx.members.members();
    let asks = others.iter().map(|node| async move {
        let below = if recursive {
            let req = Request::new(Path::server(node.id), AnchorOp::List { recursive: true });
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
            kind: Some(ElementKind::Server),
        });
        out.extend(below);
    }
    out
}
