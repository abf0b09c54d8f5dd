//! The web console's cost (issue 12). Prints figures; asserts nothing.
//! Run: `cargo bench -p circuit --bench console`.
//!
//! 1. Nobody connected: RSS and CPU of servers started with `--http` and
//!    without, side by side (`CONSOLE_IDLE_SERVERS` of each, default 4).
//! 2. One page's event stream on 3 servers × `CONSOLE_PROCS` processes
//!    (default 100): the servers' CPU and the bytes per second sent, over
//!    `CONSOLE_SECS` seconds (default 20), against the same cluster with
//!    nobody connected.
//!
//! `CONSOLE_BIN=target/release/circuit` runs that binary as the servers
//! instead of the one cargo built for the bench (so the harness can be built
//! with `--profile dev` against a release server).
//!
//! 3. Event → page: a watcher's process killed (SIGKILL, by pid) to the
//!    `exited` and `spawned` events arriving at an SSE client,
//!    `CONSOLE_ROUNDS` times (default 30); and, with Chromium installed, to
//!    the new pid shown in the page of a headless browser (polled through
//!    the DevTools protocol every 5 ms, which bounds its resolution).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer;
use common::http::Sse;

/// `circuit start -a 127.0.0.1:0 ARGS` of the binary under measure.
fn start(args: &[&str]) -> TestServer {
    let bin = std::env::var_os("CONSOLE_BIN").map_or_else(common::bin, std::path::PathBuf::from);
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["start", "-a", "127.0.0.1:0"]).args(args);
    TestServer::spawn(cmd)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn console_addr(srv: &TestServer) -> SocketAddr {
    assert!(common::wait_log(
        srv,
        "serving the web console",
        1,
        Duration::from_secs(10)
    ));
    let log = srv.log();
    let at = log.find("url=http://").unwrap() + "url=http://".len();
    let rest = &log[at..];
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn idle_cost() {
    let n = env("CONSOLE_IDLE_SERVERS", 4);
    let plain: Vec<TestServer> = (0..n).map(|_| start(&[])).collect();
    let with: Vec<TestServer> = (0..n).map(|_| start(&["--http", "127.0.0.1:0"])).collect();
    for s in &with {
        console_addr(s);
    }
    std::thread::sleep(Duration::from_secs(3));
    let pids = |v: &[TestServer]| v.iter().map(|s| s.child.id()).collect::<Vec<_>>();
    let (pp, wp) = (pids(&plain), pids(&with));
    let mean = |pids: &[u32], field: &str| {
        pids.iter().map(|p| status_kib(*p, field)).sum::<u64>() as f64 / pids.len() as f64 / 1024.0
    };
    let cpu0: Vec<u64> = pp.iter().chain(&wp).map(|p| cpu_ticks(*p)).collect();
    let secs = 10;
    std::thread::sleep(Duration::from_secs(secs));
    let cpu1: Vec<u64> = pp.iter().chain(&wp).map(|p| cpu_ticks(*p)).collect();
    let ms = |range: std::ops::Range<usize>| {
        range.clone().map(|i| (cpu1[i] - cpu0[i]) * 10).sum::<u64>() as f64 / range.len() as f64
    };
    println!("console idle, {n} servers each, nobody connected:");
    for field in ["VmRSS:", "RssAnon:"] {
        let (a, b) = (mean(&pp, field), mean(&wp, field));
        println!(
            "  {:<9} without --http {a:.2} MiB, with {b:.2} MiB: {:+.2} MiB",
            field.trim_end_matches(':'),
            b - a
        );
    }
    println!(
        "  CPU over {secs} s: without {:.0} ms, with {:.0} ms per server",
        ms(0..n),
        ms(n..2 * n)
    );
}

fn cluster(procs: usize) -> (Vec<TestServer>, SocketAddr) {
    let a = start(&["--http", "127.0.0.1:0"]);
    let addr = console_addr(&a);
    let b = start(&["-j", &a.url]);
    let c = start(&["-j", &a.url]);
    let spec = format!(r#"{{"Path": "/bin/sleep", "Args": ["3600"], "NumProcesses": {procs}}}"#);
    for s in [&a, &b, &c] {
        common::ok(s.cli_in("mkwatch", &[&format!("{}/w", s.id)], spec.as_bytes()));
    }
    (vec![a, b, c], addr)
}

fn one_page(procs: usize) {
    let secs = env("CONSOLE_SECS", 20) as u64;
    let (servers, addr) = cluster(procs);
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let sample = |f: &dyn Fn()| {
        let t0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
        let start = Instant::now();
        f();
        let el = start.elapsed().as_secs_f64();
        pids.iter()
            .zip(t0)
            .map(|(p, t)| (cpu_ticks(*p) - t) as f64 * 10.0 / el / 10.0)
            .collect::<Vec<f64>>()
    };
    let quiet = sample(&|| std::thread::sleep(Duration::from_secs(secs)));
    let bytes = std::cell::Cell::new(0usize);
    let events = std::cell::Cell::new(0usize);
    let open = sample(&|| {
        let mut sse = Sse::open(addr, "/api/events", &[]);
        let end = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match sse.next(left) {
                Some((name, data)) => {
                    bytes.set(bytes.get() + name.len() + data.len() + 15);
                    events.set(events.get() + 1);
                }
                None => break,
            }
        }
    });
    println!("one page open on 3 servers × {procs} processes, {secs} s:");
    println!(
        "  server CPU (% of one core; the console's server first): nobody {:.2} / {:.2} / {:.2}, one page {:.2} / {:.2} / {:.2}",
        quiet[0], quiet[1], quiet[2], open[0], open[1], open[2]
    );
    println!(
        "  sent to the page: {:.0} bytes/s ({} messages; SSE payload, HTTP framing aside)",
        bytes.get() as f64 / secs as f64,
        events.get()
    );
}

fn latency() {
    let rounds = env("CONSOLE_ROUNDS", 30);
    let a = start(&["--http", "127.0.0.1:0"]);
    let addr = console_addr(&a);
    let spec = r#"{"Path": "/bin/sleep", "Args": ["3600"], "NumProcesses": 1,
      "Flapping": {"Attempts": 1000, "Window": 1, "RetryIn": 1, "MaxRetry": 1}}"#;
    common::ok(a.cli_in("mkwatch", &[&format!("{}/w", a.id)], spec.as_bytes()));
    let mut sse = Sse::open(addr, "/api/events", &[]);
    sse.next(Duration::from_secs(5)).expect("hello");
    let path = format!("{}/w", a.id);
    let pid_of = || -> u32 {
        let peek = common::http::get(addr, &format!("/api/peek?path={path}"), &[]).json();
        peek["Stat"]["Processes"][0]["Pid"].as_u64().unwrap_or(0) as u32
    };
    let (mut exited, mut spawned) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let pid = pid_of();
        if pid == 0 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let t0 = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        let mut got_exit = None;
        let end = t0 + Duration::from_secs(5);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Some((name, data)) = sse.next(left) else { break };
            if name != "event" || !data.contains(&path) {
                continue;
            }
            if data.contains("\"exited\"") && data.contains(&format!("\"Pid\":{pid}")) {
                got_exit = Some(t0.elapsed());
            } else if data.contains("\"spawned\"") && got_exit.is_some() {
                exited.push(got_exit.unwrap().as_secs_f64() * 1000.0);
                spawned.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if exited.is_empty() {
        println!("event → page: no respawn was seen");
        return;
    }
    let (n, max_s) = (spawned.len(), spawned.iter().cloned().fold(0.0, f64::max));
    println!("event → page (kill -9 of a watcher's process → the event at an SSE client), {n} rounds:");
    println!(
        "  exited: median {:.1} ms; spawned (respawn): median {:.1} ms, max {max_s:.1} ms",
        median(&mut exited),
        median(&mut spawned)
    );
}

/// Kill -9 of the watcher's process to its replacement's pid in the page.
async fn browser_latency(rounds: usize) {
    use futures::StreamExt;
    let Some(exe) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
    else {
        println!("event → page in a browser: skipped (no chromium)");
        return;
    };
    let a = start(&["--http", "127.0.0.1:0"]);
    let addr = console_addr(&a);
    let spec = r#"{"Path": "/bin/sleep", "Args": ["3600"], "NumProcesses": 1,
      "Flapping": {"Attempts": 1000, "Window": 1, "RetryIn": 1, "MaxRetry": 1}}"#;
    common::ok(a.cli_in("mkwatch", &[&format!("{}/w", a.id)], spec.as_bytes()));
    let profile = common::TempDir::new("bench-chromium");
    let config = chromiumoxide::BrowserConfig::builder()
        .chrome_executable(exe)
        .no_sandbox()
        .arg("--disable-dev-shm-usage")
        .arg("--disable-gpu")
        .user_data_dir(&profile.0)
        .build()
        .unwrap();
    let (mut browser, mut handler) = chromiumoxide::Browser::launch(config).await.unwrap();
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page(format!("http://{addr}/ui/")).await.unwrap();
    let row = format!(".element[data-path=\"{}/w\"] tr.proc td.pid", a.id);
    let shown = format!("(document.querySelector('{row}') || {{}}).textContent || ''");
    let pid_in_page = |page: &chromiumoxide::Page| {
        let page = page.clone();
        let js = shown.clone();
        async move {
            page.evaluate(js.as_str())
                .await
                .ok()
                .and_then(|v| v.into_value::<String>().ok())
                .and_then(|t| t.parse::<u32>().ok())
                .unwrap_or(0)
        }
    };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let mut pid = 0;
        for _ in 0..200 {
            pid = pid_in_page(&page).await;
            if pid != 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if pid == 0 {
            continue;
        }
        let t0 = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        while t0.elapsed() < Duration::from_secs(5) {
            let now = pid_in_page(&page).await;
            if now != 0 && now != pid {
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), browser.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), browser.wait()).await;
    if times.is_empty() {
        println!("event → page in a browser: no respawn was seen");
        return;
    }
    let n = times.len();
    let max = times.iter().cloned().fold(0.0, f64::max);
    println!(
        "event → page in headless Chromium (kill -9 → the new pid in the page), {n} rounds: median {:.1} ms, max {max:.1} ms",
        median(&mut times)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = std::env::var_os("CONSOLE_BIN").map_or_else(common::bin, std::path::PathBuf::from);
    println!("servers: {}", bin.display());
    idle_cost();
    one_page(env("CONSOLE_PROCS", 100));
    latency();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(browser_latency(env("CONSOLE_ROUNDS", 30)));
}
