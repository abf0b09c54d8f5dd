//! Process elements end to end: a real server, the real CLI, and the client
//! library. Every wait is bounded; processes the tests start are killed by
//! PID if a test fails half-way.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use circuit_client::{Client, ErrorKind, ProcPhase, ProcSpec};
use common::{Pids, TempDir, TestServer, alive, fails, ok, state, stderr};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn spec(path: &str, args: &[&str]) -> String {
    serde_json::json!({ "Path": path, "Args": args }).to_string()
}

impl TestServer {
    fn mkproc(&self, path: &str, spec: &str) -> u64 {
        ok(self.cli_in("mkproc", &[path], spec.as_bytes()));
        self.peek(path)["Pid"].as_u64().expect("a started process has a Pid")
    }

    fn peek(&self, path: &str) -> Value {
        json(&ok(self.cli("peek", &[path])))
    }

    /// Polls `peek` (bounded) until `f` holds.
    fn peek_until(&self, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.peek(path);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < end, "{path} never became {what}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn seed_walkthrough() {
    let srv = TestServer::start(&[]);
    let pippi = format!("{}/pippi", srv.id);
    // The README's form, which lost its braces and ends in a comma.
    ok(srv.cli_in("mkproc", &[&pippi], b"    \"Path\": \"/bin/ls\", \n"));
    let p = srv.peek(&pippi);
    assert_eq!(p["Cmd"]["Path"], "/bin/ls");
    assert!(["running", "exited"].contains(&p["Phase"].as_str().unwrap()), "{p}");
    assert_eq!(
        ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)])),
        format!("proc            {pippi}\n")
    );
    ok(srv.cli("scrub", &[&pippi]));

    ok(srv.cli_in("mkproc", &[&pippi], spec("/bin/ls", &["/"]).as_bytes()));
    let raw = ok(srv.cli("peek", &[&pippi]));
    assert!(
        raw.starts_with("{\n\t\"Cmd\": {\n\t\t\"Env\": [],"),
        "tab-indented, Cmd first: {raw}"
    );
    let keys: Vec<usize> = ["\"Cmd\"", "\"Phase\"", "\"Pid\"", "\"Exit\""]
        .iter()
        .map(|k| raw.find(k).unwrap_or_else(|| panic!("{k} missing: {raw}")))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "key order Cmd, Phase, Pid, Exit: {raw}"
    );
    assert_eq!(json(&raw)["Cmd"]["Args"], serde_json::json!(["/"]));

    ok(srv.cli_in("stdin", &[&pippi], b""));
    let listing = ok(srv.cli("stdout", &[&pippi]));
    let mut got: Vec<&str> = listing.lines().collect();
    let mut want: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let st = json(&ok(srv.cli("wait", &[&pippi])));
    assert_eq!(st["Phase"], "exited");
    assert_eq!(
        st["Exit"],
        serde_json::json!({"Code": 0, "Signal": null, "Error": null})
    );

    ok(srv.cli("scrub", &[&pippi]));
    assert_eq!(ok(srv.cli("peek", &[&pippi])), "null\n");
    assert_eq!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])), "");
}

#[test]
fn exit_codes_env_and_dir() {
    let srv = TestServer::start(&[]);
    let dir = TempDir::new("proc-dir");
    let a = format!("{}/a", srv.id);
    let s = serde_json::json!({
        "Path": "/bin/sh",
        "Args": ["-c", "echo $GREETING; pwd; echo oops >&2; exit 7"],
        "Env": ["GREETING=hello", "PATH=/usr/bin:/bin"],
        "Dir": dir.0.to_str().unwrap(),
    });
    srv.mkproc(&a, &s.to_string());
    let st = json(&ok(srv.cli("wait", &[&a])));
    assert_eq!(st["Phase"], "exited");
    assert_eq!(st["Exit"]["Code"], 7);
    assert_eq!(st["Exit"]["Signal"], Value::Null);
    assert_eq!(st["Cmd"]["Env"][0], "GREETING=hello");
    let out = ok(srv.cli("stdout", &[&a]));
    assert_eq!(out, format!("hello\n{}\n", dir.0.canonicalize().unwrap().display()));
    assert_eq!(ok(srv.cli("stderr", &[&a])), "oops\n");
    // Reading to the end again is the end again.
    assert_eq!(ok(srv.cli("stdout", &[&a])), "");

    // An empty Env inherits the server's environment.
    let b = format!("{}/b", srv.id);
    srv.mkproc(&b, &spec("/bin/sh", &["-c", "echo ${PATH:+inherited}"]));
    assert_eq!(ok(srv.cli("stdout", &[&b])), "inherited\n");

    // A non-zero exit is not an error of `wait`.
    let c = format!("{}/c", srv.id);
    srv.mkproc(&c, &spec("/bin/false", &[]));
    assert_eq!(json(&ok(srv.cli("wait", &[&c])))["Exit"]["Code"], 1);
}

