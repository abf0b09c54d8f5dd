//! Figures for breakers (issue 11): allow+record pairs per second through
//! the library against one server with concurrent callers, through the CLI
//! (`breaker exec -- true`) per call, and in-process (`LocalBreaker`); and
//! circuitry's serialisation case: 4 concurrent 100 ms jobs on one key
//! (circuitry held its lock for the whole job: 400 ms).
//! Run: `cargo bench -p circuit --bench breaker`. Prints figures; asserts nothing.
//! `BENCH_SECS` sets each throughput run's length (default 3).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use circuit_client::{Admission, BreakerSpec, Client, LocalBreaker, Outcome};

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer as Server;

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

fn exec(srv: &Server, path: &str, key: &str, cmd: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_circuit"))
        .args(["breaker", "exec", "-d", &srv.url, path, "--key", key, "--"])
        .args(cmd)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// `circuit start` with its stderr (one line per op) in `log`.
fn start_logging_to(log: &std::path::Path) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_circuit"))
        .args(["start", "-a", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    let id = format!("/{}", url.rsplit('/').next().unwrap());
    Server {
        child,
        url,
        id,
        log: Default::default(),
    }
}

/// Pairs per second through the library: `conns` connections, `tasks`
/// callers on each, `keys` keys, for `secs()`.
fn library(srv: &Server, path: &str, conns: usize, tasks: usize, keys: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for c in 0..conns {
            let b = Client::dial(&srv.url, None)
                .await
                .unwrap()
                .walk(path)
                .unwrap()
                .breaker();
            for t in 0..tasks {
                let (b, done, stop) = (b.clone(), done.clone(), stop.clone());
                let key = format!("tenant-{}", (c * tasks + t) % keys);
                handles.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Admission::Permit(p) = b.allow(&key).await.unwrap() else {
                            panic!("rejected")
                        };
                        b.record(&p, Outcome::Success).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        // Warm up, then measure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start_n = done.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(secs()).await;
        let n = done.load(Ordering::Relaxed) - start_n;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await.unwrap();
        }
        rate
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // The server logs every op, as always, to a file (as under systemd or
    // a log file), not to a pipe a test thread drains line by line.
    let dir = common::TempDir::new("bench-breaker");
    let srv = start_logging_to(&dir.0.join("server.log"));
    let path = format!("{}/b", srv.id);
    let o = srv.cli_in("mkbreaker", &[&path], br#"{"FailureThreshold": 5}"#);
    assert!(o.status.success());

    for (conns, tasks, keys) in [(1, 1, 1), (4, 16, 64), (8, 32, 1), (16, 64, 64)] {
        let rate = library(&srv, &path, conns, tasks, keys);
        println!("allow+record pairs/s, library, {conns} connection(s) × {tasks} caller(s), {keys} key(s): {rate:.0}");
    }

    let mut v = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        assert!(exec(&srv, &path, "cli", &["true"]).wait().unwrap().success());
        v.push(t.elapsed());
    }
    v.sort();
    println!(
        "breaker exec -- true, CLI per call (100 runs): median {:.2} ms, p99 {:.2} ms",
        v[50].as_secs_f64() * 1e3,
        v[99].as_secs_f64() * 1e3
    );

    let local = LocalBreaker::new(BreakerSpec::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rate = rt.block_on(async {
        let n = 1_000_000;
        let t = Instant::now();
        for i in 0..n {
            let Admission::Permit(p) = local.allow(if i % 2 == 0 { "a" } else { "b" }).await.unwrap() else {
                panic!()
            };
            local.record(&p, Outcome::Success).await.unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    });
    println!("allow+record pairs/s, in-process LocalBreaker, one thread: {rate:.0}");

    // circuitry's case: 4 concurrent 100 ms jobs on one key.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let took = rt.block_on(async {
        let b = Client::dial(&srv.url, None)
            .await
            .unwrap()
            .walk(&path)
            .unwrap()
            .breaker();
        let t = Instant::now();
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.call("one-tenant", tokio::time::sleep(Duration::from_millis(100)), |_| {
                        Outcome::Success
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for j in jobs {
            j.await.unwrap();
        }
        t.elapsed()
    });
    println!(
        "4 concurrent 100 ms jobs on one key, library: {:.0} ms (circuitry: 400 ms)",
        took.as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let children: Vec<_> = (0..4)
        .map(|_| exec(&srv, &path, "one-tenant", &["sleep", "0.1"]))
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    println!(
        "4 concurrent `breaker exec -- sleep 0.1` on one key, CLI: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
