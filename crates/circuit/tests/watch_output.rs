//! Watchers' output (rings and rotated files), identity and limits,
//! environment inheritance and hooks, end to end: a real server, the real
//! CLI, real processes. Every wait is bounded; each test scrubs its
//! watchers, and kills (by pid) the processes it saw should it fail first.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Pids, TempDir, TestServer, eventually, fails, ok, wait_log};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(15);

fn mkwatch(srv: &TestServer, path: &str, spec: &Value) {
    ok(srv.cli_in("mkwatch", &[path], spec.to_string().as_bytes()));
}

/// The pids of a watcher's running processes, by WID, once there are `n`.
fn pids(srv: &TestServer, path: &str, n: usize, seen: &mut Pids) -> Vec<u64> {
    let end = Instant::now() + LIMIT;
    loop {
        let v: Value = serde_json::from_str(&ok(srv.cli("peek", &[path]))).unwrap();
        let ps: Vec<u64> = v["Processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["Pid"].as_u64().unwrap())
            .collect();
        if ps.len() == n {
            seen.0.extend(&ps);
            return ps;
        }
        assert!(Instant::now() < end, "never {n} processes: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout_of(srv: &TestServer, args: &[&str]) -> String {
    ok(srv.cli("stdout", args))
}

#[test]
fn rings_are_read_with_wid_prefixes() {
    let srv = TestServer::start(&[]);
    let w = format!("{}/talk", srv.id);
    let mut seen = Pids::default();
    mkwatch(
        &srv,
        &w,
        &json!({"Path": "/bin/sh", "NumProcesses": 2, "GracefulTimeout": 2,
                "Args": ["-c", "for i in 1 2 3; do echo w$(WID)-$i; done; echo oops$(WID) >&2; printf tail$(WID); exec sleep 60"],
                "Stdout": {"Ring": 4096}, "Stderr": {"Ring": 4096}}),
    );
    pids(&srv, &w, 2, &mut seen);
    let want = "[1] w1-1\n[1] w1-2\n[1] w1-3\n[1] tail1\n[2] w2-1\n[2] w2-2\n[2] w2-3\n[2] tail2\n";
    assert!(
        eventually(LIMIT, || stdout_of(&srv, &[&w]) == want),
        "stdout: {:?}",
        stdout_of(&srv, &[&w])
    );
    assert_eq!(stdout_of(&srv, &[&w, "--wid", "2"]), "w2-1\nw2-2\nw2-3\ntail2\n");
    assert_eq!(stdout_of(&srv, &[&w, "--wid", "7"]), "");
    assert!(eventually(LIMIT, || ok(srv.cli("stderr", &[&w])) == "[1] oops1\n[2] oops2\n"));
    ok(srv.cli("scrub", &[&w]));

    // A chatty process never blocks: 2 MB through a 100-byte ring, then a last line.
    let c = format!("{}/chatty", srv.id);
    mkwatch(
        &srv,
        &c,
        &json!({"Path": "/bin/sh", "GracefulTimeout": 2,
                "Args": ["-c", "head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done; exec sleep 60"],
                "Stdout": {"Ring": 100}}),
    );
    pids(&srv, &c, 1, &mut seen);
    assert!(
        eventually(LIMIT, || stdout_of(&srv, &[&c]).ends_with("[1] done\n")),
        "stdout: {:?}",
        stdout_of(&srv, &[&c])
    );
    let out = stdout_of(&srv, &[&c, "--wid", "1"]);
    assert_eq!(out.len(), 100, "the ring keeps the newest 100 bytes: {out:?}");
    assert!(out.ends_with("xxx\ndone\n"), "{out:?}");
    // Not kept: a clear error.
    let e = fails(srv.cli("stderr", &[&c]));
    assert!(e.contains("does not keep its processes' stderr"), "{e}");
    ok(srv.cli("scrub", &[&c]));
}

#[test]
fn files_rotate_with_backups() {
    let srv = TestServer::start(&[]);
    let dir = TempDir::new("rotate");
    let w = format!("{}/log", srv.id);
    let mut seen = Pids::default();
    let pattern = dir.0.join("out-$(WID).log");
    mkwatch(
        &srv,
        &w,
        &json!({"Path": "/bin/sh", "GracefulTimeout": 2,
                "Args": ["-c", "i=1; while [ $i -le 30 ]; do echo line-$i-xxxxxxxxxxxx; i=$((i+1)); sleep 0.01; done; exec sleep 60"],
                "Stdout": {"File": pattern.to_string_lossy(), "MaxBytes": 100, "Backups": 2}}),
    );
    pids(&srv, &w, 1, &mut seen);
    let f = dir.0.join("out-1.log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        eventually(LIMIT, || read(&f).contains("line-30-")),
        "the log never got the last line: {:?}",
        read(&f)
    );
    let backup = |i: u32| dir.0.join(format!("out-1.log.{i}"));
    assert!(backup(1).exists() && backup(2).exists(), "f.1 and f.2 exist");
    assert!(!backup(3).exists(), "Backups = 2: no f.3");
    // The three files are the newest lines in order, each rotated before it passed 100 bytes.
    let all = format!("{}{}{}", read(&backup(2)), read(&backup(1)), read(&f));
    let nums: Vec<u32> = all
        .lines()
        .map(|l| l.split('-').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(nums.last(), Some(&30));
    assert!(nums.windows(2).all(|p| p[1] == p[0] + 1), "contiguous: {nums:?}");
    assert!(nums.len() < 30, "the oldest lines were dropped");
    ok(srv.cli("scrub", &[&w]));
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A `Name:` line of /proc/PID/status, its fields.
fn status_line(pid: u64, name: &str) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {s}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn processes_run_as_nobody() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs the tests as root; this test needs it"
        );
        eprintln!("skipped: running as another uid needs root (the tests run as root in CI)");
        return;
    }
    let srv = TestServer::start(&[]);
    let w = format!("{}/nobody", srv.id);
    let mut seen = Pids::default();
    mkwatch(
        &srv,
        &w,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "Uid": "nobody", "Gid": 65534, "GracefulTimeout": 2}),
    );
    let pid = pids(&srv, &w, 1, &mut seen)[0];
    assert_eq!(status_line(pid, "Uid:"), ["65534"; 4]);
    assert_eq!(status_line(pid, "Gid:"), ["65534"; 4]);
    let groups = status_line(pid, "Groups:");
    assert!(
        groups.is_empty(),
        "root's supplementary groups were dropped: {groups:?}"
    );
    ok(srv.cli("scrub", &[&w]));
    let e = fails(srv.cli_in(
        "mkwatch",
        &[&w],
        br#"{"Path": "/bin/sleep", "Args": ["60"], "Uid": "no-such-user-here"}"#,
    ));
    assert!(e.contains("no user named \"no-such-user-here\""), "{e}");

    // A server that is not root cannot run processes as anyone else.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .args(["start", "-a", "127.0.0.1:0"]);
    let weak = TestServer::spawn(cmd);
    let w = format!("{}/root", weak.id);
    let e = fails(weak.cli_in(
        "mkwatch",
        &[&w],
        br#"{"Path": "/bin/sleep", "Args": ["60"], "Uid": "root"}"#,
    ));
    assert!(e.contains("Uid 0: this server runs as uid 65534, not root"), "{e}");
    let e = fails(weak.cli_in("mkwatch", &[&w], br#"{"Path": "/bin/sleep", "Args": ["60"], "Gid": 0}"#));
    assert!(e.contains("Gid 0:") && e.contains("not root"), "{e}");
    assert_eq!(ok(weak.cli("peek", &[&w])), "null\n", "nothing is kept");
}

#[test]
fn rlimits_and_environment() {
    let srv = TestServer::start(&[]);
    let w = format!("{}/env", srv.id);
    let mut seen = Pids::default();
    mkwatch(
        &srv,
        &w,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 2, "GracefulTimeout": 2,
                "Rlimits": {"NOFILE": 123, "CORE": 0}, "InheritEnv": false, "Env": ["A=1", "B=w$(WID)"]}),
    );
    let ps = pids(&srv, &w, 2, &mut seen);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", ps[0])).unwrap();
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(nofile[3..5], ["123", "123"], "{limits}");
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    let environ = |pid: u64| std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert_eq!(environ(ps[0]), b"A=1\0B=w1\0");
    assert_eq!(environ(ps[1]), b"A=1\0B=w2\0");
    ok(srv.cli("scrub", &[&w]));

    // By default the server's environment is inherited, plus Env.
    let i = format!("{}/inherit", srv.id);
    mkwatch(
        &srv,
        &i,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "GracefulTimeout": 2, "Env": ["CIRCUIT_TEST_X=7"]}),
    );
    let pid = pids(&srv, &i, 1, &mut seen)[0];
    let env = String::from_utf8(environ(pid)).unwrap();
    let vars: Vec<&str> = env.split('\0').collect();
    assert!(vars.contains(&"CIRCUIT_TEST_X=7"), "{vars:?}");
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{vars:?}");
    ok(srv.cli("scrub", &[&i]));

    let e = fails(srv.cli_in("mkwatch", &[&w], br#"{"Path": "/bin/true", "Rlimits": {"BOGUS": 1}}"#));
    assert!(e.contains("unknown resource \"BOGUS\""), "{e}");
}

#[test]
fn hooks_gate_starts_and_follow_stops() {
    let srv = TestServer::start(&[]);
    let dir = TempDir::new("hooks");
    let mut seen = Pids::default();
    let mut events = Command::new(common::bin())
        .args(["events", "-d", &srv.url, &srv.id])
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
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    // A failing BeforeStart: no process, an event and a log line.
    let bad = format!("{}/bad", srv.id);
    mkwatch(
        &srv,
        &bad,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "Hooks": {"BeforeStart": ["/bin/sh", "-c", "exit 3"]}}),
    );
    let end = Instant::now() + LIMIT;
    let failed = loop {
        assert!(Instant::now() < end, "no hookfailed event");
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(100))
            && v["Event"] == "hookfailed"
        {
            break v;
        }
    };
    assert_eq!(
        (failed["Path"].as_str(), failed["Hook"].as_str()),
        (Some(bad.as_str()), Some("BeforeStart"))
    );
    assert_eq!(failed["Wid"], 1);
    assert!(failed["Error"].as_str().unwrap().contains("exit status: 3"), "{failed}");
    assert!(wait_log(&srv, "hook failed", 1, LIMIT), "{}", srv.log());
    let peek: Value = serde_json::from_str(&ok(srv.cli("peek", &[&bad]))).unwrap();
    assert_eq!(peek["Processes"], json!([]), "{peek}");
    assert!(
        !rx.try_iter()
            .any(|v| v["Event"] == "spawned" && v["Path"] == bad.as_str())
    );
    ok(srv.cli("scrub", &[&bad]));

    // Succeeding hooks: AfterStart and AfterStop run, with the watcher's path and the WID.
    let good = format!("{}/good", srv.id);
    let touch = |what: &str| {
        json!([
            "/bin/sh",
            "-c",
            format!(
                "echo \"$CIRCUIT_WATCH $CIRCUIT_WID\" > {}/{what}-$CIRCUIT_WID",
                dir.0.display()
            )
        ])
    };
    mkwatch(
        &srv,
        &good,
        &json!({"Path": "/bin/sleep", "Args": ["60"], "GracefulTimeout": 2,
                "Hooks": {"BeforeStart": ["/bin/true"], "AfterStart": touch("started"), "AfterStop": touch("stopped")}}),
    );
    pids(&srv, &good, 1, &mut seen);
    let read = |name: &str| std::fs::read_to_string(dir.0.join(name)).unwrap_or_default();
    assert_eq!(read("started-1"), format!("{good} 1\n"));
    assert!(!dir.0.join("stopped-1").exists());
    ok(srv.cli("watch", &["stop", &good]));
    assert!(
        eventually(LIMIT, || read("stopped-1") == format!("{good} 1\n")),
        "AfterStop never ran"
    );
    ok(srv.cli("scrub", &[&good]));
}
