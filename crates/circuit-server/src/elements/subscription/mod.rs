//! The membership subscription elements, `@join` and `@leave`.
//!
//! The policy is [`Queue`]: plain data and functions, no I/O, no time. It
//! holds the pending events, the receivers waiting for one and the counts,
//! and answers every call with the [`Effect`]s the caller must carry out.
//! [`Subscription`] is the async shell around it: one lock around the
//! queue, oneshot channels to wake receivers, and a task that reads this
//! server's membership events (a `tokio::sync::broadcast` receiver) into it.
//!
//! Semantics:
//! - An event is the id of a server that joined (`@join`) or left (`@leave`)
//!   the cluster, as this server learned it, in that order. A subscription
//!   sees the events from its creation on: members already in the cluster
//!   when it was made are not replayed (`ls /` lists them).
//! - Each event goes to exactly one receiver: the longest-waiting one, or,
//!   when none waits, the next `recv`. Several receivers each get distinct
//!   events, in order of their turns.
//! - The buffer holds [`BUFFER`] events. One more pushes the oldest out and
//!   counts it as dropped; so do events the server itself fell behind on (a
//!   lagging broadcast receiver), all of which count, since they cannot be
//!   told apart by kind once skipped.
//! - A receiver that goes away while waiting takes nothing; one that took an
//!   event but could not hand it on gives it back to the head of the queue.
//! - `scrub`: waiting receivers fail with "subscription scrubbed", pending
//!   events are dropped, the reading task stops, later calls fail the same
//!   way. When the membership task ends (the server is stopping) the
//!   subscription closes: pending events can still be received, then
//!   `recv` fails with "subscription closed".

pub(crate) mod ops;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use circuit_proto::{Path, ServerId, SubscriptionSource, SubscriptionStat};
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::membership::swim::MemberEvent;

/// Events a subscription keeps for its receivers; older ones are dropped.
pub const BUFFER: usize = 1024;

/// Why a subscription operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubError {
    /// The element was scrubbed.
    #[error("subscription scrubbed")]
    Scrubbed,
    /// No event is left and none will come: the server is stopping.
    #[error("subscription closed: no more events will come (the server is stopping)")]
    Closed,
}

/// Identifies a waiting receiver inside one subscription.
pub type Ticket = u64;

/// What the caller of [`Queue`] must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<W> {
    /// Wake this receiver with this event.
    Deliver(W, ServerId),
    /// Wake this receiver with an error.
    Fail(W, SubError),
}

/// The effects of one call on a [`Queue`].
pub type Effects<W> = Vec<Effect<W>>;

/// What became of a membership event offered to a [`Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Not of this subscription's kind, or the subscription is closed.
    Ignored,
    /// Handed to a waiting receiver.
    Delivered,
    /// Queued for the next receiver.
    Queued,
    /// Queued; the buffer was full, so the oldest event (this one) went.
    QueuedDropping(ServerId),
}

/// A subscription's policy, with receiver wake-ups `W`. Invariant:
/// receivers wait only while no event is pending.
pub struct Queue<W> {
    source: SubscriptionSource,
    cap: usize,
    events: VecDeque<ServerId>,
    waiters: VecDeque<(Ticket, W)>,
    dropped: u64,
    closed: bool,
    scrubbed: bool,
    next: Ticket,
}

impl<W> Queue<W> {
    /// An open subscription to `source` keeping up to `cap` (≥ 1) events.
    pub fn new(source: SubscriptionSource, cap: usize) -> Self {
        Queue {
            source,
            cap: cap.max(1),
            events: VecDeque::new(),
            waiters: VecDeque::new(),
            dropped: 0,
            closed: false,
            scrubbed: false,
            next: 0,
        }
    }

    /// Which events it delivers.
    pub fn source(&self) -> SubscriptionSource {
        self.source
    }

