//! The server element, at each server's root `/X…`: its status, and the
//! operations on the server itself (stop, join, members, reloadconfig).
//! `events` and `stats` serve any path of the server, and at `/` merge the
//! whole cluster.

pub mod events;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use circuit_proto::conn::StreamHandle;
use circuit_proto::{ErrorKind, Member, MemberState, Path, Reply, Response, ServerOp, ServerStat, WireError};
use tokio::io::AsyncReadExt;
use tracing::info;

use super::Ctx;
use crate::State;
use crate::membership::node::Node;

/// What `peek` says of this server.
pub(crate) fn stat(ctx: &Ctx) -> ServerStat {
    let elements = ctx.ns.lock().unwrap().len();
    ServerStat {
        addr: ctx.url.to_string(),
        joined: ctx.joined.to_string(),
        version: circuit_proto::VERSION.into(),
        elements: elements as u64,
        members: ctx.members.len() as u64,
    }
}

/// Serves an operation on the server `path` names (this one), answering
/// on `stream`.
pub async fn serve(state: &Arc<State>, path: &Path, op: ServerOp, stream: &mut StreamHandle) -> Option<Response> {
    if !path.is_server_root() {
        let verb = circuit_proto::Op::Server(op).verb();
        return Some(Err(WireError::at(
            ErrorKind::Invalid,
            path,
            format!("{verb} needs a server path like /{}, not {path}", state.ctx.id),
        )));
    }
    Some(match op {
        ServerOp::Stop => {
            // Let the answer reach the caller before the process goes away.
            if circuit_proto::conn::respond(stream, &Ok(Reply::Done)).await.is_ok() {
                let mut sink = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
            }
            state.stop.notify_one();
            return None;
        }
        ServerOp::Join { url } => join(state, &url),
        ServerOp::Members => Ok(Reply::Members(
            state
                .ctx
                .members
                .snapshot()
                .await
                .into_iter()
                .map(member_to_wire)
                .collect(),
        )),
        ServerOp::ReloadConfig => crate::config::reload(state),
        ServerOp::Hold => {
            // Acknowledged already (the op may wait): nothing to answer.
            // The caller sends nothing; any byte, its close, or this
            // server's stop ends the hold.
            let mut sink = [0u8; 1];
            tokio::select! {
                _ = stream.read(&mut sink) => {}
                _ = state.ctx.rt.shutdown.cancelled() => {}
            }
            return None;
        }
    })
}

fn join(state: &State, url: &str) -> Response {
    let url: circuit_proto::CircuitUrl = url
        .parse()
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("{e}")))?;
    if url.id == state.ctx.id || state.ctx.members.get(url.id).is_some() {
        info!(op = "join", %url, "already in the same cluster");
        return Ok(Reply::Done);
    }
    let node = Node::from_url(&url)
        .ok_or_else(|| WireError::new(ErrorKind::Invalid, format!("join: cannot resolve the address of {url}")))?;
    info!(op = "join", %url, "merging with the cluster of {}", url.id);
    state.ctx.members.join(node);
    Ok(Reply::Done)
}

/// A SWIM member as it crosses the wire.
pub(crate) fn member_to_wire(m: foca::Member<Node>) -> Member {
    let node = *m.id();
    Member {
        id: node.id,
        addr: node.addr,
        pid: node.pid,
        started: node.started,
        renewed: node.incarnation,
        incarnation: m.incarnation(),
        state: match m.state() {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        },
    }
}

/// A member from the wire, for SWIM.
pub(crate) fn member_from_wire(m: Member) -> foca::Member<Node> {
    let node = Node {
        id: m.id,
        addr: m.addr,
        pid: m.pid,
        started: m.started,
        incarnation: m.renewed,
    };
    let state = match m.state {
        MemberState::Alive => foca::State::Alive,
        MemberState::Suspect => foca::State::Suspect,
        MemberState::Down => foca::State::Down,
    };
    foca::Member::new(node, m.incarnation, state)
}
