//! Figures for watchers (issue 5): respawn latency after kill -9 (until the
//! replacement runs, as `peek` reports it), start of 100 processes of one
//! watcher, and the server's RSS and idle CPU while it supervises them.
//! Run: `cargo bench -p circuit --bench watch`. Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use circuit_client::{Client, WatchSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer as Server;

fn start() -> Server {
    Server::start(&[])
}

/// (utime + stime in ticks, RSS in bytes) of `pid` (ticks of 1/100 s and
/// 4 KiB pages, as on Linux/x86-64).
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (ticks, pages * 4096)
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let f: Vec<&str> = s[s.rfind(')').unwrap() + 1..].split_whitespace().collect();
            matches!(f[0], "S" | "R")
        })
        .unwrap_or(false)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let srv = start();
    let client = Client::dial(&srv.url, None).await.unwrap();

    // Respawn after kill -9: from the kill to a running replacement.
    let w = client
        .walk(&format!("{}/respawn", srv.id))
        .unwrap()
        .make_watch(WatchSpec::new("/bin/sleep", ["3600"]))
        .await
        .unwrap();
    let mut lat = Vec::new();
    for _ in 0..100 {
        let old = w.peek().await.unwrap().processes[0].pid;
        let t = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        loop {
            let st = w.peek().await.unwrap();
            if st.processes.first().is_some_and(|p| p.pid != old && running(p.pid)) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no respawn");
        }
        lat.push(t.elapsed());
        // Stay clear of flapping (2 restarts within 1 s by default).
        tokio::time::sleep(Duration::from_millis(550)).await;
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "respawn after kill -9, until peek shows a running replacement: median {:.2} ms, p99 {:.2} ms (n={})",
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() * 99 / 100]),
        lat.len()
    );
    w.scrub().await.unwrap();

    // Start of 100 processes of one watcher.
    let mut spec = WatchSpec::new("/bin/sleep", ["3600"]);
    spec.num_processes = 100;
    let t = Instant::now();
    let w = client
        .walk(&format!("{}/hundred", srv.id))
        .unwrap()
        .make_watch(spec)
        .await
        .unwrap();
    let made = t.elapsed();
    let pids: Vec<u32> = w.peek().await.unwrap().processes.iter().map(|p| p.pid).collect();
    while !pids.iter().all(|p| running(*p)) {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "start of 100 processes: mkwatch answered in {:.1} ms, all {} running after {:.1} ms",
        ms(made),
        pids.len(),
        ms(t.elapsed())
    );

    // The server supervising them, idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = srv.child.id();
    let (t0, _) = usage(server);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let (t1, rss) = usage(server);
    println!(
        "server with 100 supervised processes: RSS {:.1} MiB, idle CPU {:.3} % over {} s",
        rss as f64 / (1024.0 * 1024.0),
        (t1 - t0) as f64 / 100.0 / window.as_secs_f64() * 100.0,
        window.as_secs()
    );
    w.scrub().await.unwrap();
}
