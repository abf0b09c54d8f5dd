//! The breaker over a real `redis-server` (started per test on a loopback
//! port): the issue's concurrency cases, the failure policies, the CLI, and
//! the store driven side by side with the pure core.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use circuit_breaker::{Breakers, Limits};
use circuit_client::{
    Admission, BreakerSpec, BreakerState, Called, ErrorKind, FailurePolicy, Outcome, Permit, Recorded, RedisBreaker,
    Rejection, Transition,
};
use common::redis::{RedisServer, code, free_port};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn spec(f: impl FnOnce(&mut BreakerSpec)) -> BreakerSpec {
    let mut s = BreakerSpec::default();
    f(&mut s);
    s
}

async fn permit(b: &RedisBreaker, key: &str) -> Permit {
    match b.allow(key).await.unwrap() {
        Admission::Permit(p) => p,
        other => panic!("expected a permit, got {other:?}"),
    }
}

#[test]
fn concurrent_failures_are_counted_exactly() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| s.failure_threshold = 1_000_000);
        RedisBreaker::make(&redis.url(), "exact", s).await.unwrap();
        // 10 clients (each its own connection) × 30 failures, all at once:
        // circuitry's read-modify-write kept 1 of 50.
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let b = RedisBreaker::new(&redis.url(), "exact").unwrap();
            tasks.push(tokio::spawn(async move {
                for _ in 0..30 {
                    let p = permit(&b, "tenant").await;
                    assert_eq!(b.record(&p, Outcome::Failure).await.unwrap(), Recorded::Counted);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
        }
        let b = RedisBreaker::new(&redis.url(), "exact").unwrap();
        let snap = b.snapshot("tenant").await.unwrap().unwrap();
        assert_eq!(snap.counts.failures, 300, "{snap:?}");
        assert_eq!(snap.counts.requests, 300);
        assert_eq!(snap.counts.consecutive_failures, 300);
        assert_eq!(
            (snap.state, snap.generation, snap.permits_in_flight),
            (BreakerState::Closed, 0, 0)
        );
    });
}

#[test]
fn concurrent_allows_in_half_open_admit_exactly_max_probes() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| {
            s.half_open_max_probes = 3;
            s.open_timeout = 0.3;
        });
        let opener = RedisBreaker::make(&redis.url(), "probes", s).await.unwrap();
        assert!(opener.open("k").await.unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        // 24 clients ask at once: exactly 3 probes, and the open →
        // half-open transition is made (and seen) once.
        let seen = Arc::new(Mutex::new(Vec::<Transition>::new()));
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let seen = seen.clone();
            let b = RedisBreaker::new(&redis.url(), "probes")
                .unwrap()
                .on_transition(move |t| seen.lock().unwrap().push(t.clone()));
            tasks.push(tokio::spawn(async move { b.allow("k").await.unwrap() }));
        }
        let mut admitted = 0;
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                Admission::Permit(p) => {
                    assert_eq!(p.generation, 2);
                    admitted += 1
                }
                Admission::Rejected(Rejection::HalfOpenFull { retry_after }) => {
                    assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
                    full += 1
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((admitted, full), (3, 21));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            (seen[0].from, seen[0].to, seen[0].generation),
            (BreakerState::Open, BreakerState::HalfOpen, 2)
        );
        let snap = opener.snapshot("k").await.unwrap().unwrap();
        assert_eq!(
            (snap.state, snap.probes_in_flight, snap.permits_in_flight),
            (BreakerState::HalfOpen, 3, 3)
        );
    });
}

