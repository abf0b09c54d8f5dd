//! Figures for the breaker over Redis (issue 11): allow+record pairs per
//! second through `RedisBreaker` with concurrent callers, beside
//! `redis-benchmark` running the same script (`EVALSHA`, the allow op) and
//! `PING` against the same server in the same run.
//! Run: `cargo bench -p circuit-client --features redis --bench redis_breaker`.
//! Prints figures; asserts nothing. `BENCH_SECS` sets each library run's
//! length (default 3). Needs `redis-server` and `redis-benchmark`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use circuit_client::{Admission, BreakerSpec, Outcome, RedisBreaker};

struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Option<Redis> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let dir = std::env::temp_dir().join(format!("circuit-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Redis { child, port, dir };
    for _ in 0..200 {
        if cli(r.port, &["PING"]) == "PONG" {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// Pairs per second: `clients` handles (one connection each), `tasks`
/// callers on each, `keys` keys, for `secs()`.
fn library(url: &str, clients: usize, tasks: usize, keys: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for c in 0..clients {
            let b = RedisBreaker::new(url, "bench").unwrap().with_publish(false);
            for t in 0..tasks {
                let (b, done, stop) = (b.clone(), done.clone(), stop.clone());
                let key = format!("tenant-{}", (c * tasks + t) % keys);
                handles.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match b.allow(&key).await.unwrap() {
                            Admission::Permit(p) => {
                                b.record(&p, Outcome::Success).await.unwrap();
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                }));
            }
        }
        // Warm up (connections, the script loaded), then measure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (t0, n0) = (Instant::now(), done.load(Ordering::Relaxed));
        tokio::time::sleep(secs()).await;
        let rate = (done.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.await.unwrap();
        }
        rate
    })
}

/// `redis-benchmark` of `args`, requests per second (its `-q` figure).
fn redis_benchmark(port: u16, clients: usize, requests: usize, args: &[&str]) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "-q",
        ])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA … KEYS …: 41322.31 requests per second, p50=…" (the keys hold
    // colons too); progress lines end in '\r'.
    let last = text
        .rsplit('\r')
        .next()?
        .lines()
        .find(|l| l.contains("requests per second"))?;
    let before = last.split(" requests per second").next()?;
    before.split_whitespace().last()?.parse().ok()
}

fn main() {
    let Some(redis) = start_redis() else {
        println!("skipped: redis-server could not be started (apt-get install redis-server redis-tools)");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = BreakerSpec {
        failure_threshold: 1_000_000,
        permit_ttl: 2.0,
        ..BreakerSpec::default()
    };
    let b = rt.block_on(async { RedisBreaker::make(&url, "bench", spec).await.unwrap() });
    println!(
        "redis-server {} on 127.0.0.1:{}",
        cli(redis.port, &["INFO", "server"])
            .lines()
            .find(|l| l.starts_with("redis_version"))
            .unwrap_or("?"),
        redis.port
    );
    for (clients, tasks, keys) in [(1, 1, 1), (1, 32, 64), (4, 16, 64), (8, 32, 1)] {
        let rate = library(&url, clients, tasks, keys);
        println!(
            "allow+record pairs/s, RedisBreaker, {clients} connection(s) × {tasks} caller(s), {keys} key(s): {rate:.0}"
        );
    }
    // circuitry's serialisation case: 4 concurrent 100 ms jobs on one key
    // (it held its Redis lock for each whole job: 400 ms).
    let took = rt.block_on(async {
        let t0 = Instant::now();
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.call("serial", tokio::time::sleep(Duration::from_millis(100)), |_| {
                        Outcome::Success
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for j in jobs {
            assert!(j.await.unwrap().value().is_some());
        }
        t0.elapsed()
    });
    println!(
        "4 concurrent 100 ms jobs on one key under RedisBreaker: {:.0} ms (circuitry: 400 ms)",
        took.as_secs_f64() * 1e3
    );
    // The same script as the library runs, loaded by its SHA, on one key:
    // each request is one allow (a pair is two script calls).
    let sha = cli(
        redis.port,
        &["SCRIPT", "LOAD", include_str!("../src/redis_breaker.lua")],
    );
    let [state, permits, probes] = b.key_layout("rb");
    let spec_key = b.spec_key();
    let ids = spec_key.replace(":spec", ":ids");
    let mut args = vec!["EVALSHA", &sha, "5", &spec_key, &ids, &state, &permits, &probes];
    args.extend(["allow", "rb", "", "604800000"]);
    for clients in [1, 50] {
        match redis_benchmark(redis.port, clients, 100_000, &args) {
            Some(r) => println!(
                "redis-benchmark EVALSHA (breaker allow), {clients} client(s): {r:.0} calls/s = {:.0} allow+record pairs/s",
                r / 2.0
            ),
            None => println!("redis-benchmark EVALSHA: no figure (is redis-benchmark installed?)"),
        }
        match redis_benchmark(redis.port, clients, 200_000, &["PING"]) {
            Some(r) => println!("redis-benchmark PING, {clients} client(s): {r:.0} requests/s"),
            None => println!("redis-benchmark PING: no figure"),
        }
    }
}
