//! [`Breakers`]: many keys' breakers, their permits and their deadlines.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Counts, KeySnapshot, MAX_PERMIT_TTL, MAX_SECONDS, Outcome, Permit, Recorded, Rejection, Spec, State, Step,
    Transition,
};

/// Bounds on what hostile or runaway callers can make a [`Breakers`] hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Keys held at most (default 100,000). At the limit, idle keys (closed,
    /// no failure counted, no permit in flight) are forgotten to make room.
    pub max_keys: usize,
    /// Permits in flight at most, over all keys (default 100,000).
    pub max_permits: usize,
    /// Longest key, in bytes (default 1,024).
    pub max_key_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_keys: 100_000,
            max_permits: 100_000,
            max_key_len: 1024,
        }
    }
}

/// One key's breaker.
#[derive(Debug, Clone)]
struct Circuit {
    state: State,
    generation: u64,
    counts: Counts,
    /// Open: when it admits probes.
    open_until: Duration,
    /// Closed with a window: when the counts are cleared next.
    window_end: Option<Duration>,
    /// Half-open probes of this generation in flight: (lease end, id).
    probes: BTreeSet<(Duration, u64)>,
    /// Permits of any generation in flight.
    permits: u32,
}

impl Circuit {
    fn new(spec: &Spec, now: Duration) -> Circuit {
        Circuit {
            state: State::Closed,
            generation: 0,
            counts: Counts::default(),
            open_until: Duration::ZERO,
            window_end: spec.window().map(|w| now.saturating_add(w)),
            probes: BTreeSet::new(),
            permits: 0,
        }
    }

    fn idle(&self) -> bool {
        self.state == State::Closed && self.permits == 0 && self.counts.failures == 0
    }

    /// Clears a closed window's counts if it has ended (not a transition).
    fn roll_window(&mut self, spec: &Spec, now: Duration) {
        if self.state == State::Closed
            && let Some(end) = self.window_end
            && now >= end
        {
            self.counts = Counts::default();
            self.window_end = spec.window().map(|w| now.saturating_add(w));
        }
    }
}

/// What is due at a deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Permit(u64),
    Open(Arc<str>),
}

#[derive(Debug, Clone)]
struct PermitEntry {
    key: Arc<str>,
    generation: u64,
    probe: bool,
    deadline: Duration,
}

/// Many keys' breakers under one [`Spec`]: the whole policy, driven by the
/// caller's `now`. See the crate documentation for the semantics.
#[derive(Debug, Clone)]
pub struct Breakers {
    spec: Spec,
    limits: Limits,
    keys: HashMap<Arc<str>, Circuit>,
    permits: HashMap<u64, PermitEntry>,
    due: BTreeSet<(Duration, Due)>,
    next_id: u64,
    /// When a full sweep for idle keys last found none (to not sweep on
    /// every new key while full of busy ones).
    fruitless_sweep: Option<Duration>,
}

/// The persistent form of a [`Breakers`]: times are remaining durations, as
/// the monotonic clock does not survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Persisted {
    /// The next permit id to give (ids are never reused).
    pub next_id: u64,
    /// Every key, sorted.
    pub keys: Vec<PersistedKey>,
    /// Every permit in flight, by id.
    pub permits: Vec<PersistedPermit>,
}

/// One key in a [`Persisted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PersistedKey {
    /// The key.
    pub key: String,
    /// Its state.
    pub state: State,
    /// Its generation.
    pub generation: u64,
    /// Its counts.
    pub counts: Counts,
    /// Open: time left until it admits probes.
    pub open_remaining: Option<Duration>,
    /// Closed with a window: time left until the counts are cleared.
    pub window_remaining: Option<Duration>,
}

/// One permit in flight in a [`Persisted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PersistedPermit {
    /// Its id.
    pub id: u64,
    /// Its key.
    pub key: String,
    /// Its generation.
    pub generation: u64,
    /// Whether it holds a half-open probe slot.
    pub probe: bool,
    /// Time left on its lease.
    pub lease_remaining: Duration,
}

