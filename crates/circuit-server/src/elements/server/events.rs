//! `events` streams ([`AnchorOp::Events`]): this server's events for a path
//! below it, or, at `/`, the events of the whole cluster merged by the
//! server the client dialed.
//!
//! After `Done`, the server writes one frame per [`Event`] until the client
//! goes away. Nothing here ever waits on a slow reader at the expense of the
//! rest of the server: the bus is a bounded broadcast (a listener that falls
//! behind loses the oldest events), events from other members go through a
//! bounded queue (full: dropped), and every loss is reported in the stream
//! as a `lost` event with its count.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::frame::{read_frame, write_frame};
use circuit_proto::{AnchorOp, Event, EventKind, Path, Reply, Request, Response, ServerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::State;
use crate::elements::Ctx;
use crate::membership::node::Node;
use crate::membership::swim::MemberEvent;

/// Events from other members a merging server holds for its reader.
pub const MERGE_CAPACITY: usize = 1024;

/// How often a merging server reports losses that no later event carried,
/// and reopens feeds from members whose stream broke while they stayed.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reports joins and leaves on the bus, as events about `/X…` of the
/// server that joined or left. Runs on the server's tracker until it stops
/// (the membership it listens to lives as long as the server, so waiting
/// on it alone would never end).
pub fn announce_members(ctx: Ctx) {
    let mut members = ctx.members.subscribe();
    let rt = ctx.rt.clone();
    rt.tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                m = members.recv() => m,
                _ = ctx.rt.shutdown.cancelled() => return,
            };
            match next {
                Ok(MemberEvent::Joined(id)) => ctx.events.emit(&Path::server(id), EventKind::Joined),
                Ok(MemberEvent::Left(id)) => ctx.events.emit(&Path::server(id), EventKind::Left),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    ctx.events.emit(&Path::server(ctx.id), EventKind::Lost { count: n })
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Resolves once the client has gone (it sends nothing on this stream).
async fn gone(rd: &mut (impl AsyncRead + Unpin)) {
    let mut byte = [0u8; 1];
    let _ = rd.read(&mut byte).await;
}

/// The events of this server about `path` and below.
pub async fn local(ctx: &Ctx, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    let mut bus = ctx.events.subscribe();
    conn::respond(stream, &Ok(Reply::Done)).await.ok()?;
    info!(op = "events", %path, "listener attached");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let why = tokio::select! {
        why = pump_bus(ctx, path, &mut bus, &mut wr) => why,
        _ = gone(&mut rd) => "client left",
    };
    info!(op = "events", %path, why, "listener detached");
    None
}

/// Copies the bus's events under `path` to `wr`, reporting lags.
async fn pump_bus(
    ctx: &Ctx,
    path: &Path,
    bus: &mut broadcast::Receiver<Event>,
    wr: &mut (impl AsyncWrite + Unpin),
) -> &'static str {
    loop {
        let ev = match bus.recv().await {
            Ok(ev) if ev.is_under(path) => ev,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => ctx.events.stamp(path.clone(), EventKind::Lost { count: n }),
            Err(broadcast::error::RecvError::Closed) => return "server stopping",
        };
        if write_frame(wr, &ev).await.is_err() {
            return "client left";
        }
    }
}

/// Readers of other members' event streams; aborted when dropped.
struct Feeds(HashMap<ServerId, JoinHandle<()>>);

impl Drop for Feeds {
    fn drop(&mut self) {
        for (_, t) in self.0.drain() {
            t.abort();
        }
    }
}

impl Feeds {
    fn add(&mut self, state: &Arc<State>, node: Node, tx: &mpsc::Sender<Event>, lost: &Arc<AtomicU64>) {
        if node.id == state.ctx.id || self.0.get(&node.id).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let task = tokio::spawn(feed(state.clone(), node, tx.clone(), lost.clone()));
        self.0.insert(node.id, task);
    }

    fn drop_member(&mut self, id: ServerId) {
        if let Some(t) = self.0.remove(&id) {
            t.abort();
        }
    }
}

/// Reads the events of member `node` (its whole subtree) into `tx`;
/// counts in `lost` those the queue has no room for.
async fn feed(state: Arc<State>, node: Node, tx: mpsc::Sender<Event>, lost: Arc<AtomicU64>) {
    let mut up = match state.peers.open(&node).await {
        Ok(s) => s,
        Err(e) => {
            debug!(peer = %node.id, error = %e, "no event feed");
            return;
        }
    };
    let req = Request::new(Path::server(node.id), AnchorOp::Events);
    if write_frame(&mut up, &req).await.is_err() {
        return;
    }
    match read_frame::<Response, _>(&mut up).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            debug!(peer = %node.id, error = %e, "event feed refused");
            return;
        }
        Err(_) => return,
    }
    debug!(peer = %node.id, "event feed open");
    while let Ok(ev) = read_frame::<Event, _>(&mut up).await {
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
    debug!(peer = %node.id, "event feed ended");
}

/// The events of the whole cluster: this server's, and those of every
/// member, followed as members join and leave.
pub async fn cluster(state: &Arc<State>, stream: &mut StreamHandle) -> Option<Response> {
    let root = Path::root();
    let mut bus = state.ctx.events.subscribe();
    let mut members = state.ctx.members.subscribe();
    let (tx, mut rx) = mpsc::channel(MERGE_CAPACITY);
    let lost = Arc::new(AtomicU64::new(0));
    let mut feeds = Feeds(HashMap::new());
    for node in state.ctx.members.members() {
        feeds.add(state, node, &tx, &lost);
    }
    conn::respond(stream, &Ok(Reply::Done)).await.ok()?;
    info!(
        op = "events",
        path = "/",
        members = feeds.0.len(),
        "cluster listener attached"
    );
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let ev = tokio::select! {
            r = bus.recv() => match r {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => state.ctx.events.stamp(root.clone(), EventKind::Lost { count: n }),
                Err(broadcast::error::RecvError::Closed) => break "server stopping",
            },
            Some(ev) = rx.recv() => ev,
            m = members.recv() => {
                match m {
                    Ok(MemberEvent::Joined(id)) => {
                        if let Some(node) = state.ctx.members.get(id) {
                            feeds.add(state, node, &tx, &lost);
                        }
                    }
                    Ok(MemberEvent::Left(id)) => feeds.drop_member(id),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for node in state.ctx.members.members() {
                            feeds.add(state, node, &tx, &lost);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break "server stopping",
                }
                continue;
            },
            _ = check.tick() => {
                for node in state.ctx.members.members() {
                    feeds.add(state, node, &tx, &lost);
                }
                match lost.swap(0, Ordering::Relaxed) {
                    0 => continue,
                    n => state.ctx.events.stamp(root.clone(), EventKind::Lost { count: n }),
                }
            },
            _ = gone(&mut rd) => break "client left",
        };
        if write_frame(&mut wr, &ev).await.is_err() {
            break "client left";
        }
        let n = lost.swap(0, Ordering::Relaxed);
        if n > 0 {
            let ev = state.ctx.events.stamp(root.clone(), EventKind::Lost { count: n });
            if write_frame(&mut wr, &ev).await.is_err() {
                break "client left";
            }
        }
    };
    info!(op = "events", path = "/", why, "cluster listener detached");
    None
}
