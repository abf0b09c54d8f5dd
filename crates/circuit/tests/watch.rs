//! Watch elements end to end: a real server, the real CLI, real processes.
//! Every wait is bounded; the tests kill (by pid) only processes the watcher
//! reported, and only if a test fails half-way.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Pids, TempDir, TestServer, alive, children, fails, ok, state, stderr};
use serde_json::{Value, json};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls (bounded) until `f` holds.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl TestServer {
    fn peek(&self, path: &str) -> Value {
        json(&ok(self.cli("peek", &[path])))
    }

    /// Polls `peek` (bounded) until `f` holds; returns that peek.
    fn peek_until(&self, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.peek(path);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < end, "{path} never became {what}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn mkwatch(&self, path: &str, spec: &Value) {
        ok(self.cli_in("mkwatch", &[path], spec.to_string().as_bytes()));
    }
}

/// (WID, Pid) of each process in a peek, remembered in `pids`.
fn procs(v: &Value, pids: &mut Pids) -> Vec<(u64, u64)> {
    let list: Vec<(u64, u64)> = v["Processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no Processes: {v}"))
        .iter()
        .map(|p| (p["Wid"].as_u64().unwrap(), p["Pid"].as_u64().unwrap()))
        .collect();
    pids.0.extend(list.iter().map(|(_, p)| *p));
    list
}

fn count(v: &Value) -> usize {
    v["Processes"].as_array().map_or(0, Vec::len)
}

fn all_gone(list: &[(u64, u64)]) -> bool {
    list.iter().all(|(_, p)| !alive(*p))
}

fn no_zombies(srv: &TestServer) {
    let me = srv.child.id() as u64;
    until("free of zombie children", Duration::from_secs(5), || {
        children(me).iter().all(|(_, s)| *s != 'Z')
    });
}

#[test]
fn keeps_processes_running_and_respawns_after_kill() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let web = format!("{}/web", srv.id);
    srv.mkwatch(
        &web,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 3, "GracefulTimeout": 5}),
    );
    assert_eq!(
        ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)])),
        format!("watch           {web}\n")
    );
    let v = srv.peek(&web);
    assert_eq!(v["State"], "active");
    assert_eq!(v["Retries"], 0);
    assert_eq!(v["Spec"]["NumProcesses"], 3);
    assert_eq!(
        v["Spec"]["Flapping"],
        json!({"Attempts": 2, "Window": 1.0, "RetryIn": 7.0, "MaxRetry": 5})
    );
    let before = procs(&v, &mut pids);
    assert_eq!(before.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(before.iter().all(|(_, p)| alive(*p)), "{v}");
    for p in v["Processes"].as_array().unwrap() {
        assert_eq!(p["Restarts"], 0);
        assert!(p["StartedAt"].as_str().unwrap().contains('T'), "RFC 3339: {p}");
        assert!(p["CpuPercent"].as_f64().is_some(), "{p}");
        assert!(p["RssBytes"].as_u64().unwrap() > 0, "{p}");
    }
    // The processes are the server's children, each in its own process group.
    let me = srv.child.id() as u64;
    let kids: Vec<u64> = children(me).iter().map(|c| c.0).collect();
    assert!(before.iter().all(|(_, p)| kids.contains(p)), "{kids:?} {before:?}");

    // kill -9 one: replaced, the others untouched.
    let (wid, victim) = before[1];
    let t = Instant::now();
    let killed = Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap();
    assert!(killed.success());
    let v = srv.peek_until(&web, "respawned", |v| {
        count(v) == 3 && v["Processes"][1]["Pid"].as_u64() != Some(victim)
    });
    let after = procs(&v, &mut pids);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(after[1].0, wid);
    assert_eq!(v["Processes"][1]["Restarts"], 1);
    assert!(alive(after[1].1));
    assert_eq!((after[0], after[2]), (before[0], before[2]));
    assert_eq!(v["Processes"][0]["Restarts"], 0);
    until("the killed process reaped", Duration::from_secs(5), || {
        state(victim).is_none()
    });

    // signal reaches every process.
    ok(srv.cli("signal", &["STOP", &web]));
    until("all stopped", Duration::from_secs(5), || {
        after.iter().all(|(_, p)| state(*p) == Some('T'))
    });
    ok(srv.cli("signal", &[&web, "cont"]));
    until("all continued", Duration::from_secs(5), || {
        after.iter().all(|(_, p)| matches!(state(*p), Some('S' | 'R')))
    });
    let e = fails(srv.cli("signal", &["NOSUCH", &web]));
    assert!(e.contains("signal \"NOSUCH\" not recognized"), "{e}");

    // scrub: every process is stopped, none left behind, no zombie.
    ok(srv.cli("scrub", &[&web]));
    assert_eq!(ok(srv.cli("peek", &[&web])), "null\n");
    until("every process gone", Duration::from_secs(10), || all_gone(&after));
    no_zombies(&srv);
    assert!(srv.log().contains("op=\"respawn\""), "{}", srv.log());
}