#[test]
fn an_abandoned_probe_frees_its_slot_at_its_lease_end() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| {
            s.open_timeout = 1.0;
            s.permit_ttl = 1.0;
        });
        let b = RedisBreaker::make(&redis.url(), "lease", s).await.unwrap();
        b.open("k").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let given = Instant::now();
        let probe = permit(&b, "k").await;
        // Its holder vanishes. The slot is taken until the lease ends.
        let Admission::Rejected(Rejection::HalfOpenFull { retry_after }) = b.allow("k").await.unwrap() else {
            panic!("slot should be taken")
        };
        assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        tokio::time::sleep(Duration::from_millis(1100).saturating_sub(given.elapsed())).await;
        // The lost probe counted as a failure: open again, a generation on.
        let snap = b.snapshot("k").await.unwrap().unwrap();
        assert_eq!((snap.state, snap.generation), (BreakerState::Open, 3), "{snap:?}");
        assert_eq!((snap.probes_in_flight, snap.permits_in_flight), (0, 0));
        // Its late record is not counted.
        assert_eq!(b.record(&probe, Outcome::Success).await.unwrap(), Recorded::Unknown);
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let p = permit(&b, "k").await;
        assert_eq!(p.generation, 4);
        assert_eq!(b.record(&p, Outcome::Success).await.unwrap(), Recorded::Counted);
        assert_eq!(b.snapshot("k").await.unwrap().unwrap().state, BreakerState::Closed);
    });
}

#[test]
fn late_and_repeated_records_are_ignored() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let b = RedisBreaker::make(&redis.url(), "late", spec(|s| s.failure_threshold = 2))
            .await
            .unwrap();
        let old = permit(&b, "k").await;
        let ok = permit(&b, "k").await;
        assert_eq!(b.record(&ok, Outcome::Success).await.unwrap(), Recorded::Counted);
        // A retried record of the same permit counts nothing twice.
        assert_eq!(b.record(&ok, Outcome::Success).await.unwrap(), Recorded::Unknown);
        assert!(b.reset("k").await.unwrap());
        assert_eq!(
            b.record(&old, Outcome::Failure).await.unwrap(),
            Recorded::Stale {
                generation: 0,
                current: 1
            }
        );
        assert_eq!(b.record(&old, Outcome::Failure).await.unwrap(), Recorded::Unknown);
        // A forged generation finds no permit.
        let p = permit(&b, "k").await;
        let forged = Permit {
            generation: p.generation + 5,
            ..p.clone()
        };
        assert_eq!(b.record(&forged, Outcome::Failure).await.unwrap(), Recorded::Unknown);
        let snap = b.snapshot("k").await.unwrap().unwrap();
        assert_eq!(
            (snap.generation, snap.counts.requests, snap.permits_in_flight),
            (1, 0, 1)
        );
        assert_eq!(b.record(&p, Outcome::Excluded).await.unwrap(), Recorded::Counted);
        let snap = b.snapshot("k").await.unwrap().unwrap();
        assert_eq!(
            (snap.counts.requests, snap.counts.excluded, snap.permits_in_flight),
            (0, 1, 0)
        );
        // Unknown keys: nothing to reset or close.
        assert!(!b.reset("never").await.unwrap());
        assert!(!b.close("never").await.unwrap());
        assert!(b.snapshot("never").await.unwrap().is_none());
    });
}

#[test]
fn open_survives_a_new_client_and_is_kept_past_its_expiry() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| {
            s.failure_threshold = 2;
            s.open_timeout = 600.0;
        });
        let a = RedisBreaker::make(&redis.url(), "keep", s)
            .await
            .unwrap()
            .with_idle_ttl(Duration::from_secs(5));
        for _ in 0..2 {
            let p = permit(&a, "t").await;
            a.record(&p, Outcome::Failure).await.unwrap();
        }
        drop(a);
        let b = RedisBreaker::new(&redis.url(), "keep")
            .unwrap()
            .with_idle_ttl(Duration::from_secs(5));
        let Admission::Rejected(Rejection::Open { retry_after }) = b.allow("t").await.unwrap() else {
            panic!("a new client must see it open")
        };
        assert!(retry_after > Duration::from_secs(590) && retry_after <= Duration::from_secs(600));
        // Its state is kept at least until the open timeout ends, whatever
        // the idle time: no TTL turns an open key into a fresh closed one.
        let [state, _, _] = b.key_layout("t");
        let pttl: i64 = redis.cli(&["PTTL", &state]).parse().unwrap();
        assert!(pttl > 590_000, "PTTL {pttl}");
        // An idle closed key is forgotten after the idle time (here 5 s):
        // its entries carry that expiry, no more.
        let p = permit(&b, "idle").await;
        b.record(&p, Outcome::Success).await.unwrap();
        let [idle_state, idle_permits, _] = b.key_layout("idle");
        let pttl: i64 = redis.cli(&["PTTL", &idle_state]).parse().unwrap();
        assert!(pttl > 0 && pttl <= 5_000, "PTTL {pttl}");
        assert_eq!(redis.cli(&["EXISTS", &idle_permits]), "0", "no permit left behind");
        // The spec itself never expires.
        assert_eq!(redis.cli(&["PTTL", &b.spec_key()]), "-1");
        assert_eq!(b.spec().await.unwrap().open_timeout, 600.0);
    });
}

