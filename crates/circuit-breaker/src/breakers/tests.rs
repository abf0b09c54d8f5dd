//! The policy on a manual clock. The first cases are circuitry's own
//! (`circuitry_test.go`), ported; its two that enshrine its bugs are
//! inverted.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn spec(failures: u32, successes: u32, open_ms: u64) -> Spec {
    Spec {
        failure_threshold: failures,
        success_threshold: successes,
        open_timeout: open_ms as f64 / 1000.0,
        ..Spec::default()
    }
}

fn breakers(s: Spec) -> Breakers {
    s.validate().unwrap();
    Breakers::new(s, Limits::default())
}

/// One call: allow then record; panics if not admitted.
fn call(b: &mut Breakers, key: &str, outcome: Outcome, now: Duration) -> Vec<Transition> {
    let a = b.allow(key, now);
    let p = a.value.unwrap_or_else(|r| panic!("{key} refused at {now:?}: {r}"));
    let r = b.record(p.id, outcome, now);
    assert_eq!(r.value, Recorded::Counted);
    let mut t = a.transitions;
    t.extend(r.transitions);
    t
}

fn state(b: &Breakers, key: &str, now: Duration) -> KeySnapshot {
    b.snapshot(key, now).expect("key exists")
}

#[test]
fn name_and_tenant_keys_are_independent() {
    let mut b = breakers(spec(2, 1, 1000));
    let t0 = ms(0);
    let a = "example::20b60248-ec14-4c2c-a86f-ad3fbd6fac54";
    let z = "example::other-tenant";
    assert!(b.snapshot(a, t0).is_none(), "keys are created on first use only");
    call(&mut b, a, Outcome::Failure, t0);
    let t = call(&mut b, a, Outcome::Failure, t0);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].key, a);
    assert_eq!(state(&b, a, t0).state, State::Open);
    // The other tenant is untouched and still admitted.
    call(&mut b, z, Outcome::Success, t0);
    assert_eq!(state(&b, z, t0).state, State::Closed);
    assert_eq!(state(&b, z, t0).generation, 0);
    assert_eq!(b.len(), 2);
}

#[test]
fn success_counting() {
    let mut b = breakers(spec(10, 5, 1000));
    for i in 0..20u64 {
        assert!(call(&mut b, "name", Outcome::Success, ms(i)).is_empty());
        let s = state(&b, "name", ms(i));
        assert_eq!(s.state, State::Closed);
        assert_eq!(s.counts.requests, i + 1);
        assert_eq!(s.counts.successes, i + 1);
        assert_eq!(s.counts.consecutive_successes, i + 1);
    }
}

#[test]
fn opening_at_the_threshold() {
    let mut b = breakers(spec(10, 5, 5 * 60 * 1000));
    for i in 0..9u64 {
        assert!(call(&mut b, "name", Outcome::Failure, ms(i)).is_empty());
        let s = state(&b, "name", ms(i));
        assert_eq!(s.state, State::Closed);
        assert_eq!(
            (s.counts.requests, s.counts.failures, s.counts.consecutive_failures),
            (i + 1, i + 1, i + 1)
        );
    }
    let t = call(&mut b, "name", Outcome::Failure, ms(9));
    assert_eq!(
        t,
        vec![Transition {
            key: "name".into(),
            from: State::Closed,
            to: State::Open,
            generation: 1
        }]
    );
    let s = state(&b, "name", ms(9));
    assert_eq!(s.state, State::Open);
    assert_eq!(s.generation, 1);
    assert_eq!(s.counts, Counts::default(), "a transition clears the counts");
    let r = b.allow("name", ms(10));
    assert_eq!(
        r.value,
        Err(Rejection::Open {
            retry_after: secs(300) - ms(1)
        })
    );
    assert!(r.transitions.is_empty());
}

