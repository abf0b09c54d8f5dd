//! The breaker element: circuit-breaker state for many keys, held by this
//! server and shared by clients anywhere. The policy is the pure core's
//! ([`circuit_breaker::Breakers`]); this shell gives it the server's clock,
//! one timer, events, logs and, with `--var DIR`, a file.
//!
//! - `allow` and `record` are short critical sections on a std `Mutex`,
//!   never held across an await; the protected work runs in the client.
//! - One timer task sleeps until the core's next deadline (a permit's lease
//!   end, an open timeout) and calls `expire`; an op that makes an earlier
//!   deadline wakes it.
//! - Every transition is logged, emitted as an event (`circuit events`) and,
//!   with `--var DIR`, written to `DIR/breakers/NAME.json` (write, then
//!   rename) by a persister task that always writes the latest state. A
//!   clean stop writes it once more; a scrub removes the file; the server
//!   makes the element again from the file at its next start.

pub(crate) mod ops;
pub(crate) mod store;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use circuit_breaker::{Breakers, Step, Transition};
use circuit_proto::{BreakerKeyStat, BreakerSpec, BreakerStat, EventKind, Path};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Scrubbed;
use crate::clock::Clock;
use crate::events::Bus;

struct Inner {
    core: Breakers,
    /// The deadline the timer task sleeps until (`None`: none).
    armed: Option<Duration>,
}

/// A breaker element.
pub struct Breaker {
    inner: Mutex<Inner>,
    clock: Clock,
    /// The core's time origin: `now` is the time since.
    origin: Instant,
    path: Path,
    events: Bus,
    /// Wakes the timer task for an earlier deadline.
    wake: Notify,
    /// Wakes the persister after a transition.
    dirty: Notify,
    store: Option<store::Store>,
    /// Ends its tasks (a child of the server's shutdown token).
    stop: CancellationToken,
    /// The server's shutdown token: a scrub while it is cancelled is the
    /// server stopping (keep the file), otherwise a removal (drop it).
    shutdown: CancellationToken,
}

impl Breaker {
    /// The core's `now`.
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core at `now` in one short critical section, wakes
    /// the timer if the next deadline moved earlier, then carries out the
    /// transitions (outside the lock).
    pub fn with<T>(&self, f: impl FnOnce(&mut Breakers, Duration) -> Step<T>) -> T {
        let step = {
            let mut inner = self.lock();
            let now = self.now();
            let step = f(&mut inner.core, now);
            let next = inner.core.next_deadline();
            if next.is_some() && (inner.armed.is_none() || next < inner.armed) {
                inner.armed = next;
                self.wake.notify_one();
            }
            step
        };
        self.carry_out(step.transitions);
        step.value
    }

    fn carry_out(&self, transitions: Vec<Transition>) {
        if transitions.is_empty() {
            return;
        }
        for t in transitions {
            info!(op = "transition", path = %self.path, key = %t.key, from = %t.from, to = %t.to,
                  generation = t.generation, "breaker transition");
            self.events.emit(&self.path, EventKind::Breaker(t.into()));
        }
        if self.store.is_some() {
            self.dirty.notify_one();
        }
    }

    /// Replaces the policy (a reloaded config file): keys keep their state.
    pub fn set_spec(&self, spec: BreakerSpec) {
        self.lock().core.set_spec(spec);
        if self.store.is_some() {
            self.dirty.notify_one();
        }
    }

    /// The policy.
    pub fn spec(&self) -> BreakerSpec {
        self.lock().core.spec().clone()
    }

    /// What `peek` says.
    pub fn stat(&self) -> BreakerStat {
        let inner = self.lock();
        let now = self.now();
        let mut states = inner.core.snapshots(now);
        states.truncate(circuit_proto::breaker::MAX_PEEK_KEYS);
        BreakerStat {
            spec: inner.core.spec().clone(),
            keys: inner.core.len() as u64,
            permits_in_flight: inner.core.permits_in_flight() as u64,
            states: states.into_iter().map(BreakerKeyStat::from).collect(),
        }
    }