#[test]
fn an_unreachable_redis_gets_the_chosen_policy() {
    rt().block_on(async {
        let url = format!("redis://127.0.0.1:{}", free_port());
        let ran = Arc::new(AtomicUsize::new(0));
        let work = |ran: Arc<AtomicUsize>| async move {
            ran.fetch_add(1, Ordering::SeqCst);
            7
        };
        let closed = RedisBreaker::new(&url, "gone").unwrap();
        let c = closed.call("k", work(ran.clone()), |_| Outcome::Success).await.unwrap();
        assert!(matches!(c, Called::FailedClosed(_)), "{c:?}");
        assert_eq!(c.policy_applied(), Some(FailurePolicy::FailClosed));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        let open = closed.clone().with_policy(FailurePolicy::FailOpen);
        let c = open.call("k", work(ran.clone()), |_| Outcome::Success).await.unwrap();
        let Called::RanFailOpen { value: 7, error, .. } = &c else {
            panic!("{c:?}")
        };
        assert!(error.to_string().contains(&url), "{error}");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // A server that accepts but never answers: unreachable after the
        // handle's timeout, not a hang.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let b = RedisBreaker::new(&url, "mute")
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let t0 = Instant::now();
        let a = b.allow("k").await.unwrap();
        assert!(
            matches!(
                a,
                Admission::Unreachable {
                    policy: FailurePolicy::FailClosed,
                    ..
                }
            ),
            "{a:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    });
}

#[test]
fn a_redis_that_dies_and_returns_is_answered_by_policy_then_used_again() {
    let Some(mut redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let b = RedisBreaker::make(&redis.url(), "phoenix", BreakerSpec::default())
            .await
            .unwrap()
            .with_policy(FailurePolicy::FailOpen);
        let p = permit(&b, "k").await;
        redis.kill();
        let a = b.allow("k").await.unwrap();
        assert!(
            matches!(
                a,
                Admission::Unreachable {
                    policy: FailurePolicy::FailOpen,
                    ..
                }
            ),
            "{a:?}"
        );
        assert!(a.admitted());
        // A record that cannot reach the server is an error (its permit
        // would expire there).
        let e = b.record(&p, Outcome::Success).await.unwrap_err();
        assert!(circuit_client::is_unreachable(&e), "{e}");
        // Back on the same port (empty: it kept nothing): the same handle
        // reconnects, and finds no breaker until it is made again.
        let port = redis.port;
        let mut back = None;
        assert!(common::eventually(Duration::from_secs(10), || {
            back = RedisServer::start_on(port);
            back.is_some()
        }));
        let back = back.unwrap();
        let mut found = None;
        for _ in 0..50 {
            match b.allow("k").await {
                Err(e) => {
                    found = Some(e);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(found.expect("reconnected").kind(), Some(ErrorKind::NotFound));
        RedisBreaker::make(&back.url(), "phoenix", BreakerSpec::default())
            .await
            .unwrap();
        assert!(b.allow("k").await.unwrap().permit().is_some());
    });
}

#[test]
fn bad_specs_and_unknown_breakers_are_refused() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let e = RedisBreaker::make(&redis.url(), "bad", spec(|s| s.failure_threshold = 0))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad breaker spec: FailureThreshold = 0: must be an integer from 1 to 1000000"
        );
        assert_eq!(redis.cli(&["EXISTS", "circuit:breaker:{bad}:spec"]), "0");
        let b = RedisBreaker::new(&redis.url(), "nobody").unwrap();
        let e = b.allow("k").await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
        assert!(e.to_string().contains("no breaker \"nobody\""), "{e}");
        assert!(RedisBreaker::new(&redis.url(), "a b").is_err());
        let long = "k".repeat(2000);
        let a = b.allow(&long).await.unwrap();
        assert!(
            matches!(a, Admission::Rejected(Rejection::KeyTooLong { len: 2000, .. })),
            "{a:?}"
        );
    });
}

/// A small deterministic generator (xorshift64*), so a failing sequence
/// can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Drives the core (`Breakers`, on a manual clock) and the Redis store with
/// the same random operations and compares every answer and every key's
/// state and transitions. Time-dependent steps are made to agree by the
/// spec: either the open timeout is far beyond the run (never half-open
/// except through time the run does not take), or it is 1 ms and the core
/// clock and the real one both pass it between operations. Leases are far
/// beyond the run, so no permit expires in either.
async fn compare(url: &str, name: &str, seed: u64, open_timeout: f64, window: f64) {
    let s = spec(|s| {
        s.window = window;
        s.failure_threshold = 3;
        s.success_threshold = 2;
        s.half_open_max_probes = 2;
        s.open_timeout = open_timeout;
        s.permit_ttl = 100_000.0;
        s.failure_rate = Some(0.6);
        s.minimum_calls = 4;
    });
    let seen = Arc::new(Mutex::new(Vec::<Transition>::new()));
    let sink = seen.clone();
    let redis = RedisBreaker::make(url, name, s.clone())
        .await
        .unwrap()
        .on_transition(move |t| sink.lock().unwrap().push(t.clone()));
    let mut core = Breakers::new(s, Limits::default());
    let mut core_seen = Vec::new();
    let mut now = Duration::ZERO;
    let keys = ["a", "b"];
    // Permits in flight: (core's, Redis's), and recorded ones (for stale
    // and repeated records).
    let mut live: Vec<(Permit, Permit)> = Vec::new();
    let mut done: Vec<(Permit, Permit)> = Vec::new();
    let mut rng = Rng(seed);
    for step in 0..300 {
        now += Duration::from_secs(1);
        if open_timeout < 1.0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        core_seen.extend(core.expire(now).transitions);
        let key = keys[rng.below(2) as usize];
        let what = rng.below(100);
        let ctx = format!("seed {seed} timeout {open_timeout} window {window} step {step} op {what} key {key}");
        match what {
            0..=39 => {
                let c = core.allow(key, now);
                core_seen.extend(c.transitions);
                let r = redis.allow(key).await.unwrap();
                match (c.value, r) {
                    (Ok(cp), Admission::Permit(rp)) => {
                        assert_eq!(cp.generation, rp.generation, "{ctx}");
                        live.push((cp, rp));
                    }
                    (Err(Rejection::Open { .. }), Admission::Rejected(Rejection::Open { .. })) => {}
                    (Err(Rejection::HalfOpenFull { .. }), Admission::Rejected(Rejection::HalfOpenFull { .. })) => {}
                    (c, r) => panic!("{ctx}: core {c:?}, redis {r:?}"),
                }
            }
            40..=84 if !live.is_empty() => {
                let (cp, rp) = live.swap_remove(rng.below(live.len() as u64) as usize);
                let outcome = match rng.below(10) {
                    0..=4 => Outcome::Failure,
                    5..=8 => Outcome::Success,
                    _ => Outcome::Excluded,
                };
                let c = core.record(cp.id, outcome, now);
                core_seen.extend(c.transitions);
                let r = redis.record(&rp, outcome).await.unwrap();
                assert_eq!(c.value, r, "{ctx}");
                done.push((cp, rp));
            }
            85..=89 if !done.is_empty() => {
                let (cp, rp) = &done[rng.below(done.len() as u64) as usize];
                let c = core.record(cp.id, Outcome::Failure, now);
                core_seen.extend(c.transitions);
                assert_eq!(c.value, redis.record(rp, Outcome::Failure).await.unwrap(), "{ctx}");
            }
            90..=92 => {
                let c = core.reset(key, now);
                core_seen.extend(c.transitions);
                assert_eq!(c.value, redis.reset(key).await.unwrap(), "{ctx}");
            }
            93..=95 => {
                let c = core.force_open(key, now);
                core_seen.extend(c.transitions);
                c.value.unwrap();
                assert!(redis.open(key).await.unwrap(), "{ctx}");
            }
            96..=99 => {
                let c = core.force_close(key, now);
                core_seen.extend(c.transitions);
                assert_eq!(c.value, redis.close(key).await.unwrap(), "{ctx}");
            }
            _ => {}
        }
        // A transition to open made by the operation has passed its
        // timeout on both clocks before the states are compared.
        now += Duration::from_secs(1);
        if open_timeout < 1.0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for k in keys {
            core_seen.extend(core.expire(now).transitions);
            let c = core.snapshot(k, now);
            let r = redis.snapshot(k).await.unwrap();
            match (c, r) {
                (None, None) => {}
                (Some(c), Some(r)) => {
                    let view = |s: &circuit_client::KeySnapshot| {
                        (s.state, s.generation, s.counts, s.probes_in_flight, s.permits_in_flight)
                    };
                    assert_eq!(view(&c), view(&r), "{ctx}: key {k}");
                }
                (c, r) => panic!("{ctx}: key {k}: core {c:?}, redis {r:?}"),
            }
        }
    }
    let mut redis_seen = seen.lock().unwrap().clone();
    core_seen.sort_by(|a, b| (&a.key, a.generation).cmp(&(&b.key, b.generation)));
    redis_seen.sort_by(|a, b| (&a.key, a.generation).cmp(&(&b.key, b.generation)));
    assert!(
        core_seen.len() > 10,
        "seed {seed}: too few transitions to mean much: {core_seen:?}"
    );
    assert_eq!(core_seen, redis_seen, "seed {seed}");
}

#[test]
fn the_store_matches_the_core_step_by_step() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        for seed in [1u64, 0x9e37_79b9, 42_424_242] {
            compare(&redis.url(), &format!("slow-{seed}"), seed, 100_000.0, 0.0).await;
            compare(&redis.url(), &format!("fast-{seed}"), seed, 0.001, 0.0).await;
            // A 1 ms window has ended at every step on both clocks: counts
            // are cleared before each outcome, and shown as zero once over.
            compare(&redis.url(), &format!("window-{seed}"), seed, 0.001, 0.001).await;
        }
    });
}