#[test]
fn scale_with_incr_decr_numprocs() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let w = format!("{}/w", srv.id);
    srv.mkwatch(&w, &json!({"Path": "/bin/sleep", "Args": ["60"]}));
    assert_eq!(ok(srv.cli("numprocs", &[&w])), "1\n");
    assert_eq!(ok(srv.cli("incr", &[&w])), "2\n");
    assert_eq!(ok(srv.cli("incr", &[&w, "3"])), "5\n");
    let v = srv.peek(&w);
    let five = procs(&v, &mut pids);
    assert_eq!(five.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(all_alive(&five));
    assert_eq!(v["Spec"]["NumProcesses"], 5);

    // Decr stops the highest slots.
    assert_eq!(ok(srv.cli("decr", &[&w, "3"])), "2\n");
    let v = srv.peek(&w);
    assert_eq!(procs(&v, &mut pids), five[..2]);
    until("slots 3-5 gone", Duration::from_secs(10), || all_gone(&five[2..]));
    assert!(all_alive(&five[..2]));
    assert_eq!(ok(srv.cli("numprocs", &[&w, "4"])), "4\n");
    let v = srv.peek(&w);
    assert_eq!(count(&v), 4);
    procs(&v, &mut pids);
    assert_eq!(ok(srv.cli("decr", &[&w, "10"])), "0\n");
    until("all gone", Duration::from_secs(10), || {
        let v = srv.peek(&w);
        count(&v) == 0 && pids.0.iter().all(|p| !alive(*p))
    });
    let e = fails(srv.cli("numprocs", &[&w, "100000"]));
    assert!(e.contains("a watcher keeps at most 10000"), "{e}");
    let usage = srv.cli("incr", &[&w, "-2"]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    ok(srv.cli("scrub", &[&w]));
}

fn all_alive(list: &[(u64, u64)]) -> bool {
    list.iter().all(|(_, p)| alive(*p))
}

#[test]
fn start_stop_restart_reload() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let w = format!("{}/w", srv.id);
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 2, "StopSignal": "INT"}),
    );
    let first = procs(&srv.peek(&w), &mut pids);

    ok(srv.cli("watch", &["stop", &w]));
    let v = srv.peek(&w);
    assert_eq!((v["State"].as_str(), count(&v)), (Some("stopped"), 0), "{v}");
    until("stopped processes gone", Duration::from_secs(10), || all_gone(&first));
    // Nothing respawns while stopped.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&srv.peek(&w)), 0);

    ok(srv.cli("watch", &["start", &w]));
    let v = srv.peek(&w);
    assert_eq!(v["State"], "active");
    let second = procs(&v, &mut pids);
    assert_eq!(second.len(), 2);
    assert!(all_alive(&second));

    ok(srv.cli("watch", &["restart", &w]));
    let v = srv.peek_until(&w, "restarted", |v| {
        count(v) == 2
            && v["Processes"].as_array().unwrap().iter().all(|p| {
                let pid = p["Pid"].as_u64().unwrap();
                !second.iter().any(|s| s.1 == pid)
            })
    });
    let third = procs(&v, &mut pids);
    assert!(
        all_gone(&second),
        "restart: the old ones are gone before the new ones start"
    );
    assert!(all_alive(&third));

    // Reload: the new ones are there at once, the old ones go.
    ok(srv.cli("watch", &["reload", &w]));
    let v = srv.peek(&w);
    let fourth = procs(&v, &mut pids);
    assert_eq!(fourth.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
    assert!(fourth.iter().all(|p| !third.contains(p)), "{third:?} {fourth:?}");
    assert!(all_alive(&fourth));
    until("old ones gone after reload", Duration::from_secs(10), || {
        all_gone(&third)
    });
    assert_eq!(v["State"], "active");

    let usage = srv.cli("watch", &["frobnicate", &w]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    ok(srv.cli("scrub", &[&w]));
    until("gone after scrub", Duration::from_secs(10), || all_gone(&fourth));
}

/// SigIgn of /proc/PID/status has SIGTERM (15).
fn ignores_term(pid: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|m| m & (1 << 14) != 0)
}

#[test]
fn graceful_stop_kills_after_the_timeout() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let w = format!("{}/stubborn", srv.id);
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/sh", "Args": ["-c", "trap '' TERM; sleep 60; true"], "GracefulTimeout": 1}),
    );
    let list = procs(&srv.peek(&w), &mut pids);
    let (_, sh) = list[0];
    until("the trap set", Duration::from_secs(10), || ignores_term(sh));
    // Its child, in its process group, must go too.
    let mut kid = 0;
    until("sleep started", Duration::from_secs(10), || {
        kid = children(sh).first().map_or(0, |c| c.0);
        kid != 0
    });
    let t = Instant::now();
    ok(srv.cli("watch", &["stop", &w]));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(sh) && alive(kid),
        "SIGTERM is ignored: still alive before the timeout"
    );
    until("SIGKILLed", Duration::from_secs(10), || !alive(sh) && !alive(kid));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(srv.log().contains("graceful timeout over; SIGKILL"), "{}", srv.log());

    // Scrub is graceful the same way.
    ok(srv.cli("watch", &["start", &w]));
    let list = procs(&srv.peek(&w), &mut pids);
    until("the trap set", Duration::from_secs(10), || ignores_term(list[0].1));
    let t = Instant::now();
    ok(srv.cli("scrub", &[&w]));
    until("scrubbed and SIGKILLed", Duration::from_secs(10), || all_gone(&list));
    assert!(t.elapsed() >= Duration::from_millis(900));
    no_zombies(&srv);
}