    /// Sleeps until the next deadline, expires what is due, again, until
    /// the element stops.
    async fn timer(self: Arc<Self>) {
        loop {
            let next = self.lock().armed;
            let at = next.map(|d| self.origin + d);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.wake.notified() => continue,
                _ = async {
                    match at {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let expired = self.with(|core, now| core.expire(now));
            {
                let mut inner = self.lock();
                inner.armed = inner.core.next_deadline();
            }
            if expired > 0 {
                info!(op = "expire", path = %self.path, permits = expired, "permit leases ended");
            }
        }
    }

    /// Writes the state after each transition (the latest state, however
    /// many transitions came meanwhile) until the element stops.
    async fn persister(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.dirty.notified() => self.save(),
            }
        }
    }

    /// Writes the state now (a no-op without `--var`).
    fn save(&self) {
        let Some(store) = &self.store else { return };
        let (spec, state) = {
            let inner = self.lock();
            (inner.core.spec().clone(), inner.core.persist(self.now()))
        };
        store.save(&self.path, spec, state);
    }

    /// Stops its tasks. When the server is stopping, the state is written
    /// once more, for the next start; otherwise (a scrub) its file goes.
    pub fn scrub(&self) -> Scrubbed {
        self.stop.cancel();
        if let Some(store) = &self.store {
            if self.shutdown.is_cancelled() {
                self.save();
            } else {
                store.remove(&self.path);
            }
        }
        Scrubbed::done()
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use circuit_breaker::{Limits, Outcome, State};
    use circuit_proto::{BreakerEvent, ServerId};

    fn breaker(spec: BreakerSpec, events: &Bus) -> Arc<Breaker> {
        let clock = Clock::new();
        let shutdown = CancellationToken::new();
        Arc::new(Breaker {
            inner: Mutex::new(Inner {
                core: Breakers::new(spec, Limits::default()),
                armed: None,
            }),
            clock,
            origin: clock.now(),
            path: format!("{}/b", Path::server(ServerId(7))).parse().unwrap(),
            events: events.clone(),
            wake: Notify::new(),
            dirty: Notify::new(),
            store: None,
            stop: shutdown.child_token(),
            shutdown,
        })
    }

    /// On the server's paused clock, no op after the trip: the timer alone
    /// stores open → half-open at the timeout, and ends a lost probe's
    /// lease (half-open → open), each one event.
    #[tokio::test(start_paused = true)]
    async fn the_timer_moves_time_on_the_servers_clock() {
        let bus = Bus::new(ServerId(7));
        let mut rx = bus.subscribe();
        let spec = BreakerSpec {
            failure_threshold: 1,
            open_timeout: 10.0,
            permit_ttl: 3.0,
            ..BreakerSpec::default()
        };
        let b = breaker(spec, &bus);
        tokio::spawn(b.clone().timer());
        let p = b.with(|c, now| c.allow("k", now)).unwrap();
        b.with(|c, now| c.record(p.id, Outcome::Failure, now));
        let state = |b: &Breaker| b.stat().states[0].state;
        assert_eq!(state(&b), State::Open);
        b.clock.sleep(Duration::from_millis(9_999)).await;
        assert_eq!(state(&b), State::Open);
        b.clock.sleep(Duration::from_millis(2)).await;
        assert_eq!(state(&b), State::HalfOpen, "the timer stored the transition");
        // A probe whose holder vanishes: at its lease's end, open again.
        let probe = b.with(|c, now| c.allow("k", now)).unwrap();
        assert_eq!(probe.generation, 2);
        b.clock.sleep(Duration::from_millis(3_001)).await;
        assert_eq!(state(&b), State::Open);
        assert_eq!(b.stat().states[0].probes_in_flight, 0);
        let mut seen = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let EventKind::Breaker(BreakerEvent::Transition { from, to, .. }) = ev.kind {
                seen.push((from, to));
            }
        }
        use State::*;
        assert_eq!(seen, vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]);
        b.scrub().await;
    }
}