#[test]
fn half_open_to_closed() {
    let mut b = breakers(spec(1, 2, 5));
    call(&mut b, "k", Outcome::Failure, ms(0));
    assert_eq!(state(&b, "k", ms(0)).state, State::Open);
    // Reading never moves the state: still open (remaining 0) until an
    // allow or expire stores the transition.
    let s = state(&b, "k", ms(300));
    assert_eq!((s.state, s.open_remaining), (State::Open, Some(Duration::ZERO)));
    let a = b.allow("k", ms(300));
    assert_eq!(
        a.transitions,
        vec![Transition {
            key: "k".into(),
            from: State::Open,
            to: State::HalfOpen,
            generation: 2
        }]
    );
    let p = a.value.unwrap();
    assert_eq!(p.generation, 2);
    assert_eq!(b.record(p.id, Outcome::Success, ms(301)).transitions, vec![]);
    assert_eq!(state(&b, "k", ms(301)).state, State::HalfOpen);
    let t = call(&mut b, "k", Outcome::Success, ms(302));
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to, t[0].generation),
        (State::HalfOpen, State::Closed, 3)
    );
    assert_eq!(state(&b, "k", ms(302)).state, State::Closed);
}

#[test]
fn cyclic_clearing_of_counts() {
    let s = Spec {
        window: 0.005,
        ..spec(3, 2, 1000)
    };
    let mut b = breakers(s);
    call(&mut b, "k", Outcome::Failure, ms(0));
    call(&mut b, "k", Outcome::Failure, ms(1));
    assert_eq!(state(&b, "k", ms(1)).counts.failures, 2);
    // After the window the counts are clear: two more failures do not trip.
    assert_eq!(state(&b, "k", ms(100)).counts, Counts::default());
    call(&mut b, "k", Outcome::Failure, ms(100));
    call(&mut b, "k", Outcome::Failure, ms(101));
    let s = state(&b, "k", ms(101));
    assert_eq!((s.state, s.counts.failures), (State::Closed, 2));
    // Clearing is not a transition: the generation stays, no event.
    assert_eq!(s.generation, 0);
    // Within one window the threshold trips.
    let t = call(&mut b, "k", Outcome::Failure, ms(102));
    assert_eq!(t.len(), 1);
}

/// circuitry's TestHalfOpenToOpen expects the generation NOT to change on
/// half-open → open; here it must.
#[test]
fn half_open_to_open_increases_the_generation() {
    let mut b = breakers(spec(1, 2, 5));
    call(&mut b, "k", Outcome::Failure, ms(0));
    let p = b.allow("k", ms(300)).value.unwrap();
    let half = state(&b, "k", ms(300)).generation;
    assert_eq!(b.record(p.id, Outcome::Success, ms(300)).value, Recorded::Counted);
    let t = call(&mut b, "k", Outcome::Failure, ms(301));
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].from, t[0].to), (State::HalfOpen, State::Open));
    let s = state(&b, "k", ms(301));
    assert_eq!(s.state, State::Open);
    assert_eq!(s.generation, half + 1);
    assert_eq!(s.counts, Counts::default());
}

/// circuitry's TestTooManyRequestsInHalfOpen expects "too many requests"
/// after half-open → open → timeout; here a probe is admitted again.
#[test]
fn after_the_timeout_a_probe_is_admitted_again() {
    let s = Spec {
        window: 0.05,
        ..spec(1, 2, 50)
    };
    let mut b = breakers(s);
    call(&mut b, "k", Outcome::Failure, ms(0));
    assert!(matches!(b.allow("k", ms(1)).value, Err(Rejection::Open { .. })));
    // Half-open: one success, then a failure re-opens it.
    call(&mut b, "k", Outcome::Success, ms(100));
    call(&mut b, "k", Outcome::Failure, ms(101));
    assert_eq!(state(&b, "k", ms(101)).state, State::Open);
    // After the timeout a probe is admitted, and its success counts.
    let a = b.allow("k", ms(200));
    assert_eq!(a.transitions.len(), 1);
    let p = a.value.expect("a probe is admitted after the timeout");
    assert_eq!(b.record(p.id, Outcome::Success, ms(201)).value, Recorded::Counted);
    call(&mut b, "k", Outcome::Success, ms(202));
    assert_eq!(state(&b, "k", ms(202)).state, State::Closed);
}