#[test]
fn flapping_pauses_then_stops() {
    let srv = TestServer::start(&[]);
    let w = format!("{}/flappy", srv.id);
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/false",
                "Flapping": {"Attempts": 2, "Window": 5, "RetryIn": 0.5, "MaxRetry": 2}}),
    );
    let v = srv.peek_until(&w, "flapping", |v| v["State"] == "flapping");
    assert_eq!(v["Retries"], 1);
    let v = srv.peek_until(&w, "stopped for good", |v| v["State"] == "stopped");
    assert_eq!(v["Retries"], 2);
    assert_eq!(count(&v), 0);
    let log = srv.log();
    assert!(log.contains("flapping: paused"), "{log}");
    assert!(log.contains("flapping: no retry left, stopped"), "{log}");
    // It stays stopped.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(srv.peek(&w)["State"], "stopped");
    // `watch start` starts over, with the retries cleared.
    ok(srv.cli("watch", &["start", &w]));
    srv.peek_until(&w, "flapping again", |v| v["State"] == "flapping" && v["Retries"] == 1);
    ok(srv.cli("scrub", &[&w]));
    no_zombies(&srv);
}

#[test]
fn no_zombies_after_many_respawns() {
    let srv = TestServer::start(&[]);
    let w = format!("{}/short", srv.id);
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/true", "NumProcesses": 4, "Flapping": {"Attempts": 1000000}}),
    );
    let total = |v: &Value| -> u64 {
        v["Processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["Restarts"].as_u64().unwrap())
            .sum()
    };
    let end = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 1000 {
        assert!(Instant::now() < end, "only {seen} respawns in 60 s");
        std::thread::sleep(Duration::from_millis(50));
        seen = seen.max(total(&srv.peek(&w)));
    }
    assert_eq!(srv.peek(&w)["State"], "active");
    ok(srv.cli("watch", &["stop", &w]));
    srv.peek_until(&w, "stopped", |v| count(v) == 0);
    no_zombies(&srv);
    let me = srv.child.id() as u64;
    until("no child left", Duration::from_secs(5), || children(me).is_empty());
    ok(srv.cli("scrub", &[&w]));
}

#[test]
fn wid_substitution_and_max_age() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let dir = TempDir::new("watch-wid");
    let w = format!("{}/w", srv.id);
    let script = format!("echo $(WID) $X > {}/out-$(WID); exec sleep 60", dir.0.display());
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/sh", "Args": ["-c", script], "Env": ["X=w$(WID)", "PATH=/usr/bin:/bin"],
                "NumProcesses": 2, "MaxAge": 1, "GracefulTimeout": 2}),
    );
    let first = procs(&srv.peek(&w), &mut pids);
    until("both wrote", Duration::from_secs(10), || {
        (1..=2).all(|i| std::fs::read_to_string(dir.0.join(format!("out-{i}"))).is_ok_and(|s| s.ends_with('\n')))
    });
    for i in 1..=2 {
        assert_eq!(
            std::fs::read_to_string(dir.0.join(format!("out-{i}"))).unwrap(),
            format!("{i} w{i}\n")
        );
    }
    // MaxAge 1 s: each process is replaced, the old one stopped.
    let v = srv.peek_until(&w, "recycled", |v| {
        count(v) == 2
            && v["Processes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !first.iter().any(|f| Some(f.1) == p["Pid"].as_u64()))
    });
    procs(&v, &mut pids);
    until("old ones gone", Duration::from_secs(10), || all_gone(&first));
    assert!(srv.log().contains("MaxAge reached"));
    ok(srv.cli("scrub", &[&w]));
}

