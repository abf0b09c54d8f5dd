//! The circuit breaker policy as a pure state machine, shared by the
//! server's `breaker` element, the client's in-process breaker and the Redis
//! store.
//!
//! No IO, no clock, no threads: the caller owns a monotonic origin and passes
//! `now` (a [`Duration`] since it) to every call, and gets back a decision and
//! the [`Transition`]s it must carry out (log them, emit events, persist).
//! Time moves only when the caller says so: an open breaker becomes half-open
//! in [`Breakers::allow`] or [`Breakers::expire`] at or after its deadline,
//! once, as a stored transition — never computed on read. The caller arms one
//! timer for [`Breakers::next_deadline`] and calls [`Breakers::expire`] then.
//!
//! Semantics:
//! - Many keys per [`Breakers`], each created closed on first use.
//! - [`Breakers::allow`] gives a [`Permit`] or a [`Rejection`];
//!   [`Breakers::record`] takes the permit's id and an [`Outcome`], once: a
//!   second record of the same id is ignored, as is a record from an older
//!   generation (it frees no probe slot twice).
//! - Every transition increments the key's generation and clears its counts.
//! - At most `HalfOpenMaxProbes` probes are in flight in half-open; a probe
//!   not recorded within `PermitTtl` frees its slot and counts as a failure.
//!   A closed-state permit that expires is dropped without counting.
//! - Memory is bounded by [`Limits`]: keys, permits in flight, key length.

mod breakers;
mod spec;

pub use breakers::{Breakers, Limits, Persisted, PersistedKey, PersistedPermit};
pub use spec::{MAX_COUNT, MAX_PERMIT_TTL, MAX_SECONDS, Spec, SpecError};

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a key's breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Calls are admitted and their outcomes counted.
    Closed,
    /// Calls are refused until the open timeout has passed.
    Open,
    /// A bounded number of probes is admitted; their outcomes close or
    /// re-open the breaker.
    HalfOpen,
}

impl State {
    /// The name shown to users: `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The leave to make one call: record its outcome with [`Breakers::record`]
/// before its lease ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Permit {
    /// The key it was given for.
    pub key: String,
    /// The key's generation when it was given.
    pub generation: u64,
    /// Unique among the permits of one [`Breakers`] (also across a restore).
    pub id: u64,
    /// How long after it was given it stays valid.
    pub lease: Duration,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The breaker is open; it admits a probe after `retry_after`.
    Open {
        /// Time until the open timeout ends.
        retry_after: Duration,
    },
    /// Half-open with every probe slot taken; one frees at the latest after
    /// `retry_after` (when the oldest probe's lease ends).
    HalfOpenFull {
        /// Time until the oldest probe's lease ends.
        retry_after: Duration,
    },
    /// The key is new and the breaker already holds `max` keys.
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// `max` permits are in flight already; one lease ends after
    /// `retry_after`.
    TooManyPermits {
        /// The limit.
        max: usize,
        /// Time until the oldest permit's lease ends.
        retry_after: Duration,
    },
    /// The key is longer than `max` bytes.
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Rejection {
    /// When to try again, if trying again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::Open { retry_after }
            | Rejection::HalfOpenFull { retry_after }
            | Rejection::TooManyPermits { retry_after, .. } => Some(*retry_after),
            Rejection::TooManyKeys { .. } | Rejection::KeyTooLong { .. } => None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Open { retry_after } => {
                write!(f, "breaker open: retry after {:.3} s", retry_after.as_secs_f64())
            }
            Rejection::HalfOpenFull { retry_after } => write!(
                f,
                "breaker half-open and every probe slot is taken: retry after {:.3} s",
                retry_after.as_secs_f64()
            ),
            Rejection::TooManyKeys { max } => write!(f, "breaker holds {max} keys already (the limit)"),
            Rejection::TooManyPermits { max, retry_after } => write!(
                f,
                "{max} permits in flight already (the limit): retry after {:.3} s",
                retry_after.as_secs_f64()
            ),
            Rejection::KeyTooLong { len, max } => {
                write!(f, "breaker key of {len} bytes is longer than {max}")
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// How a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It worked.
    Success,
    /// It failed in a way the breaker should count.
    Failure,
    /// It neither worked nor failed for the breaker's purpose (say, a bad
    /// request): not counted, but it frees its probe slot.
    Excluded,
}

impl Outcome {
    /// `success`, `failure` or `excluded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Excluded => "excluded",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Outcome, String> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "excluded" => Ok(Outcome::Excluded),
            _ => Err(format!("unknown outcome {s:?} (success, failure or excluded)")),
        }
    }
}

/// A change of a key's state, to be carried out by the caller (event, log,
/// persist). `generation` is the key's new generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transition {
    /// The key.
    pub key: String,
    /// The state it left.
    pub from: State,
    /// The state it entered (may equal `from` for a reset or a forced open).
    pub to: State,
    /// The generation it started.
    pub generation: u64,
}

/// The outcomes counted in the current generation (and, when closed, the
/// current window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Counts {
    /// Successes and failures counted.
    pub requests: u64,
    /// Successes counted.
    pub successes: u64,
    /// Failures counted (an expired probe counts as one).
    pub failures: u64,
    /// Excluded outcomes (not in `requests`).
    pub excluded: u64,
    /// Successes since the last failure.
    pub consecutive_successes: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
}

/// What became of a [`Breakers::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    /// The outcome was counted.
    Counted,
    /// The permit is from an older generation than the key's: ignored.
    Stale {
        /// The permit's generation.
        generation: u64,
        /// The key's.
        current: u64,
    },
    /// No such permit in flight: recorded already, expired, or never given.
    Unknown,
}

/// A key as `peek` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeySnapshot {
    /// The key.
    pub key: String,
    /// Its state (as last stored: an open key past its timeout shows `open`
    /// with `open_remaining` zero until the next allow or expire).
    pub state: State,
    /// Its generation.
    pub generation: u64,
    /// Its counts (zero if the closed window has ended since).
    pub counts: Counts,
    /// Half-open probes of this generation in flight.
    pub probes_in_flight: u32,
    /// Permits of the key in flight, of any generation.
    pub permits_in_flight: u32,
    /// When open: time until it admits a probe.
    pub open_remaining: Option<Duration>,
}

/// A call's result with the transitions it caused, in order.
#[must_use = "the transitions must be carried out"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    /// The call's result.
    pub value: T,
    /// The transitions it made, in order (most calls make none).
    pub transitions: Vec<Transition>,
}