#[test]
fn signals() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let sl = format!("{}/sl", srv.id);
    let pid = srv.mkproc(&sl, &spec("/bin/sleep", &["60"]));
    pids.0.insert(pid);
    assert_eq!(srv.peek(&sl)["Phase"], "running");

    ok(srv.cli("signal", &["STOP", &sl]));
    srv.peek_until(&sl, "stopped", |v| v["Phase"] == "stopped");
    ok(srv.cli("signal", &[&sl, "sigcont"]));
    srv.peek_until(&sl, "continued", |v| v["Phase"] == "continued");

    let e = fails(srv.cli("signal", &["NOSUCH", &sl]));
    assert!(e.contains("signal \"NOSUCH\" not recognized"), "{e}");
    let usage = srv.cli("signal", &["TERM", "TERM"]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));

    ok(srv.cli("signal", &["TERM", &sl]));
    let st = json(&ok(srv.cli("wait", &[&sl])));
    assert_eq!(st["Phase"], "signaled");
    assert_eq!(st["Exit"]["Signal"], 15);
    assert_eq!(st["Exit"]["Code"], -1);
    assert_eq!(srv.peek(&sl)["Phase"], "signaled");
    let e = fails(srv.cli("signal", &["15", &sl]));
    assert!(e.contains("no running process to signal"), "{e}");

    // Every spelling of a signal.
    for (i, name) in ["term", "SIGTERM", "15"].iter().enumerate() {
        let p = format!("{}/s{i}", srv.id);
        pids.0.insert(srv.mkproc(&p, &spec("/bin/sleep", &["60"])));
        ok(srv.cli("signal", &[&p, name]));
        assert_eq!(json(&ok(srv.cli("wait", &[&p])))["Exit"]["Signal"], 15, "{name}");
    }

    let e = fails(srv.cli("signal", &["TERM", &srv.id]));
    assert!(
        e.contains(&format!("anchor {} holds a server, not a proc", srv.id)),
        "{e}"
    );
    let e = fails(srv.cli("signal", &["TERM", &format!("{}/none", srv.id)]));
    assert!(e.contains("no process at"), "{e}");
}

#[test]
fn a_mebibyte_through_stdout_intact() {
    let srv = TestServer::start(&[]);
    let dir = TempDir::new("proc-big");
    let file = dir.0.join("data");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data).unwrap();
    let p = format!("{}/cat", srv.id);
    srv.mkproc(&p, &spec("/bin/cat", &[file.to_str().unwrap()]));
    let out = srv.cli("stdout", &[&p]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "bytes differ");
    assert_eq!(json(&ok(srv.cli("wait", &[&p])))["Exit"]["Code"], 0);

    // And a mebibyte in through stdin, out through stdout.
    let q = format!("{}/echo", srv.id);
    srv.mkproc(&q, &spec("/bin/cat", &[]));
    let reader = {
        let (url, q) = (srv.url.clone(), q.clone());
        std::thread::spawn(move || common::run_cli(&["stdout", "-d", &url, &q], b"", &[]))
    };
    ok(srv.cli_in("stdin", &[&q], &data));
    let out = reader.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == data,
        "bytes differ through stdin ({} bytes)",
        out.stdout.len()
    );
}

/// Starts `circuit stdout PATH`, reads its first `n` bytes and stops reading
/// (so the output backs up). Returns the reader, its bytes and its stdout.
fn read_some(srv: &TestServer, path: &str, n: usize) -> (std::process::Child, Vec<u8>, std::process::ChildStdout) {
    let mut child = Command::new(common::bin())
        .args(["stdout", "-d", &srv.url, path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; n];
        let r = out.read_exact(&mut buf).map(|_| (buf, out));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok((buf, out))) => (child, buf, out),
        other => {
            let _ = child.kill();
            panic!("the reader got no {n} bytes: {:?}", other.map(|r| r.map(|_| ())));
        }
    }
}

