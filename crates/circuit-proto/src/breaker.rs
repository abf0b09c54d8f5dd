//! The breaker element: what a client asks of one and what `peek` says of
//! one. The policy and its types are the pure core's ([`circuit_breaker`]),
//! used as they are on the wire.

use serde::{Deserialize, Serialize};

pub use circuit_breaker::{
    Counts as BreakerCounts, KeySnapshot, Outcome, Permit, Recorded, Rejection, Spec as BreakerSpec, SpecError,
    State as BreakerState, Transition,
};

/// Keys `peek` lists at most (the first ones by key); `Keys` says how many
/// there are.
pub const MAX_PEEK_KEYS: usize = 1000;

/// Operations on a breaker element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BreakerOp {
    /// Make a breaker with this policy (checked: a bad one is refused).
    Make(BreakerSpec),
    /// Leave for one call under `key`: [`BreakerReply::Permit`] or
    /// [`BreakerReply::Rejected`].
    Allow {
        /// The key (a tenant, a dependency); created closed on first use.
        key: String,
    },
    /// The outcome of the call made under `permit`: [`BreakerReply::Recorded`].
    Record {
        /// The permit `Allow` gave.
        permit: Permit,
        /// How the call went.
        outcome: Outcome,
    },
    /// Close `key` with cleared counts and a new generation:
    /// [`BreakerReply::Changed`].
    Reset {
        /// The key.
        key: String,
    },
    /// Open `key` now, for `OpenTimeout`: [`BreakerReply::Changed`].
    Open {
        /// The key.
        key: String,
    },
    /// Close `key` if it is open or half-open: [`BreakerReply::Changed`].
    Close {
        /// The key.
        key: String,
    },
    /// Many ops on one stream (a pipelined handle): the server answers
    /// `Done`, then takes frames of [`SessionRequest`] and writes a frame of
    /// [`SessionAnswer`] for each, in order, until the client closes its
    /// side. `Make` and `Session` are refused inside. An answer of kind
    /// [`crate::ErrorKind::Aborted`] means the breaker was scrubbed: the
    /// server then ends the stream.
    Session,
}

/// One op of a [`BreakerOp::Session`], with the caller's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// Echoed in the answer.
    pub id: u64,
    /// The op.
    pub op: BreakerOp,
}

/// The answer to a [`SessionRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAnswer {
    /// The request's id.
    pub id: u64,
    /// What a single request would have answered.
    pub answer: Result<BreakerReply, crate::WireError>,
}

impl BreakerOp {
    /// The verb in logs and the CLI.
    pub fn verb(&self) -> &'static str {
        match self {
            BreakerOp::Make(_) => "mkbreaker",
            BreakerOp::Allow { .. } => "allow",
            BreakerOp::Record { .. } => "record",
            BreakerOp::Reset { .. } => "reset",
            BreakerOp::Open { .. } => "open",
            BreakerOp::Close { .. } => "close",
            BreakerOp::Session => "breaker-session",
        }
    }
}

/// A breaker's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BreakerReply {
    /// Admitted: make the call, then record it.
    Permit(Permit),
    /// Not admitted, and why (when to retry).
    Rejected(Rejection),
    /// What became of a record.
    Recorded(Recorded),
    /// Whether a reset, open or close changed the key.
    Changed(bool),
}

/// One key in `peek`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BreakerKeyStat {
    /// The key.
    pub key: String,
    /// `closed`, `open` or `half-open`.
    pub state: BreakerState,
    /// Its generation (every transition increments it).
    pub generation: u64,
    /// Its counts in this generation (and closed window).
    pub counts: BreakerCounts,
    /// Half-open probes in flight.
    pub probes_in_flight: u32,
    /// Permits in flight, of any generation.
    pub permits_in_flight: u32,
    /// When open: seconds until it admits a probe.
    pub open_remaining: Option<f64>,
}

impl From<KeySnapshot> for BreakerKeyStat {
    fn from(s: KeySnapshot) -> BreakerKeyStat {
        BreakerKeyStat {
            key: s.key,
            state: s.state,
            generation: s.generation,
            counts: s.counts,
            probes_in_flight: s.probes_in_flight,
            permits_in_flight: s.permits_in_flight,
            open_remaining: s.open_remaining.map(|d| d.as_secs_f64()),
        }
    }
}

/// What `peek` says of a breaker: `{"Spec": {…}, "Keys": n,
/// "PermitsInFlight": n, "States": [{"Key": …, "State": "open", …}]}`, the
/// states sorted by key, at most [`MAX_PEEK_KEYS`] of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BreakerStat {
    /// Its policy.
    pub spec: BreakerSpec,
    /// Keys it holds.
    pub keys: u64,
    /// Permits in flight over all keys.
    pub permits_in_flight: u64,
    /// The keys' states, sorted by key.
    pub states: Vec<BreakerKeyStat>,
}

/// A breaker's event: one per transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BreakerEvent {
    /// `key` went `from` → `to`, starting `generation`.
    Transition {
        /// The key.
        key: String,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
        /// Its new generation.
        generation: u64,
    },
}

impl BreakerEvent {
    /// The value of the `Event` key.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerEvent::Transition { .. } => "transition",
        }
    }

    /// Its keys after `Event`, in order.
    pub fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        match self {
            BreakerEvent::Transition {
                key,
                from,
                to,
                generation,
            } => vec![
                ("Key", json!(key)),
                ("From", json!(from.as_str())),
                ("To", json!(to.as_str())),
                ("Generation", json!(generation)),
            ],
        }
    }
}

impl From<Transition> for BreakerEvent {
    fn from(t: Transition) -> BreakerEvent {
        BreakerEvent::Transition {
            key: t.key,
            from: t.from,
            to: t.to,
            generation: t.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ops_and_stats_round_trip() {
        let ops = vec![
            BreakerOp::Make(BreakerSpec::default()),
            BreakerOp::Allow { key: "t1".into() },
            BreakerOp::Record {
                permit: Permit {
                    key: "t1".into(),
                    generation: 3,
                    id: 9,
                    lease: Duration::from_secs(30),
                },
                outcome: Outcome::Failure,
            },
            BreakerOp::Close { key: "t1".into() },
        ];
        for op in ops {
            let wire = postcard::to_stdvec(&op).unwrap();
            assert_eq!(postcard::from_bytes::<BreakerOp>(&wire).unwrap(), op);
        }
        let replies = vec![
            BreakerReply::Rejected(Rejection::Open {
                retry_after: Duration::from_millis(1500),
            }),
            BreakerReply::Recorded(Recorded::Stale {
                generation: 1,
                current: 2,
            }),
        ];
        for r in replies {
            let wire = postcard::to_stdvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<BreakerReply>(&wire).unwrap(), r);
        }
        let stat = BreakerStat {
            spec: BreakerSpec::default(),
            keys: 1,
            permits_in_flight: 0,
            states: vec![BreakerKeyStat {
                key: "t1".into(),
                state: BreakerState::HalfOpen,
                generation: 2,
                counts: BreakerCounts::default(),
                probes_in_flight: 1,
                permits_in_flight: 1,
                open_remaining: None,
            }],
        };
        let json = serde_json::to_value(&stat).unwrap();
        assert_eq!(json["States"][0]["State"], "half-open");
        assert_eq!(json["Spec"]["OpenTimeout"], 60.0);
        let wire = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<BreakerStat>(&wire).unwrap(), stat);
    }
}