#[test]
fn transitions_are_published_once_each() {
    let Some(redis) = RedisServer::start() else { return };
    // A subscriber started before the trip (bounded by `timeout`).
    let mut sub = std::process::Command::new("timeout")
        .args([
            "20",
            "redis-cli",
            "-p",
            &redis.port.to_string(),
            "SUBSCRIBE",
            "circuit:breaker:pub",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with('{') && tx.send(line).is_err() {
                return;
            }
        }
    });
    assert!(common::eventually(Duration::from_secs(5), || {
        redis.cli(&["PUBSUB", "NUMSUB", "circuit:breaker:pub"]).ends_with('1')
    }));
    rt().block_on(async {
        let s = spec(|s| {
            s.failure_threshold = 1;
            s.open_timeout = 0.1;
        });
        let b = RedisBreaker::make(&redis.url(), "pub", s).await.unwrap();
        let p = permit(&b, "k").await;
        b.record(&p, Outcome::Failure).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Many reads after the timeout: one open → half-open.
        for _ in 0..5 {
            b.snapshot("k").await.unwrap();
        }
    });
    // Two events, and no third in the next half second.
    let mut events = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while events.len() < 2
        && let Ok(e) = rx.recv_timeout(end.saturating_duration_since(Instant::now()))
    {
        events.push(e);
    }
    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(500)) {
        events.push(extra);
    }
    // SIGTERM: `timeout` passes it on to redis-cli.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sub.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sub.wait();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].contains(r#""From":"closed""#) && events[0].contains(r#""To":"open""#),
        "{events:?}"
    );
    assert!(
        events[1].contains(r#""To":"half-open""#) && events[1].contains(r#""Generation":2"#),
        "{events:?}"
    );
}

