//! The event bus of one server: a bounded broadcast of [`Event`]s, each
//! stamped with the time and this server's id when emitted.
//!
//! An element reports an event through its [`Ctx`](crate::elements::Ctx)
//! with [`Bus::emit`] (a full path) or [`Bus::emit_below`] (names below
//! this server); a kind's own events are typed, e.g. a watcher's:
//!
//! ```ignore
//! ctx.events.emit(&path, EventKind::Watch(WatchEvent::Resumed { retries: 1 }));
//! ```
//!
//! Emitting never blocks and costs nothing while nobody listens. Each
//! listener ([`Bus::subscribe`]) has its own view of a ring of
//! [`BUS_CAPACITY`] events; one that falls further behind loses the oldest
//! and learns how many (`RecvError::Lagged`), which `events` streams report
//! as a `lost` event.
//!
//! Emitted by this crate: `created`/`scrubbed` by the namespace (every
//! insert and remove of an element, whoever makes it), `spawned`/`exited`
//! for proc elements (`net::proc`), `joined`/`left` from membership
//! (`net::events::announce_members`).

use circuit_proto::{Event, EventKind, Path, ServerId};
use tokio::sync::broadcast;

/// Events a listener may fall behind by before it loses some.
pub const BUS_CAPACITY: usize = 1024;

/// This server's event bus. Cheap to clone: clones share the bus.
#[derive(Clone)]
pub struct Bus {
    id: ServerId,
    tx: broadcast::Sender<Event>,
}

/// Now, RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Bus {
    /// A bus for the server `id`, with no listener yet.
    pub fn new(id: ServerId) -> Bus {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Bus { id, tx }
    }

    /// The server id events are stamped with.
    pub fn server(&self) -> ServerId {
        self.id
    }

    /// Events emitted that some listener has not taken yet.
    pub fn pending(&self) -> usize {
        self.tx.len()
    }

    /// Listeners attached now.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// An event about `path`, stamped now by this server (not emitted).
    pub fn stamp(&self, path: Path, kind: EventKind) -> Event {
        Event {
            time: now(),
            server: self.id,
            path,
            kind,
        }
    }

    /// Reports `kind` about `path` to every listener.
    pub fn emit(&self, path: &Path, kind: EventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(self.stamp(path.clone(), kind));
    }

    /// Reports `kind` about the anchor `names` below this server.
    pub fn emit_below(&self, names: &[String], kind: EventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let path = names
            .iter()
            .try_fold(Path::server(self.id), |p, n| p.child(n))
            .unwrap_or_else(|_| Path::server(self.id));
        let _ = self.tx.send(self.stamp(path, kind));
    }

    /// Events emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stamps_and_reports_lag() {
        let bus = Bus::new(ServerId(5));
        // Nobody listens: nothing is kept.
        bus.emit(&Path::server(ServerId(5)), EventKind::Joined);
        let mut rx = bus.subscribe();
        bus.emit_below(&["a".into(), "b".into()], EventKind::Spawned { pid: 3 });
        let e = rx.recv().await.unwrap();
        assert_eq!(e.path.to_string(), "/X0000000000000005/a/b");
        assert_eq!(e.server, ServerId(5));
        let t = e.time.as_bytes();
        assert!(
            t.len() >= 20 && t[4] == b'-' && t[10] == b'T' && e.time.ends_with('Z'),
            "{}",
            e.time
        );
        for pid in 0..(BUS_CAPACITY as u32 + 10) {
            bus.emit_below(&[], EventKind::Spawned { pid });
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
    }
}
