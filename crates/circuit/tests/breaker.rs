//! Breaker elements end to end: real servers as processes (several hosts in
//! network namespaces for the cluster cases), the real CLI (`mkbreaker`,
//! `breaker exec`, a `breaker exec` killed with SIGKILL) and the client
//! library. Every wait is bounded.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use circuit_client::{
    Admission, BreakerSpec, BreakerState, Called, Client, EventKind, FailurePolicy, Outcome, Path, Recorded, Rejection,
};
use common::netns::Net;
use common::{TempDir, TestServer, eventually, fails, ok, run_cli, stderr};
use serde_json::Value;

fn peek(srv: &TestServer, path: &str) -> Value {
    let out = ok(srv.cli("peek", &[path]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The state of `key` in `peek`'s JSON.
fn key_state(v: &Value, key: &str) -> Value {
    v["States"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["Key"] == key).cloned())
        .unwrap_or(Value::Null)
}

fn mkbreaker(srv: &TestServer, path: &str, spec: &str) {
    ok(srv.cli_in("mkbreaker", &[path], spec.as_bytes()));
}

/// N clients on each of three hosts, M failures each, against one breaker
/// on host 0 reached through each host's own server: every failure is
/// counted, once (circuitry stored 50 concurrent failures as 1).
#[test]
fn failures_from_many_clients_on_several_servers_count_exactly() {
    let Some(net) = Net::new(3) else { return };
    let s0 = net.start(0, 0, &[]);
    let s1 = net.start(1, 0, &["-j", &s0.url]);
    let s2 = net.start(2, 0, &["-j", &s0.url]);
    let path = format!("{}/jobs", s0.id);
    ok(net.cli_in(
        0,
        &["mkbreaker", "-d", &s0.url, &path],
        br#"{"FailureThreshold": 1000000}"#,
    ));
    for (h, s) in [&s1, &s2].into_iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || net
                .cli(h + 1, &["peek", "-d", &s.url, &path])
                .status
                .success()),
            "host {} never reached {path}",
            h + 1
        );
    }
    const CLIENTS: usize = 8;
    const FAILURES: usize = 40;
    let urls = [s0.url.clone(), s1.url.clone(), s2.url.clone()];
    let counted: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|h| {
                let (net, url, path) = (&net, urls[h].clone(), path.clone());
                scope.spawn(move || {
                    net.enter(h);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let mut tasks = Vec::new();
                        for _ in 0..CLIENTS {
                            // Each client its own connection.
                            let client = Client::dial(&url, None).await.unwrap();
                            let b = client.walk(&path).unwrap().breaker();
                            tasks.push(tokio::spawn(async move {
                                let mut counted = 0;
                                for _ in 0..FAILURES {
                                    let Admission::Permit(p) = b.allow("tenant-1").await.unwrap() else {
                                        panic!("not admitted")
                                    };
                                    if b.record(&p, Outcome::Failure).await.unwrap() == Recorded::Counted {
                                        counted += 1;
                                    }
                                }
                                counted
                            }));
                        }
                        let mut n = 0;
                        for t in tasks {
                            n += t.await.unwrap();
                        }
                        n
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = 3 * CLIENTS * FAILURES;
    assert_eq!(counted.iter().sum::<usize>(), total);
    let out = ok(net.cli(0, &["peek", "-d", &s0.url, &path]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let k = key_state(&v, "tenant-1");
    assert_eq!(k["Counts"]["Failures"], total as u64, "{k}");
    assert_eq!(k["Counts"]["Requests"], total as u64);
    assert_eq!(k["Counts"]["ConsecutiveFailures"], total as u64);
    assert_eq!(
        (k["State"].as_str(), k["PermitsInFlight"].as_u64()),
        (Some("closed"), Some(0))
    );
}

/// Many concurrent allows in half-open, on several connections, admit
/// exactly HalfOpenMaxProbes.
#[tokio::test]
async fn k_concurrent_allows_in_half_open_admit_exactly_the_probes() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    mkbreaker(
        &srv,
        &path,
        r#"{"HalfOpenMaxProbes": 3, "OpenTimeout": 0.2, "SuccessThreshold": 3}"#,
    );
    ok(srv.cli("breaker", &["open", &path, "--key", "t"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(
            Client::dial(&srv.url, None)
                .await
                .unwrap()
                .walk(&path)
                .unwrap()
                .breaker(),
        );
    }
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let b = handles[i % 4].clone();
            tokio::spawn(async move { b.allow("t").await.unwrap() })
        })
        .collect();
    let mut permits = Vec::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Admission::Permit(p) => permits.push(p),
            Admission::Rejected(Rejection::HalfOpenFull { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(30));
                full += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((permits.len(), full), (3, 37));
    assert!(permits.iter().all(|p| p.generation == 2));
    let k = key_state(&peek(&srv, &path), "t");
    assert_eq!(
        (k["State"].as_str(), k["ProbesInFlight"].as_u64()),
        (Some("half-open"), Some(3))
    );
    // Three successes close it.
    for p in &permits {
        assert_eq!(handles[0].record(p, Outcome::Success).await.unwrap(), Recorded::Counted);
    }
    let k = key_state(&peek(&srv, &path), "t");
    assert_eq!(
        (k["State"].as_str(), k["Generation"].as_u64()),
        (Some("closed"), Some(3))
    );
}

/// A `breaker exec` killed with SIGKILL while it holds the only probe:
/// the slot stays taken until the permit's lease ends, then frees (the lost
/// probe counting as a failure), and a later probe is admitted.
#[test]
fn a_killed_client_holding_a_probe_frees_the_slot_at_lease_end() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    mkbreaker(&srv, &path, r#"{"PermitTtl": 1, "OpenTimeout": 0.5}"#);
    ok(srv.cli("breaker", &["open", &path, "--key", "t"]));
    std::thread::sleep(Duration::from_millis(600));
    // The permit is given after this instant: its lease cannot end sooner
    // than a PermitTtl after it.
    let spawned = Instant::now();
    let mut exec = Command::new(common::bin())
        .args([
            "breaker", "exec", "-d", &srv.url, &path, "--key", "t", "--", "sleep", "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holding = eventually(Duration::from_secs(10), || {
        key_state(&peek(&srv, &path), "t")["ProbesInFlight"] == 1
    });
    let sleeper = common::children(exec.id() as u64);
    let _reap = common::Pids::of(sleeper.iter().map(|(p, _)| *p));
    assert!(holding, "the exec never took the probe");
    exec.kill().unwrap();
    exec.wait().unwrap();
    // The slot is still taken: a second exec is refused (75).
    let o = srv.cli("breaker", &["exec", &path, "--key", "t", "--", "true"]);
    if spawned.elapsed() < Duration::from_millis(900) {
        assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("half-open and every probe slot is taken"),
            "{}",
            stderr(&o)
        );
    }
    // At the lease's end: open again (the lost probe failed), slot free.
    assert!(eventually(Duration::from_secs(5), || {
        let k = key_state(&peek(&srv, &path), "t");
        k["State"] == "open" && k["ProbesInFlight"] == 0 && k["Generation"] == 3
    }));
    assert!(
        spawned.elapsed() >= Duration::from_secs(1),
        "freed before the lease ended"
    );
    // After the open timeout a new probe is admitted, and closes it.
    std::thread::sleep(Duration::from_millis(600));
    ok(srv.cli("breaker", &["exec", &path, "--key", "t", "--", "true"]));
    assert_eq!(key_state(&peek(&srv, &path), "t")["State"], "closed");
}

/// A record of a permit from before a reset is ignored, changes no count,
/// and a second record of one permit counts nothing.
#[tokio::test]
async fn a_late_record_from_an_old_generation_is_ignored() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    mkbreaker(&srv, &path, r#"{"FailureThreshold": 1}"#);
    let client = Client::dial(&srv.url, None).await.unwrap();
    let b = client.walk(&path).unwrap().breaker();
    let Admission::Permit(old) = b.allow("k").await.unwrap() else {
        panic!()
    };
    let Admission::Permit(fresh) = b.allow("k").await.unwrap() else {
        panic!()
    };
    ok(srv.cli("breaker", &["reset", &path, "--key", "k"]));
    assert_eq!(
        b.record(&old, Outcome::Failure).await.unwrap(),
        Recorded::Stale {
            generation: 0,
            current: 1
        }
    );
    let k = key_state(&peek(&srv, &path), "k");
    assert_eq!(
        (k["State"].as_str(), k["Counts"]["Failures"].as_u64()),
        (Some("closed"), Some(0))
    );
    let Admission::Permit(p) = b.allow("k").await.unwrap() else {
        panic!()
    };
    assert_eq!(b.record(&p, Outcome::Success).await.unwrap(), Recorded::Counted);
    assert_eq!(b.record(&p, Outcome::Failure).await.unwrap(), Recorded::Unknown);
    assert!(matches!(
        b.record(&fresh, Outcome::Failure).await.unwrap(),
        Recorded::Stale { .. }
    ));
    let k = key_state(&peek(&srv, &path), "k");
    assert_eq!(
        (k["State"].as_str(), k["Counts"]["Successes"].as_u64()),
        (Some("closed"), Some(1))
    );
    // Scrubbed under a live session: the next call is an error, not a hang
    // and not "unreachable".
    ok(srv.cli("scrub", &[&path]));
    let e = tokio::time::timeout(Duration::from_secs(10), b.allow("k"))
        .await
        .unwrap();
    let e = e.expect_err("no breaker any more");
    assert!(!circuit_client::is_unreachable(&e), "{e}");
    assert!(
        matches!(
            e.kind(),
            Some(circuit_client::ErrorKind::Aborted | circuit_client::ErrorKind::NotFound)
        ),
        "{e}"
    );
}

/// `circuit stop` then a restart with the same `--var DIR`: the breaker is
/// there again with its keys, an open one still open until its expiry; a
/// scrub removes its saved state.
#[test]
fn stop_and_restart_with_var_keeps_open_open() {
    let dir = TempDir::new("breaker-var");
    let var = dir.0.join("var");
    let var_s = var.to_str().unwrap();
    let mut a = TestServer::start(&["--var", var_s]);
    let path = format!("{}/pay", a.id);
    mkbreaker(&a, &path, r#"{"FailureThreshold": 2, "OpenTimeout": 30}"#);
    for _ in 0..2 {
        let o = a.cli("breaker", &["exec", &path, "--key", "t1", "--", "false"]);
        assert_eq!(o.status.code(), Some(1));
    }
    ok(a.cli("breaker", &["exec", &path, "--key", "t2", "--", "true"]));
    assert_eq!(key_state(&peek(&a, &path), "t1")["State"], "open");
    ok(a.cli("stop", &[&a.id]));
    assert!(a.wait_exit(Duration::from_secs(10)).is_some());

    let b = TestServer::start(&["--var", var_s]);
    let path = format!("{}/pay", b.id);
    let v = peek(&b, &path);
    assert_eq!(v["Spec"]["OpenTimeout"], 30.0);
    let t1 = key_state(&v, "t1");
    assert_eq!(
        (t1["State"].as_str(), t1["Generation"].as_u64()),
        (Some("open"), Some(1))
    );
    let left = t1["OpenRemaining"].as_f64().unwrap();
    assert!(left > 15.0 && left <= 30.0, "{left}");
    assert_eq!(key_state(&v, "t2")["Counts"]["Successes"], 1);
    let o = b.cli("breaker", &["exec", &path, "--key", "t1", "--", "true"]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("is open: retry after"), "{}", stderr(&o));
    assert!(b.log().contains("made, with its saved state"), "{}", b.log());
    // A scrub is for good: the next start has no breaker.
    ok(b.cli("scrub", &[&path]));
    assert!(!var.join("breakers/pay.json").exists());
}

/// With the server gone, `breaker exec` answers by its policy, and says so;
/// the library reports the policy it applied.
#[tokio::test]
async fn an_unreachable_server_gives_the_chosen_answer() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    mkbreaker(&srv, &path, "{}");
    let client = Client::dial(&srv.url, None).await.unwrap();
    let url = srv.url.clone();
    drop(srv);
    // The default is fail-closed: nothing runs, status 69.
    let marker = TempDir::new("breaker-ran");
    let touch = marker.0.join("ran");
    let touch_s = touch.to_str().unwrap();
    let o = run_cli(
        &["breaker", "exec", "-d", &url, &path, "--", "touch", touch_s],
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(stderr(&o).contains("--fail-closed"), "{}", stderr(&o));
    assert!(!touch.exists());
    let o = run_cli(
        &[
            "breaker",
            "exec",
            "-d",
            &url,
            &path,
            "--fail-closed",
            "--",
            "touch",
            touch_s,
        ],
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(69));
    // Fail-open: it runs, its status is passed on, and stderr says so.
    let o = run_cli(
        &[
            "breaker",
            "exec",
            "-d",
            &url,
            &path,
            "--fail-open",
            "--",
            "sh",
            "-c",
            &format!("touch {touch_s}; exit 4"),
        ],
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("anyway (--fail-open)"), "{}", stderr(&o));
    assert!(touch.exists());
    // The library, on a connection whose server died.
    let b = client.walk(&path).unwrap().breaker();
    match b.allow("k").await.unwrap() {
        Admission::Unreachable {
            policy: FailurePolicy::FailClosed,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let b = b.with_policy(FailurePolicy::FailOpen);
    let called = b.call("k", async { 5 }, |_| Outcome::Success).await.unwrap();
    assert_eq!(called.policy_applied(), Some(FailurePolicy::FailOpen));
    assert_eq!(called.value(), Some(5));
    let called = b
        .with_policy(FailurePolicy::FailClosed)
        .call("k", async { 5 }, |_| Outcome::Success)
        .await
        .unwrap();
    assert!(matches!(called, Called::FailedClosed(_)));
}

/// Bad specs are refused with one line naming the field, by the CLI and by
/// the server (a client that does not check).
#[tokio::test]
async fn bad_specs_are_refused_with_a_clear_error() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    for (spec, want) in [
        (
            r#"{"FailureThreshold": 0}"#,
            "FailureThreshold = 0: must be an integer from 1 to 1000000",
        ),
        (r#"{"HalfOpenMaxProbes": 0}"#, "HalfOpenMaxProbes = 0"),
        (r#"{"OpenTimeout": -1}"#, "OpenTimeout = -1: must be seconds above 0"),
        (r#"{"FailureRate": 2}"#, "FailureRate = 2: must be a fraction"),
        (r#"{"Treshold": 2}"#, "Treshold"),
        ("", "no breaker spec on stdin"),
    ] {
        let e = fails(srv.cli_in("mkbreaker", &[&path], spec.as_bytes()));
        assert!(e.contains(want), "{spec}: {e}");
    }
    let client = Client::dial(&srv.url, None).await.unwrap();
    let bad = BreakerSpec {
        success_threshold: 0,
        ..BreakerSpec::default()
    };
    let e = client.walk(&path).unwrap().make_breaker(bad).await.err().unwrap();
    assert_eq!(e.kind(), Some(circuit_client::ErrorKind::Invalid));
    assert!(e.to_string().contains("SuccessThreshold = 0"), "{e}");
    assert_eq!(peek(&srv, &path), Value::Null, "nothing was made");
    // Wrong kind and missing element are errors, not answers.
    let e = fails(srv.cli("breaker", &["exec", &format!("{}/none", srv.id), "--", "true"]));
    assert!(e.contains("no breaker at"), "{e}");
}

/// Each transition is one event, with key, from, to and generation, and
/// reads never make one.
#[tokio::test]
async fn transitions_are_events_emitted_once() {
    let srv = TestServer::start(&[]);
    let path = format!("{}/b", srv.id);
    mkbreaker(&srv, &path, r#"{"FailureThreshold": 1, "OpenTimeout": 0.3}"#);
    let client = Client::dial(&srv.url, None).await.unwrap();
    let mut events = client.events(path.parse::<Path>().unwrap()).await.unwrap();
    let b = client.walk(&path).unwrap().breaker();
    let r = b.call("k", async { Err::<(), _>("boom") }, |r| {
        if r.is_ok() { Outcome::Success } else { Outcome::Failure }
    });
    assert!(matches!(
        r.await.unwrap(),
        Called::Ran {
            outcome: Outcome::Failure,
            ..
        }
    ));
    // Reads while open, and after the timeout: no event from them.
    for _ in 0..5 {
        b.peek().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        b.peek().await.unwrap();
    }
    // The timer made open → half-open; a success closes.
    let c = b.call("k", async { 1 }, |_| Outcome::Success).await.unwrap();
    assert!(matches!(c, Called::Ran { .. }), "{c:?}");
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            if let EventKind::Breaker(circuit_client::BreakerEvent::Transition {
                key,
                from,
                to,
                generation,
            }) = &ev.kind
            {
                assert_eq!(ev.path.to_string(), path);
                let line: Value = serde_json::from_str(&ev.to_json_line()).unwrap();
                assert_eq!(line["Event"], "transition");
                assert_eq!(line["Key"], "k");
                seen.push((key.clone(), *from, *to, *generation));
                if seen.len() == 3 {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "saw only {seen:?}");
    use BreakerState::*;
    assert_eq!(
        seen,
        vec![
            ("k".into(), Closed, Open, 1),
            ("k".into(), Open, HalfOpen, 2),
            ("k".into(), HalfOpen, Closed, 3)
        ]
    );
    // Nothing more came.
    let more = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(more.is_err(), "an extra event: {more:?}");
}

/// `breaker exec` passes the command's status on, records it, and tells a
/// command that cannot start (127, excluded) from a failure; a config file
/// declares a breaker, and a reload changes its spec in place.
#[test]
fn exec_statuses_and_the_config_file() {
    let dir = TempDir::new("breaker-conf");
    let conf = dir.0.join("c.toml");
    std::fs::write(&conf, "[breaker.api]\nFailureThreshold = 2\nOpenTimeout = 60\n").unwrap();
    let srv = TestServer::start(&["--config", conf.to_str().unwrap()]);
    let path = format!("{}/api", srv.id);
    let o = srv.cli("breaker", &["exec", &path, "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = srv.cli("breaker", &["exec", &path, "--", "/nonexistent/cmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let k = key_state(&peek(&srv, &path), "default");
    assert_eq!(
        (k["Counts"]["Failures"].as_u64(), k["Counts"]["Excluded"].as_u64()),
        (Some(1), Some(1))
    );
    ok(srv.cli("breaker", &["exec", &path, "--", "true"]));
    // Reload with a threshold of 1: same keys, new policy.
    std::fs::write(&conf, "[breaker.api]\nFailureThreshold = 1\nOpenTimeout = 60\n").unwrap();
    let out = ok(srv.cli("reloadconfig", &[&srv.id]));
    assert!(out.contains(&path), "{out}");
    let v = peek(&srv, &path);
    assert_eq!(v["Spec"]["FailureThreshold"], 1);
    assert_eq!(key_state(&v, "default")["Counts"]["Successes"], 1);
    let o = srv.cli("breaker", &["exec", &path, "--", "false"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(key_state(&peek(&srv, &path), "default")["State"], "open");
    ok(srv.cli("breaker", &["close", &path]));
    assert_eq!(key_state(&peek(&srv, &path), "default")["State"], "closed");
}
