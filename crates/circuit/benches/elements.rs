//! Figures for processes and channels (issue 3): mkproc → exit → scrub of
//! /bin/true through the library and the CLI, 1 KiB channel messages through
//! the library (pipelined handles, and plain send/recv for comparison), and
//! bulk bytes through a process's stdout to `circuit stdout`.
//! Run: `cargo bench -p circuit --bench elements`. Prints figures; asserts nothing.
//! `BENCH_STDOUT_MIB` sets the stdout volume (default 1024).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use circuit_client::Client;
use circuit_proto::proc::ProcSpec;

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer as Server;

fn start() -> Server {
    Server::start(&[])
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[v.len() * 99 / 100].as_secs_f64() * 1e3,
    )
}

fn cli(srv: &Server, args: &[&str], stdin: &[u8]) {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_circuit"))
        .arg(args[0])
        .args(["-d", &srv.url])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    assert!(c.wait().unwrap().success(), "{args:?}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let srv = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let lib = rt.block_on(async {
        let c = Client::dial(&srv.url, None).await.unwrap();
        let a = c.walk(&srv.id).unwrap().walk("t").unwrap();
        let mut v = Vec::new();
        for i in 0..1100 {
            let t = Instant::now();
            let p = a
                .make_proc(ProcSpec::new("/bin/true", Vec::<String>::new()))
                .await
                .unwrap();
            p.wait().await.unwrap();
            p.scrub().await.unwrap();
            if i >= 100 {
                v.push(t.elapsed());
            }
        }
        stats(v)
    });
    println!(
        "mkproc → exit → scrub of /bin/true, library (1,000 runs): median {:.2} ms, p99 {:.2} ms",
        lib.0, lib.1
    );

    let mut v = Vec::new();
    let path = format!("{}/c", srv.id);
    for _ in 0..100 {
        let t = Instant::now();
        cli(&srv, &["mkproc", &path], br#"{"Path":"/bin/true"}"#);
        cli(&srv, &["wait", &path], b"");
        cli(&srv, &["scrub", &path], b"");
        v.push(t.elapsed());
    }
    let (m, p) = stats(v);
    println!("mkproc → wait → scrub of /bin/true, CLI (3 commands, 100 runs): median {m:.2} ms, p99 {p:.2} ms");

    let (rate, n) = rt.block_on(async {
        let c = Client::dial(&srv.url, None).await.unwrap();
        let ch = c
            .walk(&srv.id)
            .unwrap()
            .walk("ch")
            .unwrap()
            .make_chan(64)
            .await
            .unwrap();
        let n = 100_000usize;
        let msg = vec![b'x'; 1024];
        let t = Instant::now();
        let mut rx = ch.receiver().await.unwrap();
        let recv = tokio::spawn(async move {
            for _ in 0..n {
                let m = rx.recv().await.unwrap();
                assert_eq!(m.len(), 1024);
            }
        });
        let mut tx = ch.sender().await.unwrap();
        for _ in 0..n {
            tx.send(&msg).await.unwrap();
        }
        assert_eq!(tx.flush().await.unwrap(), n as u64);
        recv.await.unwrap();
        (n as f64 / t.elapsed().as_secs_f64(), n)
    });
    println!(
        "channel, 1 KiB messages, one pipelined sender and receiver (sender()/receiver()), library ({n}): {rate:.0} msg/s"
    );

    let (rate, n) = rt.block_on(async {
        let c = Client::dial(&srv.url, None).await.unwrap();
        let ch = c
            .walk(&srv.id)
            .unwrap()
            .walk("plain")
            .unwrap()
            .make_chan(64)
            .await
            .unwrap();
        let rx = ch.clone();
        let n = 10_000usize;
        let msg = vec![b'x'; 1024];
        let t = Instant::now();
        let recv = tokio::spawn(async move {
            for _ in 0..n {
                let m = rx.recv().await.unwrap();
                assert_eq!(m.len(), 1024);
            }
        });
        for _ in 0..n {
            ch.send(&msg).await.unwrap();
        }
        recv.await.unwrap();
        (n as f64 / t.elapsed().as_secs_f64(), n)
    });
    println!(
        "channel, 1 KiB messages, one sender and one receiver, plain Chan::send/recv, library ({n}): {rate:.0} msg/s"
    );

    let mib: u64 = std::env::var("BENCH_STDOUT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let path = format!("{}/bulk", srv.id);
    let spec = format!(
        r#"{{"Path":"/usr/bin/head","Args":["-c","{}","/dev/zero"]}}"#,
        mib << 20
    );
    cli(&srv, &["mkproc", &path], spec.as_bytes());
    let t = Instant::now();
    let mut out = Command::new(env!("CARGO_BIN_EXE_circuit"))
        .args(["stdout", "-d", &srv.url, &path])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = 0u64;
    let mut r = out.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use std::io::Read;
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(out.wait().unwrap().success());
    println!(
        "process stdout → `circuit stdout`: {} MiB in {secs:.2} s = {:.0} MiB/s",
        got >> 20,
        got as f64 / (1 << 20) as f64 / secs
    );
}
