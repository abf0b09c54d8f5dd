//! Connections to other members, opened on first use and kept while the
//! member lives. Forwarding a request is a byte copy between the caller's
//! stream and a stream to the owner, whatever the request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use circuit_proto::conn::{self, Control, StreamHandle};
use circuit_proto::frame::write_frame;
use circuit_proto::secure::client_handshake;
use circuit_proto::{ErrorKind, Key, Request, Response, ServerId, WireError};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::State;
use crate::membership::node::Node;
use crate::membership::swim::MemberEvent;

/// How long dialing a member may take before it counts as unreachable.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Open connections to other members.
pub struct Peers {
    key: Option<Key>,
    conns: Mutex<HashMap<ServerId, Control>>,
}

fn unreachable(node: &Node, why: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorKind::NoServer,
        format!(
            "server {} is not reachable ({why}); it may have just left the cluster",
            node.id
        ),
    )
}

impl Peers {
    /// No connections yet.
    pub fn new(key: Option<Key>) -> Peers {
        Peers {
            key,
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn dial(&self, node: &Node) -> Result<Control, WireError> {
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(node.addr))
            .await
            .map_err(|_| unreachable(node, "no answer"))?
            .map_err(|e| unreachable(node, e))?;
        let io = client_handshake(tcp, self.key.as_ref())
            .await
            .map_err(|e| unreachable(node, e))?;
        debug!(peer = %node.id, addr = %node.addr, "connected to member");
        Ok(conn::client(io))
    }

    /// A new stream to `node`, over the existing connection if there is one.
    pub async fn open(&self, node: &Node) -> Result<StreamHandle, WireError> {
        let existing = self.conns.lock().unwrap().get(&node.id).cloned();
        if let Some(mut ctl) = existing {
            if let Ok(s) = ctl.open_stream().await {
                return Ok(s);
            }
            self.forget(node.id);
        }
        let mut ctl = self.dial(node).await?;
        let s = ctl.open_stream().await.map_err(|e| unreachable(node, e))?;
        self.conns.lock().unwrap().insert(node.id, ctl);
        Ok(s)
    }

    /// Drops the connection to a member (it left, or the connection broke).
    pub fn forget(&self, id: ServerId) {
        self.conns.lock().unwrap().remove(&id);
    }
}

/// Drops connections to members as they leave, and when this server meets
/// a cluster (after being alone), pulls the whole member list from the first
/// member it meets: one announce only brings back as many members as fit in
/// a datagram, and gossip would take long to tell the rest.
/// Runs on the server's tracker until the server stops.
pub fn forget_the_departed(state: Arc<State>) {
    let mut events = state.ctx.members.subscribe();
    let (rt, tracker) = (state.ctx.rt.clone(), state.ctx.rt.tasks.clone());
    tracker.spawn(async move {
        let mut pulled = false;
        loop {
            let next = tokio::select! {
                e = events.recv() => e,
                _ = state.ctx.rt.shutdown.cancelled() => return,
            };
            match next {
                Ok(MemberEvent::Left(id)) => {
                    state.peers.forget(id);
                    if state.ctx.members.len() == 1 {
                        pulled = false;
                    }
                }
                Ok(MemberEvent::Joined(id)) if !pulled => {
                    pulled = true;
                    if let Some(node) = state.ctx.members.get(id) {
                        let state = state.clone();
                        rt.tasks.spawn(async move { pull(&state, &node).await });
                    }
                }
                Ok(MemberEvent::Joined(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
}

/// Sends `req` on to the member that owns its path and relays everything
/// that follows, both ways. `None` once relayed; an error if the owner
/// could not be reached.
pub async fn forward(state: &State, node: &Node, req: Request, client: &mut StreamHandle) -> Option<Response> {
    let mut up = match state.peers.open(node).await {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    if let Err(e) = write_frame(&mut up, &req).await {
        state.peers.forget(node.id);
        return Some(Err(unreachable(node, e)));
    }
    let _ = tokio::io::copy_bidirectional(client, &mut up).await;
    info!(op = req.verb(), path = %req.path(), peer = %node.id, "forwarded");
    None
}

/// One request to a member, answered in one frame (e.g. its listing).
pub async fn ask(state: &State, node: &Node, req: &Request) -> Response {
    let mut up = state.peers.open(node).await?;
    if let Err(e) = write_frame(&mut up, req).await {
        state.peers.forget(node.id);
        return Err(unreachable(node, e));
    }
    match tokio::time::timeout(DIAL_TIMEOUT, circuit_proto::frame::read_frame::<Response, _>(&mut up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(unreachable(node, e)),
        Err(_) => Err(unreachable(node, "no answer")),
    }
}

/// Fetches `node`'s member list and hands it to our membership.
async fn pull(state: &State, node: &Node) {
    let req = Request::new(circuit_proto::Path::server(node.id), circuit_proto::ServerOp::Members);
    match ask(state, node, &req).await {
        Ok(circuit_proto::Reply::Members(members)) => {
            info!(peer = %node.id, members = members.len(), "pulled the member list");
            let members = members
                .into_iter()
                .map(crate::elements::server::member_from_wire)
                .collect();
            state.ctx.members.apply(members);
        }
        Ok(_) => {}
        Err(e) => debug!(peer = %node.id, error = %e, "could not pull the member list"),
    }
}