/// Moves `c` to `to`: new generation, counts cleared, deadlines re-armed.
fn transit(
    spec: &Spec,
    due: &mut BTreeSet<(Duration, Due)>,
    key: &Arc<str>,
    c: &mut Circuit,
    to: State,
    now: Duration,
    out: &mut Vec<Transition>,
) {
    let from = c.state;
    if from == State::Open {
        due.remove(&(c.open_until, Due::Open(key.clone())));
    }
    c.state = to;
    c.generation = c.generation.wrapping_add(1);
    c.counts = Counts::default();
    c.probes.clear();
    c.window_end = None;
    match to {
        State::Open => {
            c.open_until = now.saturating_add(spec.open_timeout());
            due.insert((c.open_until, Due::Open(key.clone())));
        }
        State::Closed => c.window_end = spec.window().map(|w| now.saturating_add(w)),
        State::HalfOpen => {}
    }
    out.push(Transition {
        key: key.to_string(),
        from,
        to,
        generation: c.generation,
    });
}

/// Brings `c` up to `now`: an open breaker past its timeout becomes
/// half-open; a closed window that ended is cleared.
fn advance(
    spec: &Spec,
    due: &mut BTreeSet<(Duration, Due)>,
    key: &Arc<str>,
    c: &mut Circuit,
    now: Duration,
    out: &mut Vec<Transition>,
) {
    if c.state == State::Open && now >= c.open_until {
        transit(spec, due, key, c, State::HalfOpen, now, out);
    }
    c.roll_window(spec, now);
}

/// Counts an outcome of the current generation and makes the transition it
/// calls for.
fn count(
    spec: &Spec,
    due: &mut BTreeSet<(Duration, Due)>,
    key: &Arc<str>,
    c: &mut Circuit,
    outcome: Outcome,
    now: Duration,
    out: &mut Vec<Transition>,
) {
    let k = &mut c.counts;
    match outcome {
        Outcome::Excluded => {
            k.excluded = k.excluded.saturating_add(1);
            return;
        }
        Outcome::Success => {
            k.requests = k.requests.saturating_add(1);
            k.successes = k.successes.saturating_add(1);
            k.consecutive_successes = k.consecutive_successes.saturating_add(1);
            k.consecutive_failures = 0;
        }
        Outcome::Failure => {
            k.requests = k.requests.saturating_add(1);
            k.failures = k.failures.saturating_add(1);
            k.consecutive_failures = k.consecutive_failures.saturating_add(1);
            k.consecutive_successes = 0;
        }
    }
    match c.state {
        State::Closed => {
            if outcome == Outcome::Failure {
                let by_count = k.consecutive_failures >= u64::from(spec.failure_threshold);
                let by_rate = spec.failure_rate.is_some_and(|rate| {
                    k.requests >= u64::from(spec.minimum_calls) && k.failures as f64 >= rate * k.requests as f64
                });
                if by_count || by_rate {
                    transit(spec, due, key, c, State::Open, now, out);
                }
            }
        }
        State::HalfOpen => match outcome {
            Outcome::Failure => transit(spec, due, key, c, State::Open, now, out),
            _ if k.consecutive_successes >= u64::from(spec.success_threshold) => {
                transit(spec, due, key, c, State::Closed, now, out)
            }
            _ => {}
        },
        // No permit of the current generation exists while open.
        State::Open => {}
    }
}

impl Breakers {
    /// An empty set of breakers with this policy (checked with
    /// [`Spec::validate`] by the caller) and these bounds.
    pub fn new(spec: Spec, limits: Limits) -> Breakers {
        Breakers {
            spec,
            limits,
            keys: HashMap::new(),
            permits: HashMap::new(),
            due: BTreeSet::new(),
            next_id: 1,
            fruitless_sweep: None,
        }
    }

