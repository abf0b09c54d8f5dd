//! What a breaker is made with ([`Spec`]) and how it is checked.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `OpenTimeout` and `Window` taken, in seconds (one year).
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Longest `PermitTtl` taken, in seconds (one week).
pub const MAX_PERMIT_TTL: f64 = 7.0 * 24.0 * 3600.0;

/// Largest count thresholds and `HalfOpenMaxProbes` taken.
pub const MAX_COUNT: u32 = 1_000_000;

/// The policy of a breaker. JSON field names are PascalCase
/// (`{"FailureThreshold": 5, "OpenTimeout": 60, …}`); durations are seconds
/// (fractions allowed). A missing field takes its default; an unknown field
/// is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct Spec {
    /// Consecutive failures in the closed state that trip the breaker (≥ 1;
    /// default 5).
    pub failure_threshold: u32,
    /// Optional: the share of failures (0 < rate ≤ 1) among the outcomes
    /// counted in the closed state that trips the breaker, once at least
    /// `MinimumCalls` outcomes were counted. `None` (default): off.
    pub failure_rate: Option<f64>,
    /// Seconds after which the closed state's counts are cleared (a cyclic
    /// counting window; 0, the default, never clears them). Clearing is not
    /// a transition: the generation stays.
    pub window: f64,
    /// Outcomes to count before `FailureRate` may trip (≥ 1; default 10).
    pub minimum_calls: u32,
    /// Consecutive successful probes in half-open that close the breaker
    /// (≥ 1; default 1).
    pub success_threshold: u32,
    /// Probes in flight at once in half-open (≥ 1; default 1).
    pub half_open_max_probes: u32,
    /// Seconds the breaker stays open before it admits probes (> 0; default
    /// 60).
    pub open_timeout: f64,
    /// Seconds a permit is valid: a permit not recorded by then is dropped
    /// (a probe's counts as a failure and frees its slot). > 0; default 30.
    pub permit_ttl: f64,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            failure_threshold: 5,
            failure_rate: None,
            window: 0.0,
            minimum_calls: 10,
            success_threshold: 1,
            half_open_max_probes: 1,
            open_timeout: 60.0,
            permit_ttl: 30.0,
        }
    }
}

/// Why a [`Spec`] was refused: which field, its value, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The JSON name of the field (`FailureThreshold`, …).
    pub field: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What the field takes.
    pub allowed: &'static str,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad breaker spec: {} = {}: {}", self.field, self.value, self.allowed)
    }
}

impl std::error::Error for SpecError {}

fn count(field: &'static str, v: u32) -> Result<(), SpecError> {
    if (1..=MAX_COUNT).contains(&v) {
        Ok(())
    } else {
        Err(SpecError {
            field,
            value: v.to_string(),
            allowed: "must be an integer from 1 to 1000000",
        })
    }
}

fn seconds(field: &'static str, v: f64, zero_ok: bool, max: f64, allowed: &'static str) -> Result<(), SpecError> {
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if v.is_finite() && low_ok && v <= max {
        Ok(())
    } else {
        Err(SpecError {
            field,
            value: v.to_string(),
            allowed,
        })
    }
}

impl Spec {
    /// Checks every field; the first bad one is named in the error.
    pub fn validate(&self) -> Result<(), SpecError> {
        count("FailureThreshold", self.failure_threshold)?;
        if let Some(rate) = self.failure_rate
            && !(rate.is_finite() && rate > 0.0 && rate <= 1.0)
        {
            return Err(SpecError {
                field: "FailureRate",
                value: rate.to_string(),
                allowed: "must be a fraction above 0 and at most 1 (or null for none)",
            });
        }
        seconds(
            "Window",
            self.window,
            true,
            MAX_SECONDS,
            "must be seconds from 0 (no window) to 31536000",
        )?;
        count("MinimumCalls", self.minimum_calls)?;
        count("SuccessThreshold", self.success_threshold)?;
        count("HalfOpenMaxProbes", self.half_open_max_probes)?;
        seconds(
            "OpenTimeout",
            self.open_timeout,
            false,
            MAX_SECONDS,
            "must be seconds above 0 and at most 31536000",
        )?;
        seconds(
            "PermitTtl",
            self.permit_ttl,
            false,
            MAX_PERMIT_TTL,
            "must be seconds above 0 and at most 604800",
        )?;
        Ok(())
    }

    /// `OpenTimeout` as a duration (the spec must be valid).
    pub fn open_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.open_timeout)
    }

    /// `PermitTtl` as a duration (the spec must be valid).
    pub fn permit_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.permit_ttl)
    }

    /// `Window` as a duration; `None` when there is no window.
    pub fn window(&self) -> Option<Duration> {
        (self.window > 0.0).then(|| Duration::from_secs_f64(self.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_json_is_pascal_case() {
        let s = Spec::default();
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"FailureThreshold":5,"FailureRate":null,"Window":0.0,"MinimumCalls":10,"SuccessThreshold":1,"HalfOpenMaxProbes":1,"OpenTimeout":60.0,"PermitTtl":30.0}"#
        );
        let partial: Spec = serde_json::from_str(r#"{"FailureThreshold": 3, "OpenTimeout": 0.5}"#).unwrap();
        assert_eq!(partial.failure_threshold, 3);
        assert_eq!(partial.open_timeout(), Duration::from_millis(500));
        assert_eq!(partial.permit_ttl, 30.0);
        let wire = postcard::to_stdvec(&partial).unwrap();
        assert_eq!(postcard::from_bytes::<Spec>(&wire).unwrap(), partial);
        let err = serde_json::from_str::<Spec>(r#"{"FailureTreshold": 3}"#).unwrap_err();
        assert!(err.to_string().contains("FailureTreshold"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: Vec<(Spec, &str)> = vec![
            (
                Spec {
                    failure_threshold: 0,
                    ..Spec::default()
                },
                "FailureThreshold = 0",
            ),
            (
                Spec {
                    success_threshold: 0,
                    ..Spec::default()
                },
                "SuccessThreshold = 0",
            ),
            (
                Spec {
                    half_open_max_probes: 0,
                    ..Spec::default()
                },
                "HalfOpenMaxProbes = 0",
            ),
            (
                Spec {
                    minimum_calls: 0,
                    ..Spec::default()
                },
                "MinimumCalls = 0",
            ),
            (
                Spec {
                    open_timeout: 0.0,
                    ..Spec::default()
                },
                "OpenTimeout = 0",
            ),
            (
                Spec {
                    open_timeout: f64::NAN,
                    ..Spec::default()
                },
                "OpenTimeout = NaN",
            ),
            (
                Spec {
                    open_timeout: 1e12,
                    ..Spec::default()
                },
                "OpenTimeout = 1000000000000",
            ),
            (
                Spec {
                    permit_ttl: -1.0,
                    ..Spec::default()
                },
                "PermitTtl = -1",
            ),
            (
                Spec {
                    window: -2.0,
                    ..Spec::default()
                },
                "Window = -2",
            ),
            (
                Spec {
                    failure_rate: Some(1.5),
                    ..Spec::default()
                },
                "FailureRate = 1.5",
            ),
            (
                Spec {
                    failure_rate: Some(0.0),
                    ..Spec::default()
                },
                "FailureRate = 0",
            ),
        ];
        for (spec, want) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("bad breaker spec: {want}:")), "{err}");
        }
        assert_eq!(Spec::default().window(), None);
        let w = Spec {
            window: 2.0,
            failure_rate: Some(0.5),
            ..Spec::default()
        };
        w.validate().unwrap();
        assert_eq!(w.window(), Some(Duration::from_secs(2)));
    }
}