#[test]
fn every_outcome_counts_exactly_once() {
    let mut b = breakers(spec(3, 1, 1000));
    let p = b.allow("k", ms(0)).value.unwrap();
    let q = b.allow("k", ms(0)).value.unwrap();
    assert_ne!(p.id, q.id);
    assert_eq!(b.record(p.id, Outcome::Failure, ms(1)).value, Recorded::Counted);
    for _ in 0..5 {
        assert_eq!(b.record(p.id, Outcome::Failure, ms(2)).value, Recorded::Unknown);
    }
    assert_eq!(b.record_permit(&q, Outcome::Failure, ms(3)).value, Recorded::Counted);
    let s = state(&b, "k", ms(3));
    assert_eq!((s.state, s.counts.failures, s.permits_in_flight), (State::Closed, 2, 0));
    assert_eq!(b.record(9999, Outcome::Failure, ms(3)).value, Recorded::Unknown);
    assert_eq!(state(&b, "k", ms(3)).counts.failures, 2);
}

#[test]
fn k_allows_in_half_open_admit_exactly_the_probes() {
    let s = Spec {
        half_open_max_probes: 3,
        success_threshold: 3,
        permit_ttl: 10.0,
        ..spec(1, 3, 1000)
    };
    let mut b = breakers(s);
    call(&mut b, "k", Outcome::Failure, ms(0));
    let mut admitted = vec![];
    let mut full = 0;
    let mut transitions = 0;
    for i in 0..10 {
        let a = b.allow("k", secs(1) + ms(i));
        transitions += a.transitions.len();
        match a.value {
            Ok(p) => admitted.push(p),
            Err(Rejection::HalfOpenFull { retry_after }) => {
                // The oldest probe's lease ends 10 s after it was given.
                assert_eq!(retry_after, secs(10) - ms(i));
                full += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((admitted.len(), full, transitions), (3, 7, 1));
    assert_eq!(state(&b, "k", secs(1)).probes_in_flight, 3);
    // An excluded probe frees its slot without counting.
    let p = admitted.pop().unwrap();
    assert_eq!(b.record(p.id, Outcome::Excluded, secs(2)).value, Recorded::Counted);
    let s = state(&b, "k", secs(2));
    assert_eq!(
        (s.state, s.probes_in_flight, s.counts.requests, s.counts.excluded),
        (State::HalfOpen, 2, 0, 1)
    );
    admitted.push(b.allow("k", secs(2)).value.unwrap());
    assert!(matches!(
        b.allow("k", secs(2)).value,
        Err(Rejection::HalfOpenFull { .. })
    ));
    // Three successes close it.
    let mut t = vec![];
    for p in &admitted {
        assert_eq!(b.record(p.id, Outcome::Success, secs(3)).value, Recorded::Counted);
        t.extend(b.record(p.id, Outcome::Success, secs(3)).transitions);
    }
    assert!(t.is_empty(), "repeated records change nothing");
    assert_eq!(state(&b, "k", secs(3)).state, State::Closed);
}

#[test]
fn a_stale_generation_record_is_ignored_and_frees_no_slot_twice() {
    let mut b = breakers(spec(1, 1, 1000));
    // A closed-state permit outlives its generation.
    let old = b.allow("k", ms(0)).value.unwrap();
    call(&mut b, "k", Outcome::Failure, ms(1));
    // Half-open probe A (the only slot), then a reset and a new open cycle.
    let a = b.allow("k", secs(2)).value.unwrap();
    assert_eq!(a.generation, 2);
    assert_eq!(b.reset("k", secs(2)).transitions.len(), 1);
    assert!(b.force_open("k", secs(2)).value.is_ok());
    let p = b.allow("k", secs(4)).value.unwrap();
    assert_eq!(p.generation, 5);
    // A's late failure is stale: the breaker stays half-open, B keeps its
    // slot (a second probe is refused).
    let r = b.record(a.id, Outcome::Failure, secs(4));
    assert_eq!(
        r.value,
        Recorded::Stale {
            generation: 2,
            current: 5
        }
    );
    assert!(r.transitions.is_empty());
    let s = state(&b, "k", secs(4));
    assert_eq!(
        (s.state, s.probes_in_flight, s.counts.requests),
        (State::HalfOpen, 1, 0)
    );
    assert!(matches!(
        b.allow("k", secs(4)).value,
        Err(Rejection::HalfOpenFull { .. })
    ));
    assert_eq!(
        b.record(old.id, Outcome::Failure, secs(4)).value,
        Recorded::Stale {
            generation: 0,
            current: 5
        }
    );
    assert_eq!(b.record(a.id, Outcome::Failure, secs(4)).value, Recorded::Unknown);
    assert_eq!(state(&b, "k", secs(4)).state, State::HalfOpen);
    let t = b.record(p.id, Outcome::Success, secs(5)).transitions;
    assert_eq!((t[0].to, t[0].generation), (State::Closed, 6));
}

#[test]
fn an_expired_probe_frees_its_slot_and_counts_as_a_failure() {
    let s = Spec {
        permit_ttl: 2.0,
        ..spec(1, 1, 1000)
    };
    let mut b = breakers(s);
    call(&mut b, "k", Outcome::Failure, ms(0));
    assert_eq!(b.next_deadline(), Some(secs(1)));
    // The timer fires: open → half-open, stored once.
    let e = b.expire(secs(1));
    assert_eq!(e.transitions.len(), 1);
    assert_eq!(e.transitions[0].to, State::HalfOpen);
    assert!(b.expire(secs(1)).transitions.is_empty());
    assert!(
        b.allow("k", secs(1)).transitions.is_empty(),
        "no second open → half-open"
    );
    // That allow took the slot; its holder dies.
    assert!(matches!(
        b.allow("k", secs(1)).value,
        Err(Rejection::HalfOpenFull { .. })
    ));
    assert_eq!(b.next_deadline(), Some(secs(3)));
    assert_eq!(b.expire(secs(3) - ms(1)).value, 0);
    let e = b.expire(secs(3));
    assert_eq!(e.value, 1);
    assert_eq!(e.transitions.len(), 1);
    assert_eq!(
        (e.transitions[0].from, e.transitions[0].to),
        (State::HalfOpen, State::Open)
    );
    // Open from the lease's end; then a new probe gets the slot.
    assert_eq!(state(&b, "k", secs(3)).open_remaining, Some(secs(1)));
    let p = b.allow("k", secs(4)).value.expect("the slot was freed");
    assert_eq!(b.record(p.id, Outcome::Success, secs(4)).value, Recorded::Counted);
    assert_eq!(state(&b, "k", secs(4)).state, State::Closed);
    assert_eq!(b.permits_in_flight(), 0);
}

#[test]
fn an_expired_closed_permit_is_dropped_without_counting() {
    let mut b = breakers(Spec {
        permit_ttl: 1.0,
        ..spec(1, 1, 1000)
    });
    let p = b.allow("k", ms(0)).value.unwrap();
    let e = b.expire(secs(5));
    assert_eq!((e.value, e.transitions.len()), (1, 0));
    assert_eq!(b.record(p.id, Outcome::Failure, secs(5)).value, Recorded::Unknown);
    assert_eq!(state(&b, "k", secs(5)).state, State::Closed);
}

#[test]
fn default_settings_trip_and_recover() {
    let mut b = breakers(Spec::default());
    for i in 0..4 {
        assert!(call(&mut b, "k", Outcome::Failure, secs(i)).is_empty());
    }
    assert_eq!(call(&mut b, "k", Outcome::Failure, secs(4)).len(), 1);
    assert_eq!(
        b.allow("k", secs(64) - ms(100)).value,
        Err(Rejection::Open { retry_after: ms(100) })
    );
    let t = call(&mut b, "k", Outcome::Success, secs(64));
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!((t[0].to, t[1].to), (State::HalfOpen, State::Closed));
    call(&mut b, "k", Outcome::Success, secs(65));
    assert_eq!(state(&b, "k", secs(65)).state, State::Closed);
}

#[test]
fn failure_rate_trips_after_the_minimum_calls() {
    let mut b = breakers(Spec {
        failure_rate: Some(0.5),
        minimum_calls: 4,
        ..spec(100, 1, 1000)
    });
    call(&mut b, "k", Outcome::Failure, ms(0));
    call(&mut b, "k", Outcome::Success, ms(0));
    call(&mut b, "k", Outcome::Failure, ms(0));
    assert_eq!(state(&b, "k", ms(0)).state, State::Closed, "3 calls < minimum");
    call(&mut b, "k", Outcome::Success, ms(0));
    assert_eq!(state(&b, "k", ms(0)).state, State::Closed, "successes do not trip");
    let t = call(&mut b, "k", Outcome::Failure, ms(0));
    assert_eq!(t.len(), 1, "3 failures of 5 ≥ 0.5");
}

#[test]
fn forced_states_and_reset() {
    let mut b = breakers(spec(5, 1, 1000));
    assert!(!b.reset("k", ms(0)).value, "unknown key");
    assert!(!b.force_close("k", ms(0)).value);
    let o = b.force_open("k", ms(0));
    assert_eq!(o.value, Ok(()));
    assert_eq!(
        (o.transitions[0].from, o.transitions[0].to, o.transitions[0].generation),
        (State::Closed, State::Open, 1)
    );
    let c = b.force_close("k", ms(1));
    assert!(c.value);
    assert_eq!(c.transitions[0].to, State::Closed);
    assert_eq!(b.next_deadline(), None, "the open deadline went with it");
    call(&mut b, "k", Outcome::Failure, ms(2));
    assert!(!b.force_close("k", ms(2)).value, "closed stays as it is");
    assert_eq!(state(&b, "k", ms(2)).counts.failures, 1);
    let r = b.reset("k", ms(3));
    assert!(r.value);
    assert_eq!(
        (r.transitions[0].from, r.transitions[0].to),
        (State::Closed, State::Closed)
    );
    let s = state(&b, "k", ms(3));
    assert_eq!((s.generation, s.counts.failures), (3, 0));
}

#[test]
fn memory_is_bounded() {
    let limits = Limits {
        max_keys: 2,
        max_permits: 3,
        max_key_len: 8,
    };
    let mut b = Breakers::new(spec(5, 1, 1000), limits);
    assert_eq!(
        b.allow("123456789", ms(0)).value,
        Err(Rejection::KeyTooLong { len: 9, max: 8 })
    );
    call(&mut b, "a", Outcome::Failure, ms(0));
    call(&mut b, "b", Outcome::Failure, ms(0));
    assert_eq!(b.allow("c", ms(0)).value, Err(Rejection::TooManyKeys { max: 2 }));
    // A key with nothing to remember (closed, no failure, no permit) is
    // forgotten to make room.
    assert!(b.reset("a", secs(2)).value);
    let c = b.allow("c", secs(2)).value.expect("idle key a made room");
    assert!(b.snapshot("a", secs(2)).is_none());
    assert_eq!(b.len(), 2);
    b.allow("b", secs(2)).value.unwrap();
    b.allow("b", secs(3)).value.unwrap();
    let r = b.allow("b", secs(3)).value;
    assert_eq!(
        r,
        Err(Rejection::TooManyPermits {
            max: 3,
            retry_after: secs(29)
        })
    );
    assert!(r.unwrap_err().to_string().contains("retry after 29.000 s"));
    assert_eq!(b.record(c.id, Outcome::Success, secs(3)).value, Recorded::Counted);
    assert!(b.allow("b", secs(3)).value.is_ok());
}

#[test]
fn the_persistent_form_keeps_open_open_across_a_restart() {
    let s = Spec {
        half_open_max_probes: 2,
        ..spec(1, 2, 100_000)
    };
    let mut b = breakers(s.clone());
    call(&mut b, "open", Outcome::Failure, secs(50));
    call(&mut b, "half", Outcome::Failure, secs(0));
    let probe = b.allow("half", secs(100)).value.unwrap();
    let closed = b.allow("closed", secs(100)).value.unwrap();
    let saved = b.persist(secs(100));
    let json = serde_json::to_string(&saved).unwrap();
    let back: Persisted = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);
    // A new process: its clock's origin differs; it was down 20 s.
    let mut r = Breakers::restore(s, Limits::default(), back, secs(5), secs(20));
    let o = state(&r, "open", secs(5));
    assert_eq!(
        (o.state, o.generation, o.open_remaining),
        (State::Open, 1, Some(secs(50 - 20)))
    );
    assert!(matches!(r.allow("open", secs(34)).value, Err(Rejection::Open { .. })));
    let h = state(&r, "half", secs(5));
    assert_eq!((h.state, h.probes_in_flight), (State::HalfOpen, 1));
    // Permits survive: their records count, once; ids are not reused.
    assert_eq!(r.record(probe.id, Outcome::Success, secs(6)).value, Recorded::Counted);
    assert_eq!(r.record(probe.id, Outcome::Success, secs(6)).value, Recorded::Unknown);
    let next = r.allow("closed", secs(6)).value.unwrap();
    assert!(next.id > closed.id);
    assert_eq!(r.record(closed.id, Outcome::Failure, secs(6)).value, Recorded::Counted);
    // Open ends at its original time.
    let e = r.expire(secs(35));
    assert_eq!(e.transitions.len(), 1);
    assert_eq!(e.transitions[0].key, "open");
}

#[test]
fn a_damaged_persistent_form_cannot_overflow_anything() {
    let huge = Persisted {
        next_id: u64::MAX,
        keys: vec![PersistedKey {
            key: "k".into(),
            state: State::HalfOpen,
            generation: u64::MAX,
            counts: Counts {
                requests: u64::MAX,
                successes: u64::MAX,
                failures: u64::MAX,
                excluded: u64::MAX,
                consecutive_successes: u64::MAX,
                consecutive_failures: u64::MAX,
            },
            open_remaining: Some(Duration::MAX),
            window_remaining: Some(Duration::MAX),
        }],
        permits: vec![PersistedPermit {
            id: u64::MAX,
            key: "k".into(),
            generation: u64::MAX,
            probe: true,
            lease_remaining: Duration::MAX,
        }],
    };
    let mut b = Breakers::restore(spec(1, 1, 1000), Limits::default(), huge, secs(5), Duration::ZERO);
    assert!(b.next_deadline().unwrap() <= secs(5) + Duration::from_secs_f64(MAX_PERMIT_TTL));
    assert_eq!(b.record(u64::MAX, Outcome::Failure, secs(6)).value, Recorded::Counted);
    let s = state(&b, "k", secs(6));
    assert_eq!((s.state, s.generation), (State::Open, 0), "the generation wraps");
    let p = b.allow("other", secs(6)).value.unwrap();
    assert_eq!(p.id, u64::MAX);
    let p = b.allow("other", secs(6)).value.unwrap();
    assert_eq!(p.id, 1, "ids wrap past zero");
    assert_eq!(b.expire(Duration::MAX).value, 2);
}