#[test]
fn the_cli_makes_runs_rejects_shows_and_resets() {
    use common::{fails, ok, run_cli, stderr};
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let cli = |args: &[&str]| run_cli(args, b"", &[]);
    let spec = br#"{"failurethreshold": 2, "OpenTimeout": 30}"#;
    ok(run_cli(&["mkbreaker", "--redis", &url, "jobs"], spec, &[]));
    let e = fails(run_cli(
        &["mkbreaker", "--redis", &url, "bad"],
        br#"{"OpenTimeout": -1}"#,
        &[],
    ));
    assert!(e.contains("bad breaker spec: OpenTimeout = -1"), "{e}");
    let exec = |args: &[&str]| {
        let mut full = vec!["breaker", "exec", "--redis", &url, "jobs", "-k", "t1", "--"];
        full.extend_from_slice(args);
        run_cli(&full, b"", &[])
    };
    ok(exec(&["true"]));
    // CMD's own status comes back, and counts as a failure.
    assert_eq!(code(&exec(&["sh", "-c", "exit 3"])), 3);
    assert_eq!(code(&exec(&["false"])), 1);
    let r = exec(&["echo", "must not run"]);
    assert_eq!(code(&r), 75, "{}", stderr(&r));
    assert!(common::stdout(&r).is_empty());
    assert!(stderr(&r).contains("is open: retry after"), "{}", stderr(&r));
    // Another key is not affected.
    ok(run_cli(
        &["breaker", "exec", "--redis", &url, "jobs", "-k", "t2", "--", "true"],
        b"",
        &[],
    ));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(cli(&["breaker", "show", "--redis", &url, "jobs"]))).unwrap();
    assert_eq!(shown["Spec"]["FailureThreshold"], 2);
    let keys = shown["Keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{shown}");
    assert_eq!(
        (keys[0]["Key"].as_str(), keys[0]["State"].as_str()),
        (Some("t1"), Some("open"))
    );
    assert_eq!(keys[0]["Generation"], 1);
    assert!(keys[0]["OpenRemaining"].as_f64().unwrap() > 20.0);
    assert_eq!(keys[1]["Counts"]["Successes"], 1);
    ok(cli(&["breaker", "reset", "--redis", &url, "jobs", "-k", "t1"]));
    ok(exec(&["true"]));
    ok(cli(&["breaker", "open", "--redis", &url, "jobs", "-k", "t1"]));
    assert_eq!(code(&exec(&["true"])), 75);
    ok(cli(&["breaker", "close", "--redis", &url, "jobs", "-k", "t1"]));
    let one: serde_json::Value =
        serde_json::from_str(&ok(cli(&["breaker", "show", "--redis", &url, "jobs", "-k", "t1"]))).unwrap();
    assert_eq!(one["Keys"][0]["State"], "closed");
    assert_eq!(one["Keys"][0]["Generation"], 4);
    // Scrubbed: gone, every key with it.
    ok(cli(&["breaker", "scrub", "--redis", &url, "jobs"]));
    assert_eq!(redis.cli(&["KEYS", "circuit:breaker:{jobs}:*"]), "");
    let e = fails(cli(&["breaker", "scrub", "--redis", &url, "jobs"]));
    assert!(e.contains("no breaker \"jobs\""), "{e}");
    // Not made, a bad name, no Redis.
    let e = fails(cli(&["breaker", "exec", "--redis", &url, "nobody", "--", "true"]));
    assert!(e.contains("no breaker \"nobody\""), "{e}");
    let e = fails(cli(&["breaker", "show", "--redis", &url, "a{b}"]));
    assert!(e.contains("bad breaker name"), "{e}");
    let gone = format!("redis://127.0.0.1:{}", free_port());
    let r = cli(&["breaker", "exec", "--redis", &gone, "jobs", "--", "echo", "ran"]);
    assert_eq!(code(&r), 69, "{}", stderr(&r));
    assert!(common::stdout(&r).is_empty());
    let r = cli(&[
        "breaker",
        "exec",
        "--fail-open",
        "--redis",
        &gone,
        "jobs",
        "--",
        "echo",
        "ran",
    ]);
    assert_eq!(common::stdout(&r), "ran\n", "{}", stderr(&r));
    assert!(stderr(&r).contains("--fail-open"), "{}", stderr(&r));
}

