//! `circuit events` and `circuit stats` end to end: real servers on
//! loopback, the real CLI (`events` runs as a child process whose stdout is
//! read line by line, then killed by its PID) and the client library. Every
//! wait is bounded; every process a test starts is killed by its handle.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use circuit_client::{Client, EventKind, Path};
use common::{TestServer, ok, stdout};
use serde_json::Value;

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(15);

/// `circuit events` running in the background; killed (by PID) on drop.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<Value>,
}

impl Events {
    fn start(srv: &TestServer, path: Option<&str>) -> Events {
        let mut child = Command::new(common::bin())
            .args(["events", "-d", &srv.url])
            .args(path)
            .env_remove("CIRCUIT")
            .env_remove("CIRCUIT_DISCOVER")
            .env_remove("CIRCUIT_HMAC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn circuit events");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Events {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one matches `want`, for up to `limit`.
    fn find_within(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            // Every line has the same first four keys.
            for k in ["Time", "Server", "Path", "Event"] {
                assert!(v[k].is_string(), "{k} missing in {line}");
            }
            self.seen.push(v.clone());
            if want(&v) {
                return Some(v);
            }
        }
    }

    /// Like `find_within(WAIT, …)`, failing the test if nothing matches.
    #[track_caller]
    fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        match self.find_within(WAIT, want) {
            Some(v) => v,
            None => panic!("no {what} event; seen: {:#?}", self.seen),
        }
    }

