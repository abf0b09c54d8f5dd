//! Test support: real `circuit` servers as child processes on loopback, and
//! the real CLI run against them. Every wait is bounded; every server is
//! killed by PID when its handle drops.
#![allow(dead_code)]

pub mod docker;
pub mod http;
pub mod netns;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_circuit"))
}

/// A running server, killed on drop.
pub struct TestServer {
    pub child: Child,
    /// Its URL, as printed on stdout.
    pub url: String,
    /// Its root path, `/X…`.
    pub id: String,
    /// Everything it wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl TestServer {
    /// `circuit start -a 127.0.0.1:0` plus `extra` flags.
    pub fn start(extra: &[&str]) -> TestServer {
        let mut cmd = Command::new(bin());
        cmd.args(["start", "-a", "127.0.0.1:0"]).args(extra);
        TestServer::spawn(cmd)
    }

    /// Starts the server `cmd` describes (e.g. inside a network namespace).
    pub fn spawn(mut cmd: Command) -> TestServer {
        let mut child = cmd
            .env_remove("CIRCUIT_DISCOVER")
            .env_remove("CIRCUIT_HMAC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn circuit start");
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read URL");
        let url = line.trim().to_string();
        assert!(
            url.starts_with("circuit://"),
            "server printed {url:?}; log: {}",
            log.lock().unwrap()
        );
        let id = format!("/{}", url.rsplit('/').next().unwrap());
        TestServer { child, url, id, log }
    }

    /// The address the server listens on (from its URL).
    pub fn addr(&self) -> std::net::SocketAddr {
        let host = self.url.trim_start_matches("circuit://").split('/').next().unwrap();
        host.parse().unwrap()
    }

    /// Runs the CLI against this server: `circuit CMD -d URL ARGS...`.
    pub fn cli(&self, cmd: &str, args: &[&str]) -> Output {
        self.cli_in(cmd, args, b"")
    }

    /// Like `cli`, with bytes on stdin.
    pub fn cli_in(&self, cmd: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut full = vec![cmd, "-d", &self.url];
        full.extend_from_slice(args);
        run_cli(&full, stdin, &[])
    }

    /// Waits (bounded) for the server process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed server cannot remove its default state directory: we do.
        let dir = format!("circuit-{}-P{}", self.id.trim_start_matches('/'), self.child.id());
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(dir));
    }
}

/// Runs `circuit ARGS` with `stdin` and extra environment, bounded to 60 s.
pub fn run_cli(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("CIRCUIT")
        .env_remove("CIRCUIT_DISCOVER")
        .env_remove("CIRCUIT_HMAC")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn circuit");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Our own child, by PID: a hung CLI fails the test instead of hanging it.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("wait for circuit");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    out
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts failure with exit code 1 and a one-line error; returns it.
#[track_caller]
pub fn fails(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1: stdout: {} stderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "error must be one line: {err:?}");
    err
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("circuit-test-{tag}-{}-{}", std::process::id(), rand_u32()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// A fresh cluster key made by `circuit keygen`, in file `name` here:
    /// its path, for `-hmac`.
    pub fn key(&self, name: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, ok(run_cli(&["keygen"], b"", &[]))).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
}

/// A CLI process left running in the background; killed on drop.
pub struct Running {
    pub child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Starts `circuit CMD -d URL ARGS...` with the given stdin.
pub fn spawn_cli(srv: &TestServer, cmd: &str, args: &[&str], stdin: Stdio) -> Running {
    let mut child = Command::new(bin())
        .arg(cmd)
        .args(["-d", &srv.url])
        .args(args)
        .env_remove("CIRCUIT")
        .env_remove("CIRCUIT_DISCOVER")
        .env_remove("CIRCUIT_HMAC")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn circuit");
    let out = Some(drain(child.stdout.take().unwrap()));
    let err = Some(drain(child.stderr.take().unwrap()));
    Running { child, out, err }
}

impl Running {
    /// True if the process has not exited after `d`.
    pub fn still_running_after(&mut self, d: Duration) -> bool {
        std::thread::sleep(d);
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn finish_within(&mut self, limit: Duration) -> Option<Finished> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                let text =
                    |h: Option<JoinHandle<Vec<u8>>>| String::from_utf8_lossy(&h.unwrap().join().unwrap()).into_owned();
                return Some(Finished {
                    status,
                    stdout: text(self.out.take()),
                    stderr: text(self.err.take()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until the server log holds `needle` at least `n` times.
pub fn wait_log(srv: &TestServer, needle: &str, n: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if srv.log().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills (by pid) the processes a test saw, should it fail before they are gone.
#[derive(Default)]
pub struct Pids(pub std::collections::BTreeSet<u64>);

impl Pids {
    /// Tracks these pids.
    pub fn of(pids: impl IntoIterator<Item = u64>) -> Pids {
        Pids(pids.into_iter().collect())
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// The `State:` letter of /proc/PID/status, if the process exists.
pub fn state(pid: u64) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|v| v.trim().chars().next())
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: u64) -> bool {
    matches!(state(pid), Some(c) if c != 'Z')
}

/// The children of `parent` and their state letters, from /proc.
pub fn children(parent: u64) -> Vec<(u64, char)> {
    processes()
        .into_iter()
        .filter(|p| p.1 == parent)
        .map(|p| (p.0, p.2))
        .collect()
}

/// Every process: its pid, its parent's and its state letter, from /proc.
pub fn processes() -> Vec<(u64, u64, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if let Some(ppid) = f.get(1).and_then(|p| p.parse::<u64>().ok()) {
            out.push((pid, ppid, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// How many descriptors the process has open.
pub fn fd_count(pid: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The process's resident set (`VmRSS`), in KiB.
pub fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