#[test]
fn a_killed_exec_frees_its_probe_slot_at_its_lease_end() {
    use common::{ok, run_cli};
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let spec = br#"{"FailureThreshold": 1, "OpenTimeout": 0.2, "PermitTtl": 1}"#;
    ok(run_cli(&["mkbreaker", "--redis", &url, "kill"], spec, &[]));
    ok(run_cli(&["breaker", "open", "--redis", &url, "kill"], b"", &[]));
    std::thread::sleep(Duration::from_millis(300));
    // Takes the one probe slot, then is killed before it can record.
    let mut holder = std::process::Command::new(common::bin())
        .args(["breaker", "exec", "--redis", &url, "kill", "--", "sleep", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = rt();
    let b = rt.block_on(async { RedisBreaker::new(&url, "kill").unwrap() });
    let probes = |want: u32| {
        rt.block_on(async {
            b.snapshot("default")
                .await
                .unwrap()
                .is_some_and(|s| s.probes_in_flight == want)
        })
    };
    assert!(common::eventually(Duration::from_secs(10), || probes(1)));
    let taken = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let r = run_cli(&["breaker", "exec", "--redis", &url, "kill", "--", "true"], b"", &[]);
    if taken.elapsed() < Duration::from_millis(900) {
        assert_eq!(code(&r), 75, "the slot is still held");
        assert!(common::stderr(&r).contains("every probe slot is taken"));
    }
    // At its lease's end the lost probe counts as a failure (open again);
    // after the open timeout a new probe is admitted and closes it.
    assert!(common::eventually(Duration::from_secs(10), || {
        code(&run_cli(
            &["breaker", "exec", "--redis", &url, "kill", "--", "true"],
            b"",
            &[],
        )) == 0
    }));
    let s = rt.block_on(async { b.snapshot("default").await.unwrap().unwrap() });
    assert_eq!((s.state, s.generation), (BreakerState::Closed, 5), "{s:?}");
}

#[test]
fn a_closed_window_clears_its_counts_without_a_transition() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| {
            s.failure_threshold = 3;
            s.window = 0.5;
        });
        let b = RedisBreaker::make(&redis.url(), "window", s).await.unwrap();
        for _ in 0..2 {
            let p = permit(&b, "k").await;
            b.record(&p, Outcome::Failure).await.unwrap();
        }
        assert_eq!(b.snapshot("k").await.unwrap().unwrap().counts.consecutive_failures, 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The window ended: the two failures are forgotten, the generation
        // stays, and two more do not trip it.
        let snap = b.snapshot("k").await.unwrap().unwrap();
        assert_eq!((snap.counts.failures, snap.generation), (0, 0), "{snap:?}");
        for _ in 0..2 {
            let p = permit(&b, "k").await;
            b.record(&p, Outcome::Failure).await.unwrap();
        }
        let snap = b.snapshot("k").await.unwrap().unwrap();
        assert_eq!(
            (snap.state, snap.counts.failures, snap.generation),
            (BreakerState::Closed, 2, 0)
        );
    });
}

