//! Figures for docker elements (issue 10), beside the engine's own CLI in
//! the same run: `mkdkr` → first stdout byte, and `mkdkr` → `wait` →
//! `scrub` of a container running `true`, through the library, against
//! `docker run --rm --init` of the same image (our containers run the
//! engine's init too). Runs alternate, so both see the same machine.
//! Run: `cargo bench -p circuit --bench docker`. Prints figures; asserts
//! nothing. `BENCH_DOCKER_RUNS` sets the runs of each (default 20).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use circuit_client::{Client, DockerSpec};

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestServer as Server;
use common::docker::{Cleanup, IMAGE};

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// `docker run --rm --init IMAGE ARGS`: until its first stdout byte, and
/// until it has exited.
fn docker_run(args: &[&str]) -> (Duration, Duration) {
    let t = Instant::now();
    let mut c = Command::new("docker")
        .args(["run", "--rm", "--init", IMAGE])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker run");
    let mut out = c.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    let first = match out.read(&mut byte) {
        Ok(1) => t.elapsed(),
        _ => Duration::ZERO,
    };
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    assert!(c.wait().unwrap().success(), "docker run {args:?} failed");
    (first, t.elapsed())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !common::docker::available() {
        return;
    }
    let runs: usize = std::env::var("BENCH_DOCKER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let srv = Server::start(&["-docker"]);
    let _clean = Cleanup::of(&[&srv.id]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(Client::dial(&srv.url, None)).unwrap();
    let anchor = client.walk(&srv.id).unwrap().walk("bench").unwrap();
    let (mut ours_first, mut ours_cycle, mut engine_first, mut engine_cycle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // One of each first, not counted: the engine's caches warm up.
    for i in 0..=runs {
        let (first, cycle) = rt.block_on(async {
            let t = Instant::now();
            let d = anchor
                .make_docker(DockerSpec::new(IMAGE, "/bin/echo", ["x"]))
                .await
                .unwrap();
            let mut out = d.stdout().await.unwrap();
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut out, &mut byte).await.unwrap();
            let first = t.elapsed();
            drop(out);
            d.wait().await.unwrap();
            d.scrub().await.unwrap();

            let t = Instant::now();
            let d = anchor
                .make_docker(DockerSpec::new(IMAGE, "/bin/true", Vec::<String>::new()))
                .await
                .unwrap();
            d.wait().await.unwrap();
            d.scrub().await.unwrap();
            (first, t.elapsed())
        });
        let (e_first, _) = docker_run(&["/bin/echo", "x"]);
        let (_, e_cycle) = docker_run(&["/bin/true"]);
        if i > 0 {
            ours_first.push(first);
            ours_cycle.push(cycle);
            engine_first.push(e_first);
            engine_cycle.push(e_cycle);
        }
    }
    let (of, oc, ef, ec) = (
        median_ms(ours_first),
        median_ms(ours_cycle),
        median_ms(engine_first),
        median_ms(engine_cycle),
    );
    println!("docker elements, {runs} runs each, medians (the same image, alternating):");
    println!(
        "  mkdkr → first stdout byte (library):         {of:8.1} ms   docker run --rm --init echo: {ef:8.1} ms   ratio {:.2}",
        of / ef
    );
    println!(
        "  mkdkr → wait → scrub of true (library):      {oc:8.1} ms   docker run --rm --init true: {ec:8.1} ms   ratio {:.2}",
        oc / ec
    );
}