    /// The policy.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the policy (a reloaded config): keys keep their state, and
    /// deadlines already set keep their time; the new values apply from the
    /// next count, transition or permit.
    pub fn set_spec(&mut self, spec: Spec) {
        self.spec = spec;
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Permits in flight, over all keys.
    pub fn permits_in_flight(&self) -> usize {
        self.permits.len()
    }

    /// Makes room for one more key if the limit allows (forgetting idle
    /// keys when full); false if there is none.
    fn room_for_key(&mut self, now: Duration) -> bool {
        if self.keys.len() < self.limits.max_keys {
            return true;
        }
        if let Some(at) = self.fruitless_sweep
            && now < at.saturating_add(Duration::from_secs(1))
        {
            return false;
        }
        self.keys.retain(|_, c| !c.idle());
        if self.keys.len() < self.limits.max_keys {
            self.fruitless_sweep = None;
            true
        } else {
            self.fruitless_sweep = Some(now);
            false
        }
    }

    /// The key's entry, created closed if new (within the limits).
    fn entry(&mut self, key: &str, now: Duration) -> Result<Arc<str>, Rejection> {
        if key.len() > self.limits.max_key_len {
            return Err(Rejection::KeyTooLong {
                len: key.len(),
                max: self.limits.max_key_len,
            });
        }
        if let Some((k, _)) = self.keys.get_key_value(key) {
            return Ok(k.clone());
        }
        if !self.room_for_key(now) {
            return Err(Rejection::TooManyKeys {
                max: self.limits.max_keys,
            });
        }
        let k: Arc<str> = Arc::from(key);
        self.keys.insert(k.clone(), Circuit::new(&self.spec, now));
        Ok(k)
    }

    /// Asks leave to make one call for `key` (created closed if new).
    pub fn allow(&mut self, key: &str, now: Duration) -> Step<Result<Permit, Rejection>> {
        let mut out = Vec::new();
        let value = self.allow_into(key, now, &mut out);
        Step {
            value,
            transitions: out,
        }
    }

    fn allow_into(&mut self, key: &str, now: Duration, out: &mut Vec<Transition>) -> Result<Permit, Rejection> {
        let k = self.entry(key, now)?;
        let c = self.keys.get_mut(&k).expect("entry made above");
        advance(&self.spec, &mut self.due, &k, c, now, out);
        let probe = match c.state {
            State::Closed => false,
            State::Open => {
                return Err(Rejection::Open {
                    retry_after: c.open_until.saturating_sub(now),
                });
            }
            State::HalfOpen => {
                if c.probes.len() >= self.spec.half_open_max_probes as usize {
                    let oldest = c.probes.first().map(|p| p.0).unwrap_or(now);
                    return Err(Rejection::HalfOpenFull {
                        retry_after: oldest.saturating_sub(now),
                    });
                }
                true
            }
        };
        if self.permits.len() >= self.limits.max_permits {
            let oldest = self
                .due
                .iter()
                .find(|(_, d)| matches!(d, Due::Permit(_)))
                .map(|p| p.0)
                .unwrap_or(now);
            return Err(Rejection::TooManyPermits {
                max: self.limits.max_permits,
                retry_after: oldest.saturating_sub(now),
            });
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let lease = self.spec.permit_ttl();
        let deadline = now.saturating_add(lease);
        if probe {
            c.probes.insert((deadline, id));
        }
        c.permits += 1;
        self.permits.insert(
            id,
            PermitEntry {
                key: k.clone(),
                generation: c.generation,
                probe,
                deadline,
            },
        );
        self.due.insert((deadline, Due::Permit(id)));
        Ok(Permit {
            key: k.to_string(),
            generation: c.generation,
            id,
            lease,
        })
    }

    /// Records the outcome of the call made under permit `id`. Idempotent: a
    /// second record of the same id is [`Recorded::Unknown`]; a permit of an
    /// older generation is [`Recorded::Stale`] and changes nothing.
    pub fn record(&mut self, id: u64, outcome: Outcome, now: Duration) -> Step<Recorded> {
        let mut out = Vec::new();
        let value = self.record_into(id, outcome, now, &mut out);
        Step {
            value,
            transitions: out,
        }
    }

    /// [`Breakers::record`] with a [`Permit`].
    pub fn record_permit(&mut self, permit: &Permit, outcome: Outcome, now: Duration) -> Step<Recorded> {
        self.record(permit.id, outcome, now)
    }

    fn record_into(&mut self, id: u64, outcome: Outcome, now: Duration, out: &mut Vec<Transition>) -> Recorded {
        let Some(p) = self.permits.remove(&id) else {
            return Recorded::Unknown;
        };
        self.due.remove(&(p.deadline, Due::Permit(id)));
        let Some(c) = self.keys.get_mut(&p.key) else {
            return Recorded::Unknown;
        };
        c.permits = c.permits.saturating_sub(1);
        if p.generation != c.generation {
            // Still bring the key up to date: time has passed.
            advance(&self.spec, &mut self.due, &p.key, c, now, out);
            return Recorded::Stale {
                generation: p.generation,
                current: c.generation,
            };
        }
        if p.probe {
            c.probes.remove(&(p.deadline, id));
        }
        c.roll_window(&self.spec, now);
        count(&self.spec, &mut self.due, &p.key, c, outcome, now, out);
        Recorded::Counted
    }

    /// Carries out everything due at or before `now`: permits whose lease
    /// ended are dropped (a probe of the current generation counts as a
    /// failure), open keys past their timeout become half-open. Returns the
    /// number of permits dropped.
    pub fn expire(&mut self, now: Duration) -> Step<usize> {
        let mut out = Vec::new();
        let mut dropped = 0;
        while let Some(first) = self.due.first()
            && first.0 <= now
        {
            let (at, what) = self.due.pop_first().expect("first exists");
            match what {
                Due::Permit(id) => {
                    let Some(p) = self.permits.remove(&id) else { continue };
                    dropped += 1;
                    let Some(c) = self.keys.get_mut(&p.key) else { continue };
                    c.permits = c.permits.saturating_sub(1);
                    if p.generation == c.generation && p.probe && c.probes.remove(&(p.deadline, id)) {
                        count(&self.spec, &mut self.due, &p.key, c, Outcome::Failure, at, &mut out);
                    }
                }
                Due::Open(key) => {
                    if let Some(c) = self.keys.get_mut(&key)
                        && c.state == State::Open
                        && c.open_until <= now
                    {
                        transit(&self.spec, &mut self.due, &key, c, State::HalfOpen, now, &mut out);
                    }
                }
            }
        }
        Step {
            value: dropped,
            transitions: out,
        }
    }

    /// The earliest time something is due (arm one timer for it, then call
    /// [`Breakers::expire`]).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.due.first().map(|d| d.0)
    }

    /// Closes `key` with cleared counts and a new generation, whatever its
    /// state (permits in flight become stale). False if the key is unknown
    /// (it would start closed anyway).
    pub fn reset(&mut self, key: &str, now: Duration) -> Step<bool> {
        let mut out = Vec::new();
        let value = match self.keys.get_key_value(key) {
            Some((k, _)) => {
                let k = k.clone();
                let c = self.keys.get_mut(&k).expect("present");
                transit(&self.spec, &mut self.due, &k, c, State::Closed, now, &mut out);
                true
            }
            None => false,
        };
        Step {
            value,
            transitions: out,
        }
    }

    /// Opens `key` now (created if new), for `OpenTimeout`, with a new
    /// generation even if it was open already.
    pub fn force_open(&mut self, key: &str, now: Duration) -> Step<Result<(), Rejection>> {
        let mut out = Vec::new();
        let value = self.entry(key, now).map(|k| {
            let c = self.keys.get_mut(&k).expect("entry made above");
            transit(&self.spec, &mut self.due, &k, c, State::Open, now, &mut out);
        });
        Step {
            value,
            transitions: out,
        }
    }

    /// Closes `key` if it is open or half-open (a new generation, counts
    /// cleared); a closed key is left as it is. True if it changed.
    pub fn force_close(&mut self, key: &str, now: Duration) -> Step<bool> {
        let mut out = Vec::new();
        let mut value = false;
        if let Some((k, c)) = self.keys.get_key_value(key)
            && c.state != State::Closed
        {
            let k = k.clone();
            let c = self.keys.get_mut(&k).expect("present");
            transit(&self.spec, &mut self.due, &k, c, State::Closed, now, &mut out);
            value = true;
        }
        Step {
            value,
            transitions: out,
        }
    }

    fn snap(&self, key: &str, c: &Circuit, now: Duration) -> KeySnapshot {
        let window_over = c.state == State::Closed && c.window_end.is_some_and(|end| now >= end);
        KeySnapshot {
            key: key.to_string(),
            state: c.state,
            generation: c.generation,
            counts: if window_over { Counts::default() } else { c.counts },
            probes_in_flight: c.probes.len() as u32,
            permits_in_flight: c.permits,
            open_remaining: (c.state == State::Open).then(|| c.open_until.saturating_sub(now)),
        }
    }

    /// One key as it stands (`None` if unknown). Changes nothing.
    pub fn snapshot(&self, key: &str, now: Duration) -> Option<KeySnapshot> {
        self.keys.get(key).map(|c| self.snap(key, c, now))
    }

    /// Every key as it stands, sorted by key. Changes nothing.
    pub fn snapshots(&self, now: Duration) -> Vec<KeySnapshot> {
        let mut v: Vec<KeySnapshot> = self.keys.iter().map(|(k, c)| self.snap(k, c, now)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The persistent form as of `now`.
    pub fn persist(&self, now: Duration) -> Persisted {
        let mut keys: Vec<PersistedKey> = self
            .keys
            .iter()
            .map(|(k, c)| PersistedKey {
                key: k.to_string(),
                state: c.state,
                generation: c.generation,
                counts: c.counts,
                open_remaining: (c.state == State::Open).then(|| c.open_until.saturating_sub(now)),
                window_remaining: c.window_end.map(|end| end.saturating_sub(now)),
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        let mut permits: Vec<PersistedPermit> = self
            .permits
            .iter()
            .map(|(id, p)| PersistedPermit {
                id: *id,
                key: p.key.to_string(),
                generation: p.generation,
                probe: p.probe,
                lease_remaining: p.deadline.saturating_sub(now),
            })
            .collect();
        permits.sort_by_key(|p| p.id);
        Persisted {
            next_id: self.next_id,
            keys,
            permits,
        }
    }

    /// Rebuilds breakers from their persistent form at `now`. `downtime` is
    /// how long the host estimates it was down (from its wall clock; zero if
    /// unknown): it is taken off every remaining time, so an open key stays
    /// open until its original expiry. Entries beyond the limits or
    /// inconsistent ones (a permit of an unknown key, a key too long) are
    /// dropped; probe slots are rebuilt from the permits.
    pub fn restore(spec: Spec, limits: Limits, p: Persisted, now: Duration, downtime: Duration) -> Breakers {
        let mut b = Breakers::new(spec, limits);
        // Remaining times are capped at what a valid spec allows, so a
        // damaged file cannot push a deadline past the end of time.
        let left =
            |d: Duration, cap: f64| now.saturating_add(d.min(Duration::from_secs_f64(cap)).saturating_sub(downtime));
        for k in p.keys {
            if b.keys.len() >= limits.max_keys || k.key.len() > limits.max_key_len {
                continue;
            }
            let key: Arc<str> = Arc::from(k.key.as_str());
            let mut c = Circuit::new(&b.spec, now);
            c.state = k.state;
            c.generation = k.generation;
            c.counts = k.counts;
            c.window_end = if k.state == State::Closed {
                k.window_remaining.map(|d| left(d, MAX_SECONDS))
            } else {
                None
            };
            if k.state == State::Open {
                c.open_until = left(k.open_remaining.unwrap_or_default(), MAX_SECONDS);
                b.due.insert((c.open_until, Due::Open(key.clone())));
            }
            if let Some(old) = b.keys.insert(key.clone(), c)
                && old.state == State::Open
            {
                b.due.remove(&(old.open_until, Due::Open(key)));
            }
        }
        let mut max_id = 0;
        for pp in p.permits {
            max_id = max_id.max(pp.id);
            if b.permits.len() >= limits.max_permits || b.permits.contains_key(&pp.id) {
                continue;
            }
            let Some((key, c)) = b.keys.get_key_value(pp.key.as_str()) else {
                continue;
            };
            let key = key.clone();
            let c_gen = c.generation;
            let c_state = c.state;
            let deadline = left(pp.lease_remaining, MAX_PERMIT_TTL);
            let c = b.keys.get_mut(&key).expect("present");
            let probe = pp.probe && pp.generation == c_gen && c_state == State::HalfOpen;
            if probe {
                c.probes.insert((deadline, pp.id));
            }
            c.permits += 1;
            b.permits.insert(
                pp.id,
                PermitEntry {
                    key,
                    generation: pp.generation,
                    probe: pp.probe,
                    deadline,
                },
            );
            b.due.insert((deadline, Due::Permit(pp.id)));
        }
        b.next_id = p.next_id.max(max_id.saturating_add(1)).max(1);
        b
    }
}

#[cfg(test)]
mod tests;