#[test]
fn a_storm_of_clients_leaves_one_chain_of_transitions_per_key() {
    let Some(redis) = RedisServer::start() else { return };
    rt().block_on(async {
        let s = spec(|s| {
            s.failure_threshold = 3;
            s.success_threshold = 2;
            s.half_open_max_probes = 2;
            s.open_timeout = 0.02;
            s.permit_ttl = 0.05;
        });
        RedisBreaker::make(&redis.url(), "storm", s).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Transition>::new()));
        let handle = |seen: &Arc<Mutex<Vec<Transition>>>| {
            let seen = seen.clone();
            RedisBreaker::new(&redis.url(), "storm")
                .unwrap()
                .on_transition(move |t| seen.lock().unwrap().push(t.clone()))
        };
        let mut tasks = Vec::new();
        for c in 0..8u64 {
            let b = handle(&seen);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x5eed + c);
                for _ in 0..150 {
                    let key = if rng.below(2) == 0 { "x" } else { "y" };
                    if let Admission::Permit(p) = b.allow(key).await.unwrap() {
                        tokio::time::sleep(Duration::from_micros(rng.below(3000))).await;
                        match rng.below(10) {
                            0 => {} // abandoned: its lease ends
                            1..=4 => {
                                b.record(&p, Outcome::Failure).await.unwrap();
                            }
                            _ => {
                                b.record(&p, Outcome::Success).await.unwrap();
                            }
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }));
        }
        // A watcher: never more probes in flight than allowed.
        let watcher = handle(&seen);
        let mut max_probes = 0;
        while !tasks.iter().all(|t| t.is_finished()) {
            for k in ["x", "y"] {
                if let Some(s) = watcher.snapshot(k).await.unwrap() {
                    max_probes = max_probes.max(s.probes_in_flight);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(max_probes <= 2, "{max_probes} probes in flight");
        let x = watcher.snapshot("x").await.unwrap().unwrap();
        let y = watcher.snapshot("y").await.unwrap().unwrap();
        let seen = seen.lock().unwrap().clone();
        for (k, last) in [("x", x), ("y", y)] {
            let mut chain: Vec<&Transition> = seen.iter().filter(|t| t.key == k).collect();
            chain.sort_by_key(|t| t.generation);
            assert!(chain.len() >= 3, "key {k}: too calm a storm: {chain:?}");
            // Every generation made once, by exactly one client, each from
            // the state the previous one entered.
            for (i, t) in chain.iter().enumerate() {
                assert_eq!(t.generation, i as u64 + 1, "key {k}: {chain:?}");
                let from = if i == 0 { BreakerState::Closed } else { chain[i - 1].to };
                assert_eq!(t.from, from, "key {k}: {chain:?}");
            }
            let end = chain.last().unwrap();
            assert_eq!((last.generation, last.state), (end.generation, end.to), "key {k}");
        }
    });
}