#[test]
fn a_reader_that_leaves_frees_the_stream() {
    let srv = TestServer::start(&[]);
    let p = format!("{}/seq", srv.id);
    let total = 200_000;
    let expected: String = (1..=total).map(|i| format!("{i}\n")).collect();
    let pid = srv.mkproc(&p, &spec("/bin/sh", &["-c", &format!("seq 1 {total}")]));
    let _pids = Pids::of([pid]);

    let (mut first, prefix, pipe) = read_some(&srv, &p, 10_000);
    // Nobody drains the output: the process blocks on its pipe.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid));
    let e = fails(srv.cli("stdout", &[&p]));
    assert!(e.contains("busy"), "{e}");
    first.kill().unwrap();
    first.wait().unwrap();
    drop(pipe);

    let end = Instant::now() + Duration::from_secs(10);
    let rest = loop {
        let out = srv.cli("stdout", &[&p]);
        if out.status.success() {
            break out.stdout;
        }
        let e = stderr(&out);
        assert!(e.contains("busy") && Instant::now() < end, "{e}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (prefix, rest) = (String::from_utf8(prefix).unwrap(), String::from_utf8(rest).unwrap());
    assert!(expected.starts_with(&prefix));
    assert!(expected.ends_with(&rest), "the second reader gets the rest");
    assert!(rest.ends_with(&format!("\n{total}\n")));
    assert!(prefix.len() + rest.len() <= expected.len());
    assert_eq!(json(&ok(srv.cli("wait", &[&p])))["Exit"]["Code"], 0);
}

#[test]
fn waiters_and_waitall() {
    let srv = TestServer::start(&[]);
    let mut pids = Pids::default();
    let c = format!("{}/cat", srv.id);
    pids.0.insert(srv.mkproc(&c, &spec("/bin/cat", &[])));
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (url, c) = (srv.url.clone(), c.clone());
            std::thread::spawn(move || common::run_cli(&["wait", "-d", &url, &c], b"", &[]))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "wait blocks while the process runs"
    );
    // A second writer is refused while the first holds stdin.
    let mut holder = Command::new(common::bin())
        .args(["stdin", "-d", &srv.url, &c])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input = holder.stdin.take().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !srv.log().contains("writer attached") {
        assert!(Instant::now() < end, "the first writer never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = fails(srv.cli_in("stdin", &[&c], b"x"));
    assert!(e.contains("stdin is busy"), "{e}");
    drop(input);
    assert!(holder.wait().unwrap().success());
    for w in waiters {
        let st = json(&ok(w.join().unwrap()));
        assert_eq!(st["Phase"], "exited");
        assert_eq!(st["Exit"]["Code"], 0);
    }
    // Waiting on an ended process answers at once.
    let t = Instant::now();
    assert_eq!(json(&ok(srv.cli("wait", &[&c])))["Phase"], "exited");
    assert!(t.elapsed() < Duration::from_secs(5));
    let e = fails(srv.cli_in("stdin", &[&c], b""));
    assert!(e.contains("stdin is closed"), "{e}");
    let e = fails(srv.cli_in("stdin", &[&format!("{}/none", srv.id)], b""));
    assert!(e.contains("no process at"), "{e}");

    // waitall: three processes, ended one by one.
    let paths: Vec<String> = (0..3).map(|i| format!("{}/w/{i}", srv.id)).collect();
    for p in &paths {
        pids.0.insert(srv.mkproc(p, &spec("/bin/cat", &[])));
    }
    let list = paths.join("\n") + "\n";
    let all = {
        let (url, list) = (srv.url.clone(), list.clone());
        std::thread::spawn(move || common::run_cli(&["waitall", "-d", &url], list.as_bytes(), &[]))
    };
    for p in &paths {
        std::thread::sleep(Duration::from_millis(100));
        assert!(!all.is_finished(), "waitall returned before {p} ended");
        ok(srv.cli_in("stdin", &[p], b""));
    }
    assert_eq!(ok(all.join().unwrap()), "");

    // An anchor that is not a process is an error, not a hang.
    let t = Instant::now();
    let bad = format!("{}\n{}\n", paths[0], srv.id);
    let e = fails(srv.cli_in("waitall", &[], bad.as_bytes()));
    assert!(e.contains("holds a server, not a proc"), "{e}");
    let e = fails(srv.cli_in("waitall", &[], format!("{}/nothing\n", srv.id).as_bytes()));
    assert!(e.contains("no process at"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn scrub_detaches_and_the_server_still_reaps() {
    let srv = TestServer::start(&[]);
    let p = format!("{}/sleeper", srv.id);
    let pid = srv.mkproc(&p, &spec("/bin/sleep", &["60"]));
    let _pids = Pids::of([pid]);
    let waiter = {
        let (url, p) = (srv.url.clone(), p.clone());
        std::thread::spawn(move || common::run_cli(&["wait", "-d", &url, &p], b"", &[]))
    };
    std::thread::sleep(Duration::from_millis(200));
    ok(srv.cli("scrub", &[&p]));
    let e = fails(waiter.join().unwrap());
    assert!(e.contains("aborted"), "{e}");
    assert_eq!(ok(srv.cli("peek", &[&p])), "null\n");
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "scrub leaves the process running: {:?}", state(pid));

    // It ends (we end it); the server reaps it: no zombie stays.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let end = Instant::now() + Duration::from_secs(10);
    while state(pid).is_some() {
        assert!(Instant::now() < end, "pid {pid} left as {:?}", state(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The anchor is free for a new process.
    srv.mkproc(&p, &spec("/bin/true", &[]));
}

/// CPU time (user + system, in clock ticks) of a process, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server runs");
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = &stat[stat.rfind(") ").expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn scrub_of_a_fast_writer_costs_nothing_after() {
    // Scrub abandons the process, but closes our ends of its pipes: `yes`
    // meets a closed pipe and ends, instead of the server draining it at
    // 100 % of a core for ever while it runs at 100 % of another.
    let srv = TestServer::start(&[]);
    let p = format!("{}/yes", srv.id);
    let pid = srv.mkproc(&p, &spec("/usr/bin/yes", &[]));
    let _pids = Pids::of([pid]);
    // Let it fill its pipe, as an unread writer does.
    std::thread::sleep(Duration::from_millis(200));
    ok(srv.cli("scrub", &[&p]));
    let end = Instant::now() + Duration::from_secs(10);
    while state(pid).is_some() {
        assert!(Instant::now() < end, "yes still {:?} 10 s after its scrub", state(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = cpu_ticks(srv.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(srv.child.id()) - before;
    assert!(
        spent < 30,
        "the server spent {spent} ticks of the last second after the scrub"
    );
    assert_eq!(ok(srv.cli("peek", &[&p])), "null\n");
}

#[test]
fn scrub_on_exit() {
    let srv = TestServer::start(&[]);
    let a = format!("{}/a", srv.id);
    let s = serde_json::json!({"Path": "/bin/cat", "Scrub": true}).to_string();
    let pid = srv.mkproc(&a, &s);
    let _pids = Pids::of([pid]);
    assert_eq!(srv.peek(&a)["Cmd"]["Scrub"], true);
    ok(srv.cli_in("stdin", &[&a], b"bye\n"));
    srv.peek_until(&a, "scrubbed", Value::is_null);
    assert_eq!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])), "");

    for flag in ["-scrub", "--scrub"] {
        let b = format!("{}/b", srv.id);
        ok(srv.cli_in("mkproc", &[flag, &b], spec("/bin/true", &[]).as_bytes()));
        srv.peek_until(&b, "scrubbed", Value::is_null);
    }
}

#[test]
fn spawn_errors_and_bad_specs() {
    let srv = TestServer::start(&[]);
    let bad = format!("{}/bad", srv.id);
    let e = fails(srv.cli_in("mkproc", &[&bad], br#"{"Path":"/nonexistent"}"#));
    assert!(
        e.contains(&format!(
            "mkproc {bad}: exec error: /nonexistent: No such file or directory"
        )),
        "{e}"
    );
    // The element stays, in phase unknown, with the error.
    let v = srv.peek(&bad);
    assert_eq!(v["Phase"], "unknown");
    assert_eq!(v["Pid"], Value::Null);
    assert!(v["Exit"]["Error"].as_str().unwrap().contains("No such file"), "{v}");
    assert_eq!(json(&ok(srv.cli("wait", &[&bad])))["Phase"], "unknown");
    let e = fails(srv.cli_in("mkproc", &[&bad], spec("/bin/true", &[]).as_bytes()));
    assert!(e.contains("already holds a proc"), "{e}");
    ok(srv.cli("scrub", &[&bad]));

    let dir = TempDir::new("proc-noexec");
    let script = dir.0.join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let e = fails(srv.cli_in("mkproc", &[&bad], spec(script.to_str().unwrap(), &[]).as_bytes()));
    assert!(e.contains("Permission denied"), "{e}");
    ok(srv.cli("scrub", &[&bad]));

    // With Scrub, nothing is kept.
    let s = serde_json::json!({"Path": "/nonexistent", "Scrub": true}).to_string();
    fails(srv.cli_in("mkproc", &[&bad], s.as_bytes()));
    assert_eq!(ok(srv.cli("peek", &[&bad])), "null\n");

    let e = fails(srv.cli_in("mkproc", &[&bad], br#"{"Path":"/bin/ls","Foo":1}"#));
    assert!(
        e.contains(r#"unknown field "Foo" in the process spec; known: Env, Dir, Path, Args, Scrub"#),
        "{e}"
    );
    let e = fails(srv.cli_in("mkproc", &[&bad], b"{\n\"Path\": \"/bin/ls\",\n\"Args\" [\"/\"]\n}"));
    assert!(e.contains("invalid JSON on stdin at line 3 column 8:"), "{e}");
    let e = fails(srv.cli_in("mkproc", &[&bad], b""));
    assert!(e.contains("no process spec on stdin"), "{e}");
    let e = fails(srv.cli_in("mkproc", &[&bad], br#"{"Path":"/bin/ls","Env":["NOEQUALS"]}"#));
    assert!(e.contains("not NAME=VALUE"), "{e}");
    let e = fails(srv.cli_in("mkproc", &[&srv.id], spec("/bin/true", &[]).as_bytes()));
    assert!(e.contains("is a server"), "{e}");
    assert_eq!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])), "");

    // Input into a process that has stopped reading is an error.
    let t = format!("{}/t", srv.id);
    srv.mkproc(&t, &spec("/bin/true", &[]));
    ok(srv.cli("wait", &[&t]));
    let e = fails(srv.cli_in("stdin", &[&t], b"hello\n"));
    assert!(e.contains("Broken pipe"), "{e}");
}

#[tokio::test]
async fn library_proc_handle() {
    let srv = TestServer::start(&[]);
    let client = Client::dial(&srv.url, None).await.unwrap();
    let anchor = client.walk(&srv.id).unwrap().walk("lib").unwrap();
    let proc = anchor
        .make_proc(ProcSpec::new("/bin/sh", ["-c", "cat; echo done >&2; exit 3"]))
        .await
        .unwrap();
    let stat = proc.peek().await.unwrap();
    assert_eq!(stat.cmd.path, "/bin/sh");
    let _pids = Pids::of([u64::from(stat.pid.unwrap())]);
    let mut stdin = proc.stdin().await.unwrap();
    assert_eq!(proc.stdin().await.err().and_then(|e| e.kind()), Some(ErrorKind::Busy));
    stdin.write_all(b"hello through ").await.unwrap();
    stdin.flush().await.unwrap();
    // Dropped without closing: stdin stays open for the next writer.
    drop(stdin);
    let end = Instant::now() + Duration::from_secs(10);
    let mut stdin = loop {
        match proc.stdin().await {
            Ok(s) => break s,
            Err(e) if e.kind() == Some(ErrorKind::Busy) && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    stdin.write_all(b"the pipe\n").await.unwrap();
    stdin.close().await.unwrap();
    assert_eq!(proc.stdin().await.err().and_then(|e| e.kind()), Some(ErrorKind::Closed));
    let out = proc.stdout().await.unwrap().read_all().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "hello through the pipe\n");
    let mut err = String::new();
    proc.stderr().await.unwrap().read_to_string(&mut err).await.unwrap();
    assert_eq!(err, "done\n");
    let st = tokio::time::timeout(Duration::from_secs(10), proc.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.phase, ProcPhase::Exited);
    assert_eq!(st.exit.unwrap().code, 3);
    assert_eq!(proc.signal("TERM").await.unwrap_err().kind(), Some(ErrorKind::Closed));
    let again = anchor.make_proc(ProcSpec::new("/bin/true", Vec::<String>::new())).await;
    assert_eq!(again.err().and_then(|e| e.kind()), Some(ErrorKind::Exists));
    proc.scrub().await.unwrap();
    assert_eq!(proc.peek().await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    let server = client.walk(&srv.id).unwrap().proc();
    assert_eq!(server.peek().await.unwrap_err().kind(), Some(ErrorKind::WrongKind));
    assert_eq!(server.wait().await.unwrap_err().kind(), Some(ErrorKind::WrongKind));
}

#[test]
fn stopping_the_server_leaves_processes_running() {
    let mut srv = TestServer::start(&[]);
    let p = format!("{}/survivor", srv.id);
    let pid = srv.mkproc(&p, &spec("/bin/sleep", &["60"]));
    let _pids = Pids::of([pid]);
    let id = srv.id.clone();
    ok(srv.cli("stop", &[&id]));
    assert!(srv.wait_exit(Duration::from_secs(10)).is_some(), "the server stops");
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pid), "detached, not killed: {:?}", state(pid));
}