    /// Makes channels at `probe` (through `via`) until its `created` event
    /// shows: from then on, the stream sees what happens on that server.
    fn sync(&mut self, via: &TestServer, probe: &str) {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            ok(via.cli("mkchan", &[probe, "0"]));
            let got = self.find_within(Duration::from_millis(500), |v| is(v, "created", probe));
            ok(via.cli("scrub", &[probe]));
            if got.is_some() {
                self.expect("probe scrubbed", |v| is(v, "scrubbed", probe));
                return;
            }
        }
        panic!("the events stream never showed {probe}; seen: {:#?}", self.seen);
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(v: &Value, event: &str, path: &str) -> bool {
    v["Event"] == event && v["Path"] == path
}

/// Waits until `srv` lists exactly `ids` at `/`.
fn wait_members(srv: &TestServer, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    let end = Instant::now() + WAIT;
    loop {
        let o = srv.cli("ls", &["/"]);
        let got: Vec<String> = stdout(&o).lines().map(String::from).collect();
        if got == want {
            return;
        }
        assert!(Instant::now() < end, "members {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every event stream `srv` served has ended.
fn wait_detached(srv: &TestServer) {
    let end = Instant::now() + WAIT;
    loop {
        let log = srv.log();
        let (on, off) = (
            log.matches("listener attached").count(),
            log.matches("listener detached").count(),
        );
        if on > 0 && on == off {
            return;
        }
        assert!(Instant::now() < end, "{on} attached, {off} detached:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mkproc, spawned, exited (with the exit code), scrubbed, for a process
/// at `path` made through `via`, as the stream `ev` sees them.
fn process_life(ev: &mut Events, via: &TestServer, path: &str, server: &str) {
    ok(via.cli_in("mkproc", &[path], br#"{"Path": "/bin/sh", "Args": ["-c", "exit 3"]}"#));
    let created = ev.expect("created", |v| is(v, "created", path));
    assert_eq!(created["Kind"], "proc");
    assert_eq!(created["Server"], server.trim_start_matches('/'));
    let spawned = ev.expect("spawned", |v| is(v, "spawned", path));
    let pid = spawned["Pid"].as_u64().expect("a pid");
    assert!(pid > 0);
    let exited = ev.expect("exited", |v| is(v, "exited", path));
    assert_eq!(exited["Pid"].as_u64(), Some(pid));
    assert_eq!(
        (exited["Phase"].as_str(), exited["Code"].as_i64()),
        (Some("exited"), Some(3))
    );
    assert!(exited["Signal"].is_null());
    ok(via.cli("scrub", &[path]));
    let scrubbed = ev.expect("scrubbed", |v| is(v, "scrubbed", path));
    assert_eq!(scrubbed["Kind"], "proc");
}

#[test]
fn the_whole_cluster_through_one_server() {
    let a = TestServer::start(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    let mut ev = Events::start(&a, None);
    ev.sync(&a, &format!("{}/probe", a.id));
    ev.sync(&a, &format!("{}/probe", b.id));

    // On its own server, and on the other one (made through either).
    process_life(&mut ev, &a, &format!("{}/p", a.id), &a.id);
    process_life(&mut ev, &a, &format!("{}/q/r", b.id), &b.id);
    process_life(&mut ev, &b, &format!("{}/s", b.id), &b.id);

    // A server joins: the stream says so, and follows it from then on.
    let c = TestServer::start(&["-j", &a.url]);
    let joined = ev.expect("joined", |v| is(v, "joined", &c.id));
    assert_eq!(joined["Server"], a.id.trim_start_matches('/'));
    ev.sync(&a, &format!("{}/probe", c.id));
    process_life(&mut ev, &a, &format!("{}/t", c.id), &c.id);

    // It leaves.
    ok(a.cli("stop", &[&c.id]));
    ev.expect("left", |v| is(v, "left", &c.id));
    // The rest goes on.
    process_life(&mut ev, &b, &format!("{}/u", b.id), &b.id);
    // Each event shows once, however many servers saw it.
    let joins = ev.seen.iter().filter(|v| is(v, "joined", &c.id)).count();
    assert_eq!(joins, 1, "{:#?}", ev.seen);
    // The reader goes: so do the streams it took, on every server.
    drop(ev);
    wait_detached(&a);
    wait_detached(&b);
}

#[test]
fn a_subtree_shows_only_what_is_below_it() {
    let a = TestServer::start(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    for (owner, via) in [(&a, &a), (&b, &a)] {
        // On its own server, and on another one (the stream is forwarded).
        let web = format!("{}/web", owner.id);
        let mut ev = Events::start(via, Some(&web));
        ev.sync(via, &format!("{web}/probe"));
        let (other, webby, inner) = (
            format!("{}/webby", owner.id),
            format!("{}/other/x", owner.id),
            format!("{web}/a/b"),
        );
        ok(via.cli("mkchan", &[&other, "1"]));
        ok(via.cli("mkchan", &[&webby, "1"]));
        process_life(&mut ev, via, &inner, &owner.id);
        ok(via.cli("mkchan", &[&web, "1"]));
        ev.expect("the subtree's root", |v| is(v, "created", &web));
        ok(via.cli("scrub", &[&other]));
        ok(via.cli("scrub", &[&webby]));
        ok(via.cli("scrub", &[&web]));
        ev.expect("the subtree's root scrubbed", |v| is(v, "scrubbed", &web));
        // A server's events come in order: everything seen so far is below `web`.
        for v in &ev.seen {
            let p = v["Path"].as_str().unwrap();
            assert!(p == web || p.starts_with(&format!("{web}/")), "{v}");
        }
        assert!(ev.find_within(Duration::from_millis(300), |_| true).is_none());
        // Once the reader is gone, the owner stops streaming (even through a relay).
        drop(ev);
        wait_detached(owner);
    }
}

#[test]
fn stats_of_a_running_sleep_anywhere() {
    let a = TestServer::start(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    let sleep = format!("{}/nap", b.id);
    ok(a.cli_in("mkproc", &[&sleep], br#"{"Path": "/bin/sleep", "Args": ["30"]}"#));
    let peek: Value = serde_json::from_str(&ok(a.cli("peek", &[&sleep]))).unwrap();
    let pid = peek["Pid"].as_u64().unwrap();

    let all: Value = serde_json::from_str(&ok(a.cli("stats", &["--json"]))).unwrap();
    let servers = all["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{all:#}");
    for s in servers {
        assert!(s["Error"].is_null(), "{s}");
        assert!(s["Rss"].as_u64().unwrap() > 0 && s["Pid"].as_u64().unwrap() > 0, "{s}");
    }
    let of_b = servers
        .iter()
        .find(|s| format!("/{}", s["Server"].as_str().unwrap()) == b.id)
        .unwrap();
    let procs = of_b["Processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{of_b}");
    assert_eq!(procs[0]["Path"], sleep.as_str());
    assert_eq!(procs[0]["Pid"].as_u64(), Some(pid));
    assert!(procs[0]["Rss"].as_u64().unwrap() > 0, "{of_b}");
    assert!(procs[0]["Cpu"].as_f64().unwrap() < 50.0, "a sleep sleeps: {of_b}");

    // The table names it, with its pid; a subtree of A has no process, and
    // lists only A.
    let table = ok(a.cli("stats", &[]));
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(&sleep))
        .expect(&table);
    assert_eq!(
        line.split_whitespace().nth(1),
        Some(pid.to_string().as_str()),
        "{table}"
    );
    let only_a: Value = serde_json::from_str(&ok(b.cli("stats", &["-json", &format!("{}/web", a.id)]))).unwrap();
    assert_eq!(only_a["Servers"].as_array().unwrap().len(), 1);
    assert_eq!(format!("/{}", only_a["Servers"][0]["Server"].as_str().unwrap()), a.id);
    assert!(only_a["Servers"][0]["Processes"].as_array().unwrap().is_empty());

    // Once it has ended, it is no longer measured.
    ok(a.cli("signal", &["KILL", &sleep]));
    ok(a.cli("wait", &[&sleep]));
    let after: Value = serde_json::from_str(&ok(a.cli("stats", &["--json", &b.id]))).unwrap();
    assert!(
        after["Servers"][0]["Processes"].as_array().unwrap().is_empty(),
        "{after}"
    );
}

#[tokio::test]
async fn a_reader_that_falls_behind_learns_how_much_it_lost() {
    let a = TestServer::start(&[]);
    let client = Client::dial(&a.url, None).await.unwrap();
    let mut events = client.events(a.id.parse::<Path>().unwrap()).await.unwrap();
    // Not read while the server makes far more events than the bus and the
    // stream's window hold; the server must not wait for us meanwhile.
    let made = Instant::now();
    for round in 0..40 {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let anchor = client.walk(&format!("{}/c{round}-{i}", a.id)).unwrap();
                tokio::spawn(async move {
                    anchor.make_chan(0).await.unwrap();
                    anchor.scrub().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert!(made.elapsed() < Duration::from_secs(60));
    let mut lost = 0;
    let mut seen = 0;
    let read = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            seen += 1;
            if let EventKind::Lost { count } = ev.kind {
                assert_eq!(ev.path.to_string(), a.id);
                lost += count;
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no lost event after {seen} events");
    assert!(lost > 0 && seen < 8000, "seen {seen}, lost {lost}");
}