#[test]
fn completions_offer_redis_for_the_breaker_commands() {
    let script = common::ok(common::run_cli(&["completions", "bash"], b"", &[]));
    // clap_complete names each subcommand's case `circuit__subcmd__A__subcmd__B)`,
    // followed by the line listing its options.
    let opts = |case: &str| -> String {
        let mut lines = script.lines();
        lines
            .find(|l| l.trim() == format!("{case})"))
            .unwrap_or_else(|| panic!("no case {case} in the bash script"));
        lines.next().unwrap_or_default().to_string()
    };
    for case in [
        "circuit__subcmd__breaker__subcmd__exec",
        "circuit__subcmd__breaker__subcmd__reset",
        "circuit__subcmd__breaker__subcmd__show",
        "circuit__subcmd__mkbreaker",
    ] {
        let line = opts(case);
        assert!(line.contains("opts=") && line.contains("--redis"), "{case}: {line}");
    }
    // Other commands do not take it.
    assert!(!opts("circuit__subcmd__peek").contains("--redis"));
    let help = common::ok(common::run_cli(&["breaker", "exec", "--help"], b"", &[]));
    assert!(
        help.contains("--redis <URL>") && help.contains("circuit breaker exec --redis"),
        "{help}"
    );
}

#[test]
fn a_bad_redis_url_or_name_is_a_one_line_error_and_nothing_runs() {
    use common::{fails, run_cli};
    let tmp = common::TempDir::new("redis-bad");
    let marker = tmp.0.join("ran");
    let touch = marker.to_str().unwrap();
    let url = format!("redis://127.0.0.1:{}", free_port());
    for (args, want) in [
        (
            vec!["breaker", "exec", "--redis", "http://h:1", "jobs", "--", "touch", touch],
            "bad Redis URL",
        ),
        (
            vec!["breaker", "exec", "--redis", &url, "a{b}", "--", "touch", touch],
            "bad breaker name \"a{b}\"",
        ),
        (vec!["mkbreaker", "--redis", "nonsense", "jobs"], "bad Redis URL"),
        (
            vec!["breaker", "reset", "--redis", &url, "bad name"],
            "bad breaker name",
        ),
        (vec!["breaker", "scrub", "--redis", &url, ""], "bad breaker name"),
        // The dial flags are for a cluster.
        (
            vec![
                "-d",
                "circuit://127.0.0.1:1/1/X0000000000000001",
                "breaker",
                "exec",
                "--redis",
                &url,
                "jobs",
                "--",
                "touch",
                touch,
            ],
            "-d/--dial dials a cluster: it cannot be used with --redis",
        ),
        // Without --redis, TARGET is a path.
        (
            vec!["breaker", "exec", "jobs", "--", "touch", touch],
            "bad path \"jobs\"",
        ),
    ] {
        let e = fails(run_cli(&args, b"{}", &[]));
        assert!(e.starts_with("circuit: ") && e.contains(want), "{args:?}: {e}");
    }
    assert!(!marker.exists(), "CMD ran");
}
