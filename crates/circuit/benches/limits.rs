//! Figures for answers larger than one frame (1 MiB): `peek` of a watcher of
//! 10,000 processes (about 1.3 MB of JSON), through the library and the CLI,
//! and `ls` of a 1.5 MB listing. Heavy: 10,000 `sleep` processes for about a
//! minute (10,000 pids, some 1.5 GB). Run: `cargo bench -p circuit --bench limits`
//! (`LIMITS_PROCS=N` for another count). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use circuit_client::{Client, WatchSpec};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Pids, TestServer, alive, ok};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u32 = std::env::var("LIMITS_PROCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let srv = TestServer::start(&[]);
    let client = Client::dial(&srv.url, None).await.unwrap();

    let mut spec = WatchSpec::new("/bin/sleep", ["3600"]);
    spec.num_processes = n;
    let path = format!("{}/many", srv.id);
    let t = Instant::now();
    let w = client.walk(&path).unwrap().make_watch(spec).await.unwrap();
    let mut guard = Pids::default();
    loop {
        let st = w.peek().await.unwrap();
        guard.0.extend(st.processes.iter().map(|p| p.pid as u64));
        if st.processes.len() == n as usize {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {} of {n} started",
            st.processes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "watcher of {n} sleep processes: all started after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut lib = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let st = w.peek().await.unwrap();
        lib.push(t.elapsed());
        assert_eq!(st.processes.len(), n as usize);
    }
    lib.sort();
    let t = Instant::now();
    let out = ok(srv.cli("peek", &[&path]));
    let cli = t.elapsed();
    println!(
        "peek of it: library median {:.1} ms, CLI {:.1} ms for {:.2} MB of JSON",
        ms(lib[lib.len() / 2]),
        ms(cli),
        out.len() as f64 / 1e6
    );
    let t = Instant::now();
    let stats = ok(srv.cli("stats", &[&srv.id]));
    println!(
        "stats of the server: {:.1} ms, {:.2} MB",
        ms(t.elapsed()),
        stats.len() as f64 / 1e6
    );

    let t = Instant::now();
    w.scrub().await.unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while guard.0.iter().any(|p| alive(*p)) && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("scrub: all {n} gone after {:.1} s", t.elapsed().as_secs_f64());
    drop(guard);

    // A listing of 12 channels 64 names deep (names of 60 bytes): about 1.5 MB.
    for i in 0..12 {
        let names: String = (0..64).map(|j| format!("/c{i:02}l{j:02}{}", "x".repeat(54))).collect();
        ok(srv.cli("mkchan", &[&format!("{}{names}", srv.id), "1"]));
    }
    let all = format!("{}/...", srv.id);
    let t = Instant::now();
    let listed = ok(srv.cli("ls", &[&all]));
    println!(
        "ls of {} anchors 64 deep ({:.2} MB): {:.1} ms",
        listed.lines().count(),
        listed.len() as f64 / 1e6,
        ms(t.elapsed())
    );
}