#[test]
fn errors() {
    let srv = TestServer::start(&[]);
    let w = format!("{}/w", srv.id);
    let e = fails(srv.cli_in("mkwatch", &[&w], br#"{"Path": "/nonexistent/program"}"#));
    assert!(e.contains("exec error: /nonexistent/program"), "{e}");
    assert_eq!(ok(srv.cli("peek", &[&w])), "null\n", "nothing is kept");
    let e = fails(srv.cli_in(
        "mkwatch",
        &[&w],
        br#"{"Path": "/bin/true", "Sockets": [{"Name": "web"}]}"#,
    ));
    assert!(e.contains("socket \"web\" of the watch spec has no \"Port\""), "{e}");
    let e = fails(srv.cli_in("mkwatch", &[&w], br#"{"Path": "/bin/true", "Bogus": 1}"#));
    assert!(e.contains("unknown field \"Bogus\""), "{e}");
    let e = fails(srv.cli_in("mkwatch", &[&w], br#"{"Path": "/bin/true", "StopSignal": "NOPE"}"#));
    assert!(e.contains("signal \"NOPE\" not recognized"), "{e}");
    let e = fails(srv.cli_in("mkwatch", &[&srv.id], br#"{"Path": "/bin/true"}"#));
    assert!(e.contains("is a server"), "{e}");

    ok(srv.cli_in("mkchan", &[&w, "0"], b""));
    let e = fails(srv.cli_in("mkwatch", &[&w], br#"{"Path": "/bin/sleep", "Args": ["60"]}"#));
    assert!(e.contains("already holds a chan"), "{e}");
    let e = fails(srv.cli("numprocs", &[&w]));
    assert!(e.contains("holds a chan, not a watch"), "{e}");
    let e = fails(srv.cli("watch", &["stop", &format!("{}/none", srv.id)]));
    assert!(e.contains("no watch at"), "{e}");
    ok(srv.cli("scrub", &[&w]));

    // With no process, signal says so.
    ok(srv.cli_in(
        "mkwatch",
        &[&w],
        br#"{"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 0}"#,
    ));
    let e = fails(srv.cli("signal", &["HUP", &w]));
    assert!(e.contains("no running process to signal"), "{e}");
    ok(srv.cli("scrub", &[&w]));
}

#[test]
fn events_of_a_watcher() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let srv = TestServer::start(&[]);
    let w = format!("{}/ev", srv.id);
    let mut events = Command::new(common::bin())
        .args(["events", "-d", &srv.url, &w])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    /// Kills the `events` command it holds (our own child, by pid) on drop.
    struct Reader(std::process::Child);
    impl Drop for Reader {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = events.stdout.take().unwrap();
    let _guard = Reader(events);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is open once a first event of the subtree arrives; make
    // sure it is listening before the watcher starts.
    let mut seen: Vec<Value> = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    let mut made = false;
    let wanted = ["created", "spawned", "exited", "respawned", "flapping"];
    while !wanted.iter().all(|e| seen.iter().any(|v| v["Event"] == *e)) {
        assert!(Instant::now() < end, "events seen: {seen:?}");
        if !made {
            std::thread::sleep(Duration::from_millis(300));
            srv.mkwatch(
                &w,
                &json!({"Path": "/bin/false",
                        "Flapping": {"Attempts": 2, "Window": 5, "RetryIn": 30, "MaxRetry": 1}}),
            );
            made = true;
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let v = json(&line);
            assert_eq!(v["Path"], w, "{v}");
            seen.push(v);
        }
    }
    assert_eq!(
        seen[0]["Event"], "created",
        "the element first, then its processes: {seen:?}"
    );
    assert_eq!(seen[0]["Kind"], "watch");
    let flap = seen.iter().find(|v| v["Event"] == "flapping").unwrap();
    assert_eq!(
        (flap["State"].as_str(), flap["Retries"].as_u64()),
        (Some("paused"), Some(1)),
        "{flap}"
    );
    let exit = seen.iter().find(|v| v["Event"] == "exited").unwrap();
    assert_eq!(exit["Code"], 1, "{exit}");
    ok(srv.cli("scrub", &[&w]));
}

#[test]
fn server_stop_stops_the_watchers() {
    let mut srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let w = format!("{}/w", srv.id);
    srv.mkwatch(&w, &json!({"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 2}));
    let list = procs(&srv.peek(&w), &mut pids);
    assert!(all_alive(&list));
    ok(srv.cli("stop", &[&srv.id]));
    assert!(srv.wait_exit(Duration::from_secs(10)).is_some(), "server did not stop");
    until("the watcher's processes stopped", Duration::from_secs(10), || {
        all_gone(&list)
    });
}

#[tokio::test]
async fn the_library_handle() {
    use circuit_client::{Client, ErrorKind, WatchAction, WatchSpec, WatchState};
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let client = Client::dial(&srv.url, None).await.unwrap();
    let anchor = client.walk(&format!("{}/lib", srv.id)).unwrap();
    let mut spec = WatchSpec::new("/bin/sleep", ["60"]);
    spec.num_processes = 2;
    spec.graceful_timeout = 5.0;
    let w = anchor.make_watch(spec.clone()).await.unwrap();
    let st = w.peek().await.unwrap();
    assert_eq!((st.state, st.retries, st.spec.clone()), (WatchState::Active, 0, spec));
    pids.0.extend(st.processes.iter().map(|p| p.pid as u64));
    assert_eq!(st.processes.iter().map(|p| p.wid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(w.incr(2).await.unwrap(), 4);
    assert_eq!(w.decr(1).await.unwrap(), 3);
    assert_eq!(w.set_numprocs(2).await.unwrap(), 2);
    assert_eq!(w.numprocs().await.unwrap(), 2);
    w.control(WatchAction::Reload).await.unwrap();
    let after = w.peek().await.unwrap();
    pids.0.extend(after.processes.iter().map(|p| p.pid as u64));
    assert!(
        after
            .processes
            .iter()
            .all(|p| !st.processes.iter().any(|q| q.pid == p.pid))
    );
    w.signal("CONT").await.unwrap();
    w.stop().await.unwrap();
    assert_eq!(w.peek().await.unwrap().state, WatchState::Stopped);
    let e = w.signal("HUP").await.unwrap_err();
    assert!(
        matches!(&e, circuit_client::Error::Remote(r) if r.kind == ErrorKind::Closed),
        "{e}"
    );
    w.start().await.unwrap();
    assert_eq!(w.peek().await.unwrap().processes.len(), 2);
    w.scrub().await.unwrap();
    let e = w.peek().await.unwrap_err();
    assert!(
        matches!(&e, circuit_client::Error::Remote(r) if r.kind == ErrorKind::NotFound),
        "{e}"
    );
    // A handle on something else says so.
    anchor.make_chan(0).await.unwrap();
    let e = anchor.watch().numprocs().await.unwrap_err();
    assert!(
        matches!(&e, circuit_client::Error::Remote(r) if r.kind == ErrorKind::WrongKind),
        "{e}"
    );
    let e = anchor.watch().peek().await.unwrap_err();
    assert!(
        matches!(&e, circuit_client::Error::Remote(r) if r.kind == ErrorKind::WrongKind),
        "{e}"
    );
    let last: Vec<u64> = pids.0.iter().copied().collect();
    let end = Instant::now() + Duration::from_secs(15);
    while last.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < end, "processes left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The test server program of the socket tests (`src/bin/circuit-testserve.rs`).
const TESTSERVE: &str = env!("CARGO_BIN_EXE_circuit-testserve");

/// One request on `stream`; the `pid=` of the answer.
fn sockets_ask(mut stream: impl std::io::Read + std::io::Write) -> std::io::Result<u64> {
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split_once("pid=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no pid in the answer {answer:?}")))
}

/// One request to `addr` over TCP, bounded.
fn sockets_ask_tcp(addr: std::net::SocketAddr) -> std::io::Result<u64> {
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    sockets_ask(stream)
}

/// The pids of a peek's processes, as a set.
fn sockets_pids(v: &Value, pids: &mut Pids) -> BTreeSet<u64> {
    procs(v, pids).into_iter().map(|(_, p)| p).collect()
}

#[test]
fn sockets_shared_port_and_no_refused_connection() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let web = format!("{}/web", srv.id);
    srv.mkwatch(
        &web,
        &json!({"Path": TESTSERVE, "Args": ["$(socket.web.fd)", "$(WID)"], "NumProcesses": 2,
                "GracefulTimeout": 10, "Sockets": [{"Name": "web", "Host": "127.0.0.1", "Port": 0}]}),
    );
    let v = srv.peek_until(&web, "running 2 processes", |v| count(v) == 2);
    assert_eq!(v["Spec"]["Sockets"][0]["Name"], "web");
    assert_eq!(v["Spec"]["Sockets"][0]["Backlog"], 128);
    let socks = v["Sockets"].as_array().unwrap_or_else(|| panic!("no Sockets: {v}"));
    assert_eq!(socks.len(), 1, "{v}");
    assert_eq!(socks[0]["Name"], "web");
    let fd = socks[0]["Fd"].as_i64().unwrap_or_else(|| panic!("no Fd: {v}"));
    assert!(fd > 2, "{v}");
    let addr: std::net::SocketAddr = socks[0]["Address"].as_str().unwrap().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "peek shows the port picked: {v}");
    let first = sockets_pids(&v, &mut pids);
    // Each process sees the socket under the number peek shows, in argv.
    for pid in &first {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
        assert_eq!(argv[1], fd.to_string().as_bytes());
        assert!(std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok());
    }

    // Both processes answer on the one port.
    let mut answered = BTreeSet::new();
    for _ in 0..200 {
        answered.insert(sockets_ask_tcp(addr).expect("an answer"));
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(answered, first, "answers from both processes");

    // A client keeps connecting while the watcher reloads, then restarts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut refused, mut failed, mut from) = (0, Vec::new(), BTreeSet::new());
        let end = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        while n < 300 || !flag.load(std::sync::atomic::Ordering::SeqCst) {
            if Instant::now() > end || n >= 3000 {
                break;
            }
            n += 1;
            match sockets_ask_tcp(addr) {
                Ok(pid) => {
                    from.insert(pid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => failed.push(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (n, refused, failed, from)
    });
    std::thread::sleep(Duration::from_millis(300));
    ok(srv.cli("watch", &["reload", &web]));
    let v = srv.peek_until(&web, "running 2 new processes", |v| {
        count(v) == 2
            && v["Processes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !first.contains(&p["Pid"].as_u64().unwrap()))
    });
    let second = sockets_pids(&v, &mut pids);
    until("the old processes gone", Duration::from_secs(15), || {
        first.iter().all(|p| !alive(*p))
    });
    std::thread::sleep(Duration::from_millis(300));
    ok(srv.cli("watch", &["restart", &web]));
    let v = srv.peek_until(&web, "running 2 newer processes", |v| {
        count(v) == 2
            && v["Processes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !second.contains(&p["Pid"].as_u64().unwrap()))
    });
    let third = sockets_pids(&v, &mut pids);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (n, refused, failed, from) = client.join().unwrap();
    assert!(n >= 300, "{n} connections");
    assert_eq!(refused, 0, "connections refused out of {n}");
    assert!(
        failed.is_empty(),
        "{} of {n} connections failed: {failed:?}",
        failed.len()
    );
    // Answers came from the processes of each generation.
    for (name, generation) in [("first", &first), ("reloaded", &second), ("restarted", &third)] {
        assert!(
            generation.iter().any(|p| from.contains(p)),
            "no answer from the {name} processes {generation:?}; answers from {from:?}"
        );
    }
    assert!(
        from.iter().all(|p| pids.0.contains(p)),
        "answers only from the watcher's processes"
    );

    // Scrub closes the port.
    ok(srv.cli("scrub", &[&web]));
    until(
        "the port closed",
        Duration::from_secs(15),
        || matches!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
    );
    until("every process gone", Duration::from_secs(15), || {
        pids.0.iter().all(|p| !alive(*p))
    });
    no_zombies(&srv);
}

#[test]
fn sockets_unix_path_and_errors() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let dir = TempDir::new("watch-sockets");
    let path = dir.0.join("web.sock");
    let web = format!("{}/unix", srv.id);
    srv.mkwatch(
        &web,
        &json!({"Path": TESTSERVE, "Args": ["$(socket.api.fd)", "$(WID)"], "GracefulTimeout": 10,
                "Env": ["LISTEN_FD=$(socket.api.fd)"],
                "Sockets": [{"Name": "api", "Path": path.to_str().unwrap(), "Backlog": 16}]}),
    );
    let v = srv.peek_until(&web, "running", |v| count(v) == 1);
    let pid = procs(&v, &mut pids)[0].1;
    assert_eq!(v["Sockets"][0]["Address"], path.to_str().unwrap());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let want = format!("LISTEN_FD={}", v["Sockets"][0]["Fd"]);
    assert!(
        environ.split(|b| *b == 0).any(|e| e == want.as_bytes()),
        "{want} not in the environment"
    );
    assert!(path.exists());
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(sockets_ask(stream).unwrap(), pid);

    // The same path again: in use, so mkwatch fails and leaves the file.
    let again = format!("{}/again", srv.id);
    let e = fails(srv.cli_in(
        "mkwatch",
        &[&again],
        json!({"Path": TESTSERVE, "Args": ["$(socket.api.fd)", "1"], "Sockets": [{"Name": "api", "Path": path.to_str().unwrap()}]})
            .to_string()
            .as_bytes(),
    ));
    assert!(
        e.contains(&format!("socket \"api\" cannot bind unix socket {}: ", path.display())),
        "{e}"
    );
    assert!(path.exists());

    // A TCP port taken by someone else: a clear error, and nothing kept.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = fails(
        srv.cli_in(
            "mkwatch",
            &[&again],
            json!({"Path": TESTSERVE, "Args": ["$(socket.web.fd)", "1"], "Sockets": [{"Name": "web", "Port": port}]})
                .to_string()
                .as_bytes(),
        ),
    );
    assert!(
        e.contains(&format!("socket \"web\" cannot bind 127.0.0.1:{port}: ")),
        "{e}"
    );
    assert!(e.contains("in use"), "{e}");
    // A reference to a socket the watcher does not have.
    let e = fails(
        srv.cli_in(
            "mkwatch",
            &[&again],
            json!({"Path": TESTSERVE, "Args": ["$(socket.nope.fd)", "1"], "Sockets": [{"Name": "web", "Port": 0}]})
                .to_string()
                .as_bytes(),
        ),
    );
    assert!(e.contains("no socket named \"nope\" (its sockets: web)"), "{e}");
    assert_eq!(
        ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)])),
        format!("watch           {web}\n")
    );

    // Scrub closes the socket and removes its file.
    ok(srv.cli("scrub", &[&web]));
    until("the socket file removed", Duration::from_secs(15), || !path.exists());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
    until("the process gone", Duration::from_secs(15), || !alive(pid));
}

#[test]
fn sockets_handed_over_from_a_scrubbed_watcher() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let old = format!("{}/old", srv.id);
    // SIGWINCH is ignored by the test server: the old processes outlive the
    // scrub (until their GracefulTimeout), and so does the socket they hold.
    srv.mkwatch(
        &old,
        &json!({"Path": TESTSERVE, "Args": ["$(socket.web.fd)", "$(WID)"], "StopSignal": "WINCH",
                "GracefulTimeout": 20, "Sockets": [{"Name": "web", "Port": 0}]}),
    );
    let v = srv.peek_until(&old, "running", |v| count(v) == 1);
    let first = sockets_pids(&v, &mut pids);
    let addr: std::net::SocketAddr = v["Sockets"][0]["Address"].as_str().unwrap().parse().unwrap();
    ok(srv.cli("scrub", &[&old]));
    // A new watcher on the same port takes the socket over instead of failing to bind.
    let new = format!("{}/new", srv.id);
    srv.mkwatch(
        &new,
        &json!({"Path": TESTSERVE, "Args": ["$(socket.web.fd)", "$(WID)"], "GracefulTimeout": 10,
                "Sockets": [{"Name": "web", "Port": addr.port()}]}),
    );
    let v = srv.peek_until(&new, "running", |v| count(v) == 1);
    assert_eq!(v["Sockets"][0]["Address"], addr.to_string());
    let second = sockets_pids(&v, &mut pids);
    assert!(first.iter().all(|p| alive(*p)), "the old process still runs");
    let mut from = BTreeSet::new();
    for _ in 0..200 {
        from.insert(sockets_ask_tcp(addr).expect("an answer"));
        if second.iter().all(|p| from.contains(p)) {
            break;
        }
    }
    assert!(
        second.iter().all(|p| from.contains(p)),
        "the new process answers: {from:?}"
    );
    // A third watcher cannot have a port that a live watcher holds.
    let e = fails(srv.cli_in(
        "mkwatch",
        &[&format!("{}/third", srv.id)],
        json!({"Path": TESTSERVE, "Args": ["$(socket.web.fd)", "1"], "Sockets": [{"Name": "web", "Port": addr.port()}]})
            .to_string()
            .as_bytes(),
    ));
    assert!(e.contains(&format!("socket \"web\" cannot bind {addr}: ")), "{e}");
    ok(srv.cli("scrub", &[&new]));
    until("the new process gone", Duration::from_secs(15), || {
        second.iter().all(|p| !alive(*p))
    });
    // The old process (ignoring its stop signal) is killed after its timeout;
    // `pids` kills it at once should this test end first.
}

#[test]
fn sockets_survive_reloadconfig_without_refusing() {
    let dir = TempDir::new("watch-sockets-config");
    let file = dir.0.join("cluster.toml");
    // A fixed port, as a config file has: a free one, found by binding port 0.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |n: u32| {
        format!(
            "[watch.web]\nPath = {TESTSERVE:?}\nArgs = [\"$(socket.web.fd)\", \"$(WID)\"]\nNumProcesses = {n}\n\
             GracefulTimeout = 10\nSockets = [{{ Name = \"web\", Port = {port} }}]\n"
        )
    };
    std::fs::write(&file, config(1)).unwrap();
    let srv = TestServer::start(&["--config", file.to_str().unwrap()]);
    let mut pids = Pids::default();
    let web = format!("{}/web", srv.id);
    let v = srv.peek_until(&web, "running", |v| count(v) == 1);
    let first = sockets_pids(&v, &mut pids);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(v["Sockets"][0]["Address"], addr.to_string());
    assert_eq!(sockets_ask_tcp(addr).unwrap(), *first.iter().next().unwrap());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut n, mut refused, mut failed) = (0, 0, Vec::new());
        let end = Instant::now() + Duration::from_secs(30);
        while (n < 100 || !flag.load(std::sync::atomic::Ordering::SeqCst)) && Instant::now() < end && n < 3000 {
            n += 1;
            match sockets_ask_tcp(addr) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                Err(e) => failed.push(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (n, refused, failed)
    });
    std::thread::sleep(Duration::from_millis(300));
    // The spec changes: the watcher is scrubbed and made again, and the new
    // one takes the socket over from the old one.
    std::fs::write(&file, config(2)).unwrap();
    let summary = json(&ok(srv.cli("reloadconfig", &[&srv.id])));
    assert_eq!(summary["Changed"], json!([web]), "{summary}");
    let v = srv.peek_until(&web, "running 2 new processes", |v| count(v) == 2);
    let second = sockets_pids(&v, &mut pids);
    assert!(first.is_disjoint(&second));
    assert_eq!(v["Sockets"][0]["Address"], addr.to_string());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (n, refused, failed) = client.join().unwrap();
    assert_eq!(refused, 0, "connections refused out of {n}");
    assert!(
        failed.is_empty(),
        "{} of {n} connections failed: {failed:?}",
        failed.len()
    );
    ok(srv.cli("scrub", &[&web]));
    until("every process gone", Duration::from_secs(15), || {
        pids.0.iter().all(|p| !alive(*p))
    });
}

/// SigCgt of /proc/PID/status has SIGTERM (15): a handler is set for it.
fn catches_term(pid: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|m| m & (1 << 14) != 0)
}

/// Kills the `events` command it holds (our own child, by pid) on drop.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `circuit events` on `path` of `srv`, its lines sent to the receiver.
fn follow_events(srv: &TestServer, path: &str) -> (Follower, std::sync::mpsc::Receiver<Value>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut events = Command::new(common::bin())
        .args(["events", "-d", &srv.url, path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(json(&line)).is_err() {
                return;
            }
        }
    });
    (Follower(events), rx)
}

#[test]
fn server_stop_waits_for_graceful_stops_and_reports_them() {
    let mut srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let (_reader, rx) = follow_events(&srv, &srv.id);
    // The stream is open once a first event arrives (a probe channel's `created`).
    let mut seen: Vec<Value> = Vec::new();
    let mut probes = 0;
    until("the events stream attached", Duration::from_secs(10), || {
        probes += 1;
        ok(srv.cli("mkchan", &[&format!("{}/probe{probes}", srv.id), "1"]));
        rx.recv_timeout(Duration::from_millis(200))
            .map(|v| seen.push(v))
            .is_ok()
    });
    // Ignores SIGTERM for 2 s, then exits 0: within its GracefulTimeout.
    let slow = format!("{}/slow", srv.id);
    srv.mkwatch(
        &slow,
        &json!({"Path": "/bin/sh", "Args": ["-c", "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.1; done"],
                "GracefulTimeout": 5}),
    );
    // Ignores SIGTERM for good: SIGKILLed after its GracefulTimeout.
    let deaf = format!("{}/deaf", srv.id);
    srv.mkwatch(
        &deaf,
        &json!({"Path": "/bin/sh", "Args": ["-c", "trap '' TERM; sleep 1000"], "GracefulTimeout": 1}),
    );
    let (_, slow_pid) = procs(&srv.peek(&slow), &mut pids)[0];
    let (_, deaf_pid) = procs(&srv.peek(&deaf), &mut pids)[0];
    until("the traps set", Duration::from_secs(10), || {
        catches_term(slow_pid) && ignores_term(deaf_pid)
    });
    let mut deaf_kid = 0;
    until("sleep started", Duration::from_secs(10), || {
        deaf_kid = children(deaf_pid).first().map_or(0, |c| c.0);
        deaf_kid != 0
    });
    pids.0.insert(deaf_kid);

    let t = Instant::now();
    ok(srv.cli("stop", &[&srv.id]));
    let status = srv.wait_exit(Duration::from_secs(20)).expect("the server stopped");
    assert!(status.success(), "{status:?}: {}", srv.log());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "stopped after {took:?}, before its watchers"
    );
    // Nothing left: the server stopped them all before it exited.
    for pid in [slow_pid, deaf_pid, deaf_kid] {
        assert!(!alive(pid), "{pid} outlived the server: {}", srv.log());
    }
    // The events came out before the server went (the stream then ends).
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(v) => seen.push(v),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let find = |event: &str, pid: u64| {
        seen.iter()
            .find(|v| v["Event"] == event && v["Pid"] == pid)
            .unwrap_or_else(|| panic!("no {event} of {pid} in {seen:?}"))
            .clone()
    };
    let exit = find("exited", slow_pid);
    assert_eq!(
        (exit["Phase"].as_str(), exit["Code"].as_i64()),
        (Some("exited"), Some(0)),
        "{exit}"
    );
    assert!(!seen.iter().any(|v| v["Event"] == "killed" && v["Pid"] == slow_pid));
    assert_eq!(find("killed", deaf_pid)["Reason"], "graceful timeout");
    assert_eq!(find("exited", deaf_pid)["Signal"], 9);
    // The log says so too, before the server's last line.
    let log = srv.log();
    let stopped = log.rfind("stopped").expect("a last line");
    let ended = |pid: u64| log.find(&format!("pid={pid} exit=")).unwrap_or(usize::MAX);
    assert!(ended(slow_pid) < stopped && ended(deaf_pid) < stopped, "{log}");
}

#[test]
fn a_sleeping_hook_does_not_stall_a_one_thread_server() {
    let srv = TestServer::start(&["--threads", "1"]);
    let dir = TempDir::new("slowhook");
    let done = dir.0.join("done");
    let w = format!("{}/hooked", srv.id);
    srv.mkwatch(
        &w,
        &json!({"Path": "/bin/sleep", "Args": ["60"],
                "Hooks": {"BeforeStart": ["/bin/sh", "-c", format!("sleep 3; touch {}", done.display())]}}),
    );
    // While the hook sleeps, the server answers other requests.
    let c = format!("{}/c", srv.id);
    ok(srv.cli("mkchan", &[&c, "1"]));
    assert!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])).contains(&c));
    let peek = json(&ok(srv.cli("peek", &[&c])));
    assert_eq!(peek["Cap"], 1, "{peek}");
    assert!(!done.exists(), "the requests waited for the hook");
    // And the watcher's start follows its hook.
    let v = srv.peek_until(&w, "started after its hook", |v| count(v) == 1);
    let mut pids = Pids::default();
    procs(&v, &mut pids);
    assert!(done.exists());
    ok(srv.cli("scrub", &[&w]));
}
