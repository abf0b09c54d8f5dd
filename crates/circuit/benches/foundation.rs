//! Figures for the foundation (issue 2): idle RSS and CPU of a server, `peek`
//! latency from the CLI and from the library, the cost of the handshake.
//! Run: `cargo bench -p circuit --bench foundation`. Prints figures; asserts nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer as Server;

fn start(extra: &[&str]) -> Server {
    let threads = std::env::var("BENCH_THREADS").unwrap_or_else(|_| "2".into());
    Server::start(&[&["--threads", threads.as_str()], extra].concat())
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn cli_peek(srv: &Server, key: Option<&str>, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_circuit"));
        cmd.args(["peek", "-d", &srv.url, &srv.id]).stdout(Stdio::null());
        if let Some(k) = key {
            cmd.args(["-hmac", k]);
        }
        let t = Instant::now();
        let st = cmd.status().unwrap();
        times.push(t.elapsed());
        assert!(st.success());
    }
    median(times)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("circuit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyfile = dir.join("key");
    std::fs::write(&keyfile, circuit_proto::Key::generate()).unwrap();
    let keyfile = keyfile.to_str().unwrap().to_string();

    let plain = start(&[]);
    let pid = plain.child.id();
    std::thread::sleep(Duration::from_millis(500));
    println!("idle server RSS after start: {:.2} MiB", rss_kib(pid) as f64 / 1024.0);

    let (med, p99) = cli_peek(&plain, None, 200);
    println!(
        "CLI peek, plain (200 runs): median {:.2} ms, p99 {:.2} ms",
        ms(med),
        ms(p99)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (lmed, lp99, thr) = rt.block_on(async {
        let c = circuit_client::Client::dial(&plain.url, None).await.unwrap();
        let a = c.walk(&plain.id).unwrap();
        for _ in 0..1000 {
            a.stat().await.unwrap();
        }
        let mut v = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            a.stat().await.unwrap();
            v.push(t.elapsed());
        }
        let (m, p) = median(v);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..1000 {
                    a.stat().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (m, p, 32_000.0 / t.elapsed().as_secs_f64())
    });
    println!(
        "library peek, plain (20,000 sequential): median {:.1} µs, p99 {:.1} µs",
        us(lmed),
        us(lp99)
    );
    println!("library peek, plain, 32 concurrent callers: {thr:.0} peeks/s");
    println!("server RSS after that load: {:.2} MiB", rss_kib(pid) as f64 / 1024.0);

    let keyed = start(&["-hmac", &keyfile]);
    let (kmed, kp99) = cli_peek(&keyed, Some(&keyfile), 200);
    println!(
        "CLI peek, keyed (200 runs): median {:.2} ms, p99 {:.2} ms",
        ms(kmed),
        ms(kp99)
    );
    println!(
        "handshake cost on a CLI call (keyed - plain median): {:.2} ms",
        ms(kmed) - ms(med)
    );
    let key = circuit_proto::Key::load(keyfile.as_ref()).unwrap();
    let kl = rt.block_on(async {
        let c = circuit_client::Client::dial(&keyed.url, Some(&key)).await.unwrap();
        let a = c.walk(&keyed.id).unwrap();
        let mut v = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            a.stat().await.unwrap();
            v.push(t.elapsed());
        }
        median(v).0
    });
    println!("library peek, keyed (20,000 sequential): median {:.1} µs", us(kl));

    let idle = start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let (t0, s) = (cpu_ticks(idle.child.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu_ticks(idle.child.id()) - t0;
    let hz = 100.0;
    println!(
        "idle server CPU over {:.0} s: {:.3} % ({} ticks); RSS {:.2} MiB",
        s.elapsed().as_secs_f64(),
        ticks as f64 / hz / s.elapsed().as_secs_f64() * 100.0,
        ticks,
        rss_kib(idle.child.id()) as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
