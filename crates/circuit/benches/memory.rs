//! Memory given back (issue 9): a server's RSS idle, after 2,000 connections
//! opened at once and closed, and after 60,000 requests, plain and keyed.
//! Run: `cargo bench -p circuit --bench memory` (`MEMORY_CONNS`,
//! `MEMORY_REQUESTS` for other counts). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use circuit_client::Client;
use circuit_proto::Key;

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer;

/// Resident heap and stacks (`RssAnon`): what the allocator holds. `VmRSS`
/// adds the binary's code, paged in as code paths are first used (some
/// 3 MiB more after the first handshakes and requests), which no allocator
/// setting gives back, so the figures compare `RssAnon`, and print `VmRSS` too.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn vmrss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// RSS once it has settled: the server gives memory back after a quiet
/// moment (500 ms), so this waits 1.5 s, then up to 5 s more for two equal
/// readings 500 ms apart.
fn settled(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_millis(1500));
    let mut last = rss_kib(pid);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_kib(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

async fn run(label: &str, key: Option<&Key>, keyfile: Option<&str>, conns: usize, requests: usize) {
    // All connections come from 127.0.0.1: lift the per-address cap.
    let cap = (conns + 16).to_string();
    let srv = match keyfile {
        Some(k) => TestServer::start(&["--max-conns-per-addr", &cap, "-hmac", k]),
        None => TestServer::start(&["--max-conns-per-addr", &cap]),
    };
    let pid = srv.child.id();
    let idle = settled(pid);
    let idle_vm = vmrss_kib(pid);

    // Many connections at once, one request each, then all closed.
    let t = Instant::now();
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        let c = Client::dial(&srv.url, key).await.unwrap();
        c.walk(&srv.id).unwrap().stat().await.unwrap();
        clients.push(c);
    }
    let peak = rss_kib(pid);
    drop(clients);
    let open_for = t.elapsed();
    let after_conns = settled(pid);
    let after_conns_vm = vmrss_kib(pid);
    let fds_after = fds(pid);
    if std::env::var("MEMORY_SMAPS").is_ok() {
        let sm = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut cur = String::new();
        for l in sm.lines() {
            if !l.contains(':') || l.split_whitespace().next().is_some_and(|w| w.contains('-')) {
                cur = l.to_string();
            } else if let Some(r) = l.strip_prefix("Rss:") {
                let kb: u64 = r.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                if kb > 400 {
                    println!("  {kb} kB  {cur}");
                }
            }
        }
    }

    // Many requests over a few connections, 8 at a time.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = Client::dial(&srv.url, key).await.unwrap();
        let id = srv.id.clone();
        tasks.push(tokio::spawn(async move {
            let a = c.walk(&id).unwrap();
            for _ in 0..requests / 8 {
                a.stat().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = t.elapsed();
    let after_requests = settled(pid);
    let after_requests_vm = vmrss_kib(pid);

    println!(
        "{label}: VmRSS (with code pages) idle {:.2} MiB, after the connections {:.2} MiB, after the requests {:.2} MiB",
        mib(idle_vm),
        mib(after_conns_vm),
        mib(after_requests_vm)
    );
    println!("{label}: RssAnon idle {:.2} MiB", mib(idle));
    println!("{label}: descriptors after the connections closed: {fds_after}");
    println!(
        "{label}: RssAnon with {conns} connections open {:.2} MiB ({:.1} s), after they closed {:.2} MiB ({:+.2} MiB from idle)",
        mib(peak),
        open_for.as_secs_f64(),
        mib(after_conns),
        mib(after_conns) - mib(idle)
    );
    println!(
        "{label}: RssAnon after {requests} requests ({:.0}/s) {:.2} MiB ({:+.2} MiB from idle)",
        requests as f64 / took.as_secs_f64(),
        mib(after_requests),
        mib(after_requests) - mib(idle)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    let conns = env("MEMORY_CONNS", 2_000);
    let requests = env("MEMORY_REQUESTS", 60_000);
    let dir = common::TempDir::new("memory-bench");
    let keyfile = dir.0.join("key");
    std::fs::write(&keyfile, Key::generate()).unwrap();
    let key = Key::load(&keyfile).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run("plain", None, None, conns, requests));
    rt.block_on(run("keyed", Some(&key), keyfile.to_str(), conns, requests));
}