    /// A membership event happened: keep it if it is of our kind.
    pub fn offer(&mut self, ev: MemberEvent, fx: &mut Effects<W>) -> Offered {
        let id = match (self.source, ev) {
            (SubscriptionSource::Join, MemberEvent::Joined(id))
            | (SubscriptionSource::Leave, MemberEvent::Left(id)) => id,
            _ => return Offered::Ignored,
        };
        if self.closed {
            return Offered::Ignored;
        }
        if let Some((_, w)) = self.waiters.pop_front() {
            fx.push(Effect::Deliver(w, id));
            return Offered::Delivered;
        }
        self.events.push_back(id);
        if self.events.len() > self.cap {
            let oldest = self.events.pop_front().expect("over capacity");
            self.dropped += 1;
            return Offered::QueuedDropping(oldest);
        }
        Offered::Queued
    }

    /// The reader fell `n` membership events behind: they are lost.
    pub fn lagged(&mut self, n: u64) {
        if !self.closed {
            self.dropped += n;
        }
    }

    /// A receiver asks for an event; `waiter` gets one (now, through `fx`,
    /// or later) or an error. Returns its ticket.
    pub fn recv(&mut self, waiter: W, fx: &mut Effects<W>) -> Result<Ticket, SubError> {
        if self.scrubbed {
            return Err(SubError::Scrubbed);
        }
        self.next += 1;
        let ticket = self.next;
        if let Some(id) = self.events.pop_front() {
            fx.push(Effect::Deliver(waiter, id));
        } else if self.closed {
            return Err(SubError::Closed);
        } else {
            self.waiters.push_back((ticket, waiter));
        }
        Ok(ticket)
    }

    /// A waiting receiver gives up. False if it had been served already.
    pub fn cancel_recv(&mut self, ticket: Ticket) -> bool {
        match self.waiters.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// A receiver gives back an event it took but did not hand on: it goes
    /// to the first waiting receiver, else to the head of the queue (even
    /// when that is full). Dropped if the subscription was scrubbed.
    pub fn requeue(&mut self, id: ServerId, fx: &mut Effects<W>) {
        if self.scrubbed {
            return;
        }
        match self.waiters.pop_front() {
            Some((_, w)) => fx.push(Effect::Deliver(w, id)),
            None => self.events.push_front(id),
        }
    }

    /// The source ended: no more events come. Waiting receivers (there are
    /// some only when nothing is pending) fail; pending events stay.
    pub fn end(&mut self, fx: &mut Effects<W>) {
        self.closed = true;
        for (_, w) in self.waiters.drain(..) {
            fx.push(Effect::Fail(w, SubError::Closed));
        }
    }

    /// Scrubs the subscription: every waiter fails, pending events go.
    pub fn scrub(&mut self, fx: &mut Effects<W>) {
        self.closed = true;
        self.scrubbed = true;
        self.events.clear();
        for (_, w) in self.waiters.drain(..) {
            fx.push(Effect::Fail(w, SubError::Scrubbed));
        }
    }

    /// Receivers waiting now.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The subscription's status.
    pub fn stat(&self) -> SubscriptionStat {
        SubscriptionStat {
            source: self.source,
            pending: self.events.len() as u64,
            dropped: self.dropped,
            closed: self.closed,
        }
    }
}

// ---------------------------------------------------------------------------
// The async shell.

type Waker = oneshot::Sender<Result<ServerId, SubError>>;
type SubQueue = Queue<Waker>;
type SubEffects = Effects<Waker>;

/// A subscription element. Share it as `Arc<Subscription>`.
pub struct Subscription {
    path: Path,
    source: SubscriptionSource,
    queue: Mutex<SubQueue>,
    /// The task reading membership events; stopped by scrub or drop.
    reader: Mutex<Option<AbortHandle>>,
}

/// Carries out effects. Runs under the queue's lock, so a receiver that
/// gives up (which takes the lock) sees either its ticket still queued or
/// its event already delivered.
fn run(q: &mut SubQueue, fx: SubEffects) {
    let mut todo: VecDeque<_> = fx.into();
    while let Some(e) = todo.pop_front() {
        match e {
            Effect::Deliver(w, id) => {
                if let Err(Ok(id)) = w.send(Ok(id)) {
                    let mut more = Vec::new();
                    q.requeue(id, &mut more);
                    todo.extend(more);
                }
            }
            Effect::Fail(w, e) => {
                let _ = w.send(Err(e));
            }
        }
    }
}

impl Subscription {
    /// A subscription at `path` to the `source` events that `events`
    /// brings from now on, keeping up to [`BUFFER`] of them. Spawns its
    /// reading task, so it must run inside a tokio runtime.
    pub fn start(
        path: Path,
        source: SubscriptionSource,
        events: broadcast::Receiver<MemberEvent>,
    ) -> Arc<Subscription> {
        Subscription::with_capacity(path, source, BUFFER, events)
    }

