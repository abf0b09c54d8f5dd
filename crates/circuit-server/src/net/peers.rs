//! Connections to other members, opened on first use and kept while the
//! member lives. Forwarding a request is a byte copy between the caller's
//! stream and a stream to the owner, whatever the request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use circuit_proto::conn::{self, Control, StreamHandle};
use circuit_proto::frame::write_frame;
use circuit_proto::secure::client_handshake;
use circuit_proto::{ErrorKind, Key, Request, Response, ServerId, WireError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::State;
use crate::membership::node::Node;
use crate::membership::swim::{MemberEvent, Membership};

/// How long dialing a member may take before it counts as unreachable.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a join may take before this server asks the seed why not.
const JOIN_WAIT: Duration = Duration::from_secs(2);
/// How often it asks again while it still has not joined.
const JOIN_RETRY: Duration = Duration::from_secs(30);
/// How many neighbours each server holds a connection to (see [`hold_ring`]).
const RING_HOLDS: usize = 2;
/// Pauses before holding a neighbour again after its hold broke.
const HOLD_RETRY_MIN: Duration = Duration::from_secs(1);
const HOLD_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where a broken connection is reported, and what owns the watch on it.
struct Watch {
    members: Arc<Membership>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
}

type Conns = HashMap<ServerId, (u64, Control)>;

/// Open connections to other members.
pub struct Peers {
    key: Option<Key>,
    /// Each with a number, so a connection's watch knows whether it was replaced.
    conns: Arc<Mutex<Conns>>,
    next: std::sync::atomic::AtomicU64,
    watch: OnceLock<Watch>,
}

fn unreachable(node: &Node, why: impl std::fmt::Display) -> WireError {
    WireError::new(
        ErrorKind::NoServer,
        format!("server {} is not reachable ({why}){MAY_HAVE_LEFT}", node.id),
    )
}

/// The end of [`unreachable`]'s message: a guess that does not fit a seed.
const MAY_HAVE_LEFT: &str = "; it may have just left the cluster";

impl Peers {
    /// No connections yet.
    pub fn new(key: Option<Key>) -> Peers {
        Peers {
            key,
            conns: Arc::new(Mutex::new(HashMap::new())),
            next: std::sync::atomic::AtomicU64::new(0),
            watch: OnceLock::new(),
        }
    }

    /// From now on, a connection to a member that breaks is a hint to
    /// `members` that the member may be gone (see [`Membership::hint`]).
    fn watch_with(&self, members: Arc<Membership>, rt: &crate::elements::Runtime) {
        let _ = self.watch.set(Watch {
            members,
            tasks: rt.tasks.clone(),
            shutdown: rt.shutdown.clone(),
        });
    }

    /// Watches a new connection: when it closes while still ours (no one
    /// forgot it), the member is checked at once. A server killed with a
    /// connection open is gone from the cluster in milliseconds, not after
    /// SWIM's probes and suspicion.
    fn watch_conn(&self, id: ServerId, n: u64, ctl: &Control) {
        let Some(w) = self.watch.get() else { return };
        let closed = ctl.closed();
        let (conns, members, shutdown) = (Arc::downgrade(&self.conns), w.members.clone(), w.shutdown.clone());
        w.tasks.spawn(async move {
            tokio::select! {
                _ = closed => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(conns) = conns.upgrade() else { return };
            let ours = {
                let mut conns = conns.lock().unwrap();
                let ours = conns.get(&id).is_some_and(|c| c.0 == n);
                if ours {
                    conns.remove(&id);
                }
                ours
            };
            if ours && members.get(id).is_some() {
                info!(peer = %id, "connection to member broke: checking it");
                members.hint(id);
            }
        });
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
        let existing = self.conns.lock().unwrap().get(&node.id).map(|c| c.1.clone());
        if let Some(mut ctl) = existing {
            if let Ok(s) = ctl.open_stream().await {
                return Ok(s);
            }
            self.forget(node.id);
        }
        let dialed = self.dial(node).await?;
        // Another open may have dialed meanwhile: keep one connection per
        // member, the one pooled (and watched), and let ours close. Checked
        // and pooled under one lock, so two opens never keep both.
        let (mut ctl, fresh) = {
            let mut conns = self.conns.lock().unwrap();
            match conns.get(&node.id) {
                Some((_, live)) if !live.is_closed() => (live.clone(), None),
                _ => {
                    let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    conns.insert(node.id, (n, dialed.clone()));
                    (dialed, Some(n))
                }
            }
        };
        if let Some(n) = fresh {
            self.watch_conn(node.id, n, &ctl);
        }
        let s = ctl.open_stream().await.map_err(|e| unreachable(node, e))?;
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
///
/// Also pulls the list of a member whose view has disagreed with ours for a
/// while (membership asks: every datagram carries its sender's view digest);
/// if that member does not list this server, it is announced to (the
/// exchange goes both ways, like memberlist's push/pull, but only when the
/// views differ: an idle cluster that agrees exchanges nothing). And a
/// pooled connection that breaks is a hint to membership.
pub fn forget_the_departed(state: Arc<State>) {
    state.peers.watch_with(state.ctx.members.clone(), &state.ctx.rt);
    let mut events = state.ctx.members.subscribe();
    let (rt, tracker) = (state.ctx.rt.clone(), state.ctx.rt.tasks.clone());
    let mut pulls = state.ctx.members.take_pulls();
    tracker.spawn(async move {
        let spawn_pull = |node: Node| {
            let state = state.clone();
            rt.tasks.spawn(async move {
                let _ = pull(&state, &node).await;
            });
        };
        let mut pulled = false;
        loop {
            let next = tokio::select! {
                e = events.recv() => e,
                Some(node) = async { pulls.as_mut()?.recv().await } => {
                    spawn_pull(node);
                    continue;
                }
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
                        spawn_pull(node);
                    }
                }
                Ok(MemberEvent::Joined(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
}

/// The members that follow `me` in id order, wrapping around: at most
/// [`RING_HOLDS`] of them.
fn ring_after(me: ServerId, mut ids: Vec<ServerId>) -> Vec<ServerId> {
    ids.retain(|id| *id != me);
    ids.sort();
    let at = ids.partition_point(|id| *id < me);
    ids.rotate_left(at);
    ids.truncate(RING_HOLDS);
    ids
}

/// Holds a connection to each of this server's next [`RING_HOLDS`]
/// members in id order (so every member is held by as many others), each
/// with one [`ServerOp::Hold`](circuit_proto::ServerOp::Hold) stream open.
///
/// A held connection is never idle, so it stays; and when a member's
/// process is killed on a live host, its kernel closes the connection at
/// once: the pooled connection's watch hints membership, which finds
/// nothing listening there and declares it down in milliseconds. Without
/// it, such a death waits for the member's turn in SWIM's probe order,
/// which with two others can come three probe periods (2.4 s) apart.
/// Idle, a hold costs nothing: no byte crosses it (TCP keepalive aside,
/// which the kernel answers).
pub fn hold_ring(state: Arc<State>) {
    let mut events = state.ctx.members.subscribe();
    let tracker = state.ctx.rt.tasks.clone();
    tracker.spawn(async move {
        let me = state.ctx.id;
        let mut held: HashMap<ServerId, tokio::task::AbortHandle> = HashMap::new();
        loop {
            let want = ring_after(me, state.ctx.members.members().iter().map(|n| n.id).collect());
            // A hold that gave up (its member renewed, or refused) is tried
            // again at the next change of membership, if still wanted.
            held.retain(|id, task| {
                let keep = want.contains(id) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for id in want {
                if held.contains_key(&id) {
                    continue;
                }
                let Some(node) = state.ctx.members.get(id) else {
                    continue;
                };
                let task = state.ctx.rt.tasks.spawn(hold(state.clone(), node));
                held.insert(id, task.abort_handle());
            }
            tokio::select! {
                e = events.recv() => match e {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                _ = state.ctx.rt.shutdown.cancelled() => break,
            }
        }
        for task in held.values() {
            task.abort();
        }
    });
}

/// Holds one [`ServerOp::Hold`](circuit_proto::ServerOp::Hold) stream to
/// `node` while it is a member, dialing again (after a growing pause) when
/// the connection breaks. A member that answers (one of a version without
/// holds refuses the request) is left alone.
async fn hold(state: Arc<State>, node: Node) {
    let req = Request::new(circuit_proto::Path::server(node.id), circuit_proto::ServerOp::Hold);
    let mut pause = HOLD_RETRY_MIN;
    loop {
        let opened = match state.peers.open(&node).await {
            Ok(mut s) => match write_frame(&mut s, &req).await {
                Ok(()) => Some(s),
                Err(_) => None,
            },
            Err(_) => None,
        };
        if let Some(mut s) = opened {
            debug!(peer = %node.id, "holding a connection to a neighbour");
            let began = std::time::Instant::now();
            // Nothing comes but the end (the acknowledgement is an empty
            // frame), unless the member refuses the request.
            if matches!(s.read(&mut [0u8; 256]).await, Ok(n) if n > 0) {
                debug!(peer = %node.id, "the neighbour refused the hold (an older version?): not holding it");
                return;
            }
            debug!(peer = %node.id, "the hold of a neighbour ended");
            if began.elapsed() > HOLD_RETRY_MAX {
                pause = HOLD_RETRY_MIN;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = state.ctx.rt.shutdown.cancelled() => return,
        }
        if state.ctx.members.get(node.id) != Some(node) {
            return;
        }
        pause = (pause * 2).min(HOLD_RETRY_MAX);
    }
}

/// Sends `req` on to the member that owns its path and relays everything
/// that follows, both ways. `None` once relayed; an error if the owner
/// could not be reached.
///
/// If the owner leaves the cluster (declared down) before the exchange
/// ends, the caller's stream is cut at once: it gets "lost server X before
/// it answered" (or its output cut short) instead of waiting on a paused or
/// cut-off server's connection, which TCP keeps open for minutes (forever
/// for a paused process, whose kernel still acknowledges).
pub async fn forward(state: &State, node: &Node, req: Request, client: &mut StreamHandle) -> Option<Response> {
    let mut members = state.ctx.members.subscribe();
    let owner_left = async {
        loop {
            if state.ctx.members.get(node.id).is_none() {
                return;
            }
            match members.recv().await {
                Ok(MemberEvent::Left(id)) if id == node.id => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                // Joins, others' leaves, and a lag (the check above runs again).
                _ => {}
            }
        }
    };
    let exchange = async {
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
    };
    tokio::select! {
        r = exchange => r,
        _ = owner_left => {
            info!(op = req.verb(), path = %req.path(), peer = %node.id, "owner left the cluster before the end: cut");
            None
        }
    }
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

/// Until this server has joined a cluster, says why not: `JOIN_WAIT` after
/// start, then every `JOIN_RETRY`, the member list is pulled from `seed` (the
/// server of `-j URL`) over a connection. A join is otherwise all datagrams,
/// which a seed that cannot open them (another key, another version) or a
/// host that drops them ignores in silence; the connection names the cause
/// ("requires a cluster key", "connection refused"), and when it succeeds
/// the pull joins on its own.
pub fn watch_join(state: Arc<State>, seed: Node) {
    let tracker = state.ctx.rt.tasks.clone();
    tracker.spawn(async move {
        let (started, mut wait) = (std::time::Instant::now(), JOIN_WAIT);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = state.ctx.rt.shutdown.cancelled() => return,
            }
            if state.ctx.members.len() > 1 {
                return;
            }
            if let Err(e) = pull(&state, &seed).await {
                warn!(
                    peer = %seed.id,
                    addr = %seed.addr,
                    "not joined the cluster of {} after {} s: {}; trying again every {} s",
                    seed.id,
                    started.elapsed().as_secs(),
                    e.message.trim_end_matches(MAY_HAVE_LEFT),
                    JOIN_RETRY.as_secs()
                );
            }
            wait = JOIN_RETRY;
        }
    });
}

/// Fetches `node`'s member list and hands it to our membership; if `node`
/// does not list this server, announces this server to it.
async fn pull(state: &State, node: &Node) -> Result<(), WireError> {
    let req = Request::new(circuit_proto::Path::server(node.id), circuit_proto::ServerOp::Members);
    match ask(state, node, &req).await {
        Ok(circuit_proto::Reply::Members(members)) => {
            let members: Vec<_> = members
                .into_iter()
                .map(crate::elements::server::member_from_wire)
                .collect();
            let me = state.ctx.members.me().id;
            let knows_us = members
                .iter()
                .any(|m: &foca::Member<Node>| m.id().id == me && m.state() != foca::State::Down);
            // Routine after a join or a disagreement: worth a line only
            // when the peer did not know this server.
            if knows_us {
                debug!(peer = %node.id, members = members.len(), "pulled the member list");
            } else {
                info!(peer = %node.id, members = members.len(), "pulled the member list; the peer does not list this server: announcing");
            }
            state.ctx.members.apply(members);
            if !knows_us {
                state.ctx.members.announce(*node);
            }
        }
        Ok(_) => {}
        Err(e) => {
            debug!(peer = %node.id, error = %e, "could not pull the member list");
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_the_next_members_in_id_order_wrapping_around() {
        let ids = |v: &[u64]| v.iter().map(|&i| ServerId(i)).collect::<Vec<_>>();
        assert_eq!(ring_after(ServerId(5), ids(&[9, 1, 7, 3])), ids(&[7, 9]));
        assert_eq!(ring_after(ServerId(8), ids(&[9, 1, 7, 3])), ids(&[9, 1]));
        assert_eq!(ring_after(ServerId(9), ids(&[9, 1, 7, 3])), ids(&[1, 3]));
        assert_eq!(ring_after(ServerId(5), ids(&[3])), ids(&[3]));
        assert_eq!(ring_after(ServerId(5), ids(&[5])), ids(&[]));
        // Every member is held by as many others as it holds.
        let all: Vec<u64> = (0..10).map(|i| i * 7919 % 101).collect();
        let mut held = HashMap::<ServerId, usize>::new();
        for &me in &all {
            for id in ring_after(ServerId(me), ids(&all)) {
                *held.entry(id).or_default() += 1;
            }
        }
        assert!(
            held.len() == all.len() && held.values().all(|&n| n == RING_HOLDS),
            "{held:?}"
        );
    }
}