    /// Like [`Subscription::start`], keeping up to `cap` events.
    pub fn with_capacity(
        path: Path,
        source: SubscriptionSource,
        cap: usize,
        events: broadcast::Receiver<MemberEvent>,
    ) -> Arc<Subscription> {
        let sub = Arc::new(Subscription {
            path,
            source,
            queue: Mutex::new(Queue::new(source, cap)),
            reader: Mutex::new(None),
        });
        let task = tokio::spawn(read(Arc::downgrade(&sub), events));
        *sub.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        sub
    }

    fn lock(&self) -> MutexGuard<'_, SubQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the queue and carries out its effects.
    fn with<T>(&self, f: impl FnOnce(&mut SubQueue, &mut SubEffects) -> T) -> T {
        let mut q = self.lock();
        let mut fx = Vec::new();
        let out = f(&mut q, &mut fx);
        run(&mut q, fx);
        out
    }

    /// Which events it delivers.
    pub fn source(&self) -> SubscriptionSource {
        self.source
    }

    /// The kind `ls -l` shows: `@join` or `@leave`.
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }

    /// The subscription's status.
    pub fn stat(&self) -> SubscriptionStat {
        self.lock().stat()
    }

    /// Takes the next event, waiting for one if none is pending. Call
    /// [`Taken::delivered`] once it is handed on; dropped before that, the
    /// event goes back to the head of the queue. Dropping the future while
    /// it waits takes nothing.
    pub async fn recv(self: &Arc<Self>) -> Result<Taken, SubError> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.with(|q, fx| q.recv(tx, fx))?;
        let mut wait = Wait {
            sub: self,
            ticket,
            rx: Some(rx),
        };
        let got = wait.rx.as_mut().expect("armed").await;
        wait.rx = None;
        match got {
            Ok(Ok(id)) => Ok(Taken {
                sub: self.clone(),
                event: Some(id),
            }),
            Ok(Err(e)) => Err(e),
            // Wakers are only dropped unsent when the queue is dropped.
            Err(_) => Err(SubError::Scrubbed),
        }
    }

    /// Scrubs it: receivers fail, pending events go, the reading task stops.
    pub fn scrub(&self) {
        if let Some(task) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        let woken = self.with(|q, fx| {
            let n = q.waiting();
            q.scrub(fx);
            n
        });
        info!(op = "scrub", path = %self.path, kind = self.kind(), woken, "subscription scrubbed");
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(task) = self.reader.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Reads membership events into the subscription while it exists.
async fn read(sub: Weak<Subscription>, mut events: broadcast::Receiver<MemberEvent>) {
    loop {
        let got = events.recv().await;
        let Some(sub) = sub.upgrade() else { return };
        match got {
            Ok(ev) => match sub.with(|q, fx| q.offer(ev, fx)) {
                Offered::Ignored => {}
                Offered::Delivered => debug!(path = %sub.path, ?ev, "event handed to a waiting receiver"),
                Offered::Queued => debug!(path = %sub.path, ?ev, "event queued"),
                Offered::QueuedDropping(oldest) => {
                    debug!(path = %sub.path, ?ev, dropped = %oldest, "event queued; buffer full, oldest dropped")
                }
            },
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(path = %sub.path, lost = n, "fell behind the membership events; counted as dropped");
                sub.with(|q, _| q.lagged(n));
            }
            Err(broadcast::error::RecvError::Closed) => {
                info!(path = %sub.path, "membership ended; subscription closed");
                sub.with(|q, fx| q.end(fx));
                return;
            }
        }
    }
}

/// A receiver's place in line; gives it up (or gives back an event it was
/// just handed) when dropped before its event was taken.
struct Wait<'a> {
    sub: &'a Subscription,
    ticket: Ticket,
    rx: Option<oneshot::Receiver<Result<ServerId, SubError>>>,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let ticket = self.ticket;
        self.sub.with(|q, fx| {
            if !q.cancel_recv(ticket)
                && let Ok(Ok(id)) = rx.try_recv()
            {
                q.requeue(id, fx);
            }
        });
    }
}

/// An event taken by a receiver. Hand it on, then call
/// [`Taken::delivered`]; dropped before that, it goes back to the head of
/// the queue.
pub struct Taken {
    sub: Arc<Subscription>,
    event: Option<ServerId>,
}

impl Taken {
    /// The server that joined or left.
    pub fn server(&self) -> ServerId {
        self.event.expect("held until delivered")
    }

    /// The event reached its receiver.
    pub fn delivered(mut self) {
        self.event = None;
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(id) = self.event.take() {
            self.sub.with(|q, fx| q.requeue(id, fx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    type Q = Queue<u32>;
    type Fx = Effects<u32>;

    fn x(n: u64) -> ServerId {
        ServerId(n)
    }

    fn stat(pending: u64, dropped: u64, closed: bool) -> SubscriptionStat {
        SubscriptionStat {
            source: SubscriptionSource::Join,
            pending,
            dropped,
            closed,
        }
    }

    #[test]
    fn keeps_only_its_kind_in_order() {
        let mut q = Q::new(SubscriptionSource::Join, 8);
        let mut fx = Fx::new();
        assert_eq!(q.offer(MemberEvent::Joined(x(1)), &mut fx), Offered::Queued);
        assert_eq!(q.offer(MemberEvent::Left(x(1)), &mut fx), Offered::Ignored);
        assert_eq!(q.offer(MemberEvent::Joined(x(2)), &mut fx), Offered::Queued);
        assert!(fx.is_empty());
        assert_eq!(q.stat(), stat(2, 0, false));
        q.recv(10, &mut fx).unwrap();
        q.recv(11, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, x(1)), Effect::Deliver(11, x(2))]);

        let mut q = Q::new(SubscriptionSource::Leave, 8);
        let mut fx = Fx::new();
        assert_eq!(q.offer(MemberEvent::Joined(x(1)), &mut fx), Offered::Ignored);
        assert_eq!(q.offer(MemberEvent::Left(x(1)), &mut fx), Offered::Queued);
        q.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, x(1))]);
        assert_eq!(q.stat().source, SubscriptionSource::Leave);
    }

    #[test]
    fn waiting_receivers_get_distinct_events_in_turn() {
        let mut q = Q::new(SubscriptionSource::Join, 8);
        let mut fx = Fx::new();
        q.recv(10, &mut fx).unwrap();
        q.recv(11, &mut fx).unwrap();
        assert!(fx.is_empty(), "both wait");
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.offer(MemberEvent::Joined(x(1)), &mut fx), Offered::Delivered);
        assert_eq!(q.offer(MemberEvent::Joined(x(2)), &mut fx), Offered::Delivered);
        assert_eq!(q.offer(MemberEvent::Joined(x(3)), &mut fx), Offered::Queued);
        assert_eq!(fx, [Effect::Deliver(10, x(1)), Effect::Deliver(11, x(2))]);
        assert_eq!(q.stat(), stat(1, 0, false));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_lag() {
        let mut q = Q::new(SubscriptionSource::Join, 3);
        let mut fx = Fx::new();
        for i in 1..=3 {
            assert_eq!(q.offer(MemberEvent::Joined(x(i)), &mut fx), Offered::Queued);
        }
        assert_eq!(
            q.offer(MemberEvent::Joined(x(4)), &mut fx),
            Offered::QueuedDropping(x(1))
        );
        assert_eq!(
            q.offer(MemberEvent::Joined(x(5)), &mut fx),
            Offered::QueuedDropping(x(2))
        );
        assert_eq!(q.stat(), stat(3, 2, false));
        q.lagged(4);
        assert_eq!(q.stat(), stat(3, 6, false));
        for w in 0..3 {
            q.recv(w, &mut fx).unwrap();
        }
        assert_eq!(
            fx,
            [
                Effect::Deliver(0, x(3)),
                Effect::Deliver(1, x(4)),
                Effect::Deliver(2, x(5))
            ]
        );
        assert_eq!(q.stat(), stat(0, 6, false));
    }

    #[test]
    fn cancel_and_requeue() {
        let mut q = Q::new(SubscriptionSource::Join, 2);
        let mut fx = Fx::new();
        let t = q.recv(10, &mut fx).unwrap();
        assert!(q.cancel_recv(t));
        assert!(!q.cancel_recv(t));
        q.offer(MemberEvent::Joined(x(1)), &mut fx);
        q.offer(MemberEvent::Joined(x(2)), &mut fx);
        assert!(fx.is_empty(), "the cancelled receiver gets nothing");
        // Taken, then given back: first again.
        q.recv(11, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(11, x(1))]);
        fx.clear();
        q.requeue(x(1), &mut fx);
        assert_eq!(q.stat(), stat(2, 0, false));
        q.recv(12, &mut fx).unwrap();
        q.recv(13, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(12, x(1)), Effect::Deliver(13, x(2))]);
        fx.clear();
        // Given back while someone waits: straight to them.
        q.recv(14, &mut fx).unwrap();
        q.requeue(x(2), &mut fx);
        assert_eq!(fx, [Effect::Deliver(14, x(2))]);
    }

    #[test]
    fn scrub_fails_waiters_and_everything_after() {
        let mut q = Q::new(SubscriptionSource::Join, 4);
        let mut fx = Fx::new();
        q.recv(10, &mut fx).unwrap();
        q.recv(11, &mut fx).unwrap();
        q.scrub(&mut fx);
        assert_eq!(
            fx,
            [
                Effect::Fail(10, SubError::Scrubbed),
                Effect::Fail(11, SubError::Scrubbed)
            ]
        );
        fx.clear();
        assert_eq!(q.recv(12, &mut fx), Err(SubError::Scrubbed));
        assert_eq!(q.offer(MemberEvent::Joined(x(1)), &mut fx), Offered::Ignored);
        q.requeue(x(2), &mut fx);
        q.lagged(3);
        assert!(fx.is_empty());
        assert_eq!(q.stat(), stat(0, 0, true));

        // Pending events go with it.
        let mut q = Q::new(SubscriptionSource::Join, 4);
        q.offer(MemberEvent::Joined(x(1)), &mut fx);
        q.scrub(&mut fx);
        assert_eq!(q.stat(), stat(0, 0, true));
        assert_eq!(q.recv(1, &mut fx), Err(SubError::Scrubbed));
    }

    #[test]
    fn end_lets_receivers_drain_then_fails() {
        let mut q = Q::new(SubscriptionSource::Join, 4);
        let mut fx = Fx::new();
        q.offer(MemberEvent::Joined(x(1)), &mut fx);
        q.end(&mut fx);
        assert!(fx.is_empty());
        assert_eq!(q.offer(MemberEvent::Joined(x(2)), &mut fx), Offered::Ignored);
        assert_eq!(q.stat(), stat(1, 0, true));
        q.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, x(1))]);
        assert_eq!(q.recv(11, &mut fx), Err(SubError::Closed));

        let mut q = Q::new(SubscriptionSource::Join, 4);
        let mut fx = Fx::new();
        q.recv(10, &mut fx).unwrap();
        q.end(&mut fx);
        assert_eq!(fx, [Effect::Fail(10, SubError::Closed)]);
    }

    #[test]
    fn stat_json_key_order() {
        let q = Q::new(SubscriptionSource::Join, 4);
        assert_eq!(
            serde_json::to_string(&q.stat()).unwrap(),
            r#"{"Source":"join","Pending":0,"Dropped":0,"Closed":false}"#
        );
    }

    // The shell, driven through a broadcast channel: no sockets, no sleeps.

    fn path() -> Path {
        "/X0000000000000001/sub".parse().unwrap()
    }

    /// Lets the reading task run until it has nothing left to read.
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn shell_delivers_in_order_and_requeues_what_was_not_handed_on() {
        let (tx, rx) = broadcast::channel(16);
        let sub = Subscription::start(path(), SubscriptionSource::Join, rx);
        assert_eq!(sub.kind(), "@join");
        tx.send(MemberEvent::Joined(x(1))).unwrap();
        tx.send(MemberEvent::Left(x(9))).unwrap();
        tx.send(MemberEvent::Joined(x(2))).unwrap();
        settle().await;
        assert_eq!(sub.stat().pending, 2);
        let first = sub.recv().await.unwrap();
        assert_eq!(first.server(), x(1));
        drop(first);
        assert_eq!(sub.stat().pending, 2, "given back");
        let first = sub.recv().await.unwrap();
        assert_eq!(first.server(), x(1));
        first.delivered();
        let second = sub.recv().await.unwrap();
        assert_eq!(second.server(), x(2));
        second.delivered();
        assert_eq!(sub.stat(), stat(0, 0, false));

        // A receiver that gives up while waiting takes nothing.
        assert!(sub.recv().now_or_never().is_none());
        let waiting = tokio::spawn({
            let sub = sub.clone();
            async move { sub.recv().await.map(|t| t.server()) }
        });
        settle().await;
        assert_eq!(sub.lock().waiting(), 1, "only the spawned receiver waits");
        tx.send(MemberEvent::Joined(x(3))).unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(x(3)));
    }

    #[tokio::test]
    async fn shell_counts_overflow_and_lag_as_dropped() {
        let (tx, rx) = broadcast::channel(4);
        let sub = Subscription::with_capacity(path(), SubscriptionSource::Join, 2, rx);
        // Ten events before the reader runs: it lags behind the broadcast
        // buffer (4), losing 6, then keeps 2 of the last 4.
        for i in 1..=10 {
            tx.send(MemberEvent::Joined(x(i))).unwrap();
        }
        settle().await;
        assert_eq!(sub.stat(), stat(2, 8, false));
        assert_eq!(sub.recv().await.unwrap().server(), x(9));
    }

    #[tokio::test]
    async fn shell_scrub_wakes_receivers_and_stops_the_reader() {
        let (tx, rx) = broadcast::channel(4);
        let sub = Subscription::start(path(), SubscriptionSource::Leave, rx);
        let waiting = tokio::spawn({
            let sub = sub.clone();
            async move { sub.recv().await.map(|t| t.server()) }
        });
        settle().await;
        assert_eq!(sub.lock().waiting(), 1);
        sub.scrub();
        assert_eq!(waiting.await.unwrap(), Err(SubError::Scrubbed));
        assert_eq!(sub.recv().await.err(), Some(SubError::Scrubbed));
        settle().await;
        assert_eq!(tx.receiver_count(), 0, "the reading task is gone");
        assert!(sub.stat().closed);
    }

    #[tokio::test]
    async fn shell_closes_when_membership_ends() {
        let (tx, rx) = broadcast::channel(4);
        let sub = Subscription::start(path(), SubscriptionSource::Join, rx);
        tx.send(MemberEvent::Joined(x(1))).unwrap();
        drop(tx);
        settle().await;
        assert_eq!(sub.stat(), stat(1, 0, true));
        sub.recv().await.unwrap().delivered();
        assert_eq!(sub.recv().await.err(), Some(SubError::Closed));
    }

    #[tokio::test]
    async fn dropping_the_element_stops_the_reader() {
        let (tx, rx) = broadcast::channel(4);
        let sub = Subscription::start(path(), SubscriptionSource::Join, rx);
        settle().await;
        assert_eq!(tx.receiver_count(), 1);
        drop(sub);
        settle().await;
        assert_eq!(tx.receiver_count(), 0);
    }
}
