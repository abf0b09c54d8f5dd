//! Figures for the cluster (issues 4 and 9): a new server visible everywhere,
//! a killed server gone from every view with and without a live connection
//! to it (3 hosts, each in its own network namespace), idle membership
//! traffic, wakeups and CPU of three idle servers, and the cost of a request
//! forwarded through a non-owning server.
//! Run: `cargo bench -p circuit --bench cluster` (as root, for namespaces).
//! Prints figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::netns::Net;
use common::{TestServer, bin, stdout};

fn start_in(net: &Net, host: usize, extra: &[&str]) -> TestServer {
    let mut cmd = net.command(host, &bin());
    cmd.args(["start", "-a", &format!("{}:0", net.hosts[host].ip)])
        .args(extra);
    TestServer::spawn(cmd)
}

fn view(net: &Net, host: usize, srv: &TestServer) -> BTreeSet<String> {
    let o = net.cli(host, &["ls", "-d", &srv.url, "/"]);
    stdout(&o).lines().map(String::from).collect()
}

/// Time until `cond` holds, polling as fast as the CLI allows (~3 ms a call).
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return Some(t.elapsed());
        }
    }
    None
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn snmp_udp_out(net: &Net, host: usize) -> (u64, u64) {
    let read = |file: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &net.hosts[host].ns, "cat", file])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let snmp = read("/proc/net/snmp");
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let vals: Vec<&str> = udp[1].split_whitespace().collect();
    let out = names
        .iter()
        .position(|n| *n == "OutDatagrams")
        .map(|i| vals[i].parse().unwrap())
        .unwrap_or(0);
    let dev = read("/proc/net/dev");
    let tx = dev
        .lines()
        .find(|l| l.trim_start().starts_with("eth0:"))
        .map(|l| l.split_whitespace().nth(9).unwrap().parse().unwrap())
        .unwrap_or(0);
    (out, tx)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `CLUSTER_BENCH=idle` measures only the idle servers.
    let only_idle = std::env::var("CLUSTER_BENCH").as_deref() == Ok("idle");
    if !only_idle {
        forwarding();
    }
    let Some(net) = Net::new(3) else {
        println!("network namespaces unavailable: no multi-host figures");
        return;
    };
    if only_idle {
        return idle(net);
    }
    let s0 = start_in(&net, 0, &[]);
    let s1 = start_in(&net, 1, &["-j", &s0.url]);
    until(Duration::from_secs(10), || view(&net, 0, &s0).len() == 2).expect("2 members");

    let mut joins = Vec::new();
    let mut deaths = Vec::new();
    for _ in 0..5 {
        let mut s2 = start_in(&net, 2, &["-j", &s0.url]);
        let up = until(Duration::from_secs(10), || {
            view(&net, 0, &s0).contains(&s2.id) && view(&net, 1, &s1).contains(&s2.id) && view(&net, 2, &s2).len() == 3
        })
        .expect("joined");
        joins.push(up);
        std::thread::sleep(Duration::from_millis(500));
        deaths.push(kill_until_gone(&net, &s0, &s1, &mut s2));
    }
    print_runs(
        "3 hosts: new server visible everywhere (from its URL on stdout)",
        &joins,
    );
    print_runs(
        "3 hosts: killed server gone from every view, no request ever sent to it (seen through its neighbours' held connections)",
        &deaths,
    );

    // The same with a live connection to it from both others (each
    // forwarded a request there): the broken connection is the hint.
    let mut deaths = Vec::new();
    for _ in 0..5 {
        let mut s2 = start_in(&net, 2, &["-j", &s0.url]);
        until(Duration::from_secs(10), || {
            view(&net, 0, &s0).contains(&s2.id) && view(&net, 1, &s1).contains(&s2.id)
        })
        .expect("joined");
        for (h, s) in [(0, &s0), (1, &s1)] {
            let o = net.cli(h, &["peek", "-d", &s.url, &s2.id]);
            assert!(o.status.success(), "peek through host {h}");
        }
        std::thread::sleep(Duration::from_millis(300));
        deaths.push(kill_until_gone(&net, &s0, &s1, &mut s2));
    }
    print_runs(
        "3 hosts: killed server gone from every view, live connections to it",
        &deaths,
    );

    drop((s0, s1));
    idle(net);
}

/// Three fresh servers, joined then left alone for 30 s (no member died
/// recently: announces to down members would count too).
fn idle(net: Net) {
    let s0 = start_in(&net, 0, &[]);
    let s1 = start_in(&net, 1, &["-j", &s0.url]);
    let s2 = start_in(&net, 2, &["-j", &s0.url]);
    until(Duration::from_secs(10), || view(&net, 0, &s0).len() == 3).expect("3 members");
    // Let the join's news and the CLI's connections die down.
    std::thread::sleep(Duration::from_secs(5));
    let servers = [&s0, &s1, &s2];
    let before: Vec<(u64, u64, u64)> = (0..3)
        .map(|h| {
            let (p, _) = snmp_udp_out(&net, h);
            let (w, c) = wakeups_and_cpu(servers[h].child.id());
            (p, w, c)
        })
        .collect();
    let b1_0 = snmp_udp_out(&net, 1).1;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let secs = t.elapsed().as_secs_f64();
    let after: Vec<(u64, u64, u64)> = (0..3)
        .map(|h| {
            let (p, _) = snmp_udp_out(&net, h);
            let (w, c) = wakeups_and_cpu(servers[h].child.id());
            (p, w, c)
        })
        .collect();
    let b1_1 = snmp_udp_out(&net, 1).1;
    let sent: u64 = (0..3).map(|h| after[h].0 - before[h].0).sum();
    let wakeups: Vec<f64> = (0..3).map(|h| (after[h].1 - before[h].1) as f64 / secs).collect();
    let cpu_ms: Vec<f64> = (0..3)
        .map(|h| (after[h].2 - before[h].2) as f64 / 1e6 * 30.0 / secs)
        .collect();
    println!(
        "3 idle servers, 30 s: {:.1} datagrams/s for the three together (target ≤ 10), {:.0} bytes/s on the wire from one",
        sent as f64 / secs,
        (b1_1 - b1_0) as f64 / secs
    );
    println!(
        "3 idle servers, 30 s: wakeups/s per server {:?} (target ≤ 5), CPU per 30 s per server {:?} ms (target ≤ 10)",
        wakeups.iter().map(|w| format!("{w:.1}")).collect::<Vec<_>>(),
        cpu_ms.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>()
    );
}

/// Wakeups (voluntary context switches: the thread slept, then woke) and
/// CPU time (ns) of every thread of process `pid` so far. Preemptions by
/// other processes (involuntary switches) depend on the machine's load, not
/// on the server, and are left out.
fn wakeups_and_cpu(pid: u32) -> (u64, u64) {
    let (mut switches, mut cpu) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let dir = t.path();
        if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
            for l in status.lines() {
                if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        if let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) {
            cpu += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (switches, cpu)
}

/// Library peek of an element on server B, directly and through server A.
fn forwarding() {
    let a = TestServer::start(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = circuit_client::Client::dial(&a.url, None).await.unwrap();
        let cb = circuit_client::Client::dial(&b.url, None).await.unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while ca.servers().await.unwrap().len() < 2 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let via_a = ca.walk(&b.id).unwrap();
        let direct = cb.walk(&b.id).unwrap();
        let measure = async |anchor: &circuit_client::Anchor| {
            for _ in 0..1000 {
                anchor.stat().await.unwrap();
            }
            let mut v = Vec::with_capacity(10_000);
            for _ in 0..10_000 {
                let t = Instant::now();
                anchor.stat().await.unwrap();
                v.push(t.elapsed());
            }
            median(v)
        };
        let d = measure(&direct).await;
        let f = measure(&via_a).await;
        println!(
            "library peek of a server element on loopback: direct {:.0} µs, forwarded through another server {:.0} µs (+{:.0} µs)",
            d.as_secs_f64() * 1e6,
            f.as_secs_f64() * 1e6,
            (f.as_secs_f64() - d.as_secs_f64()) * 1e6
        );
    });
}

/// Kills `s2` (kill -9) and times until neither `s0` nor `s1` lists it.
fn kill_until_gone(net: &Net, s0: &TestServer, s1: &TestServer, s2: &mut TestServer) -> Duration {
    s2.child.kill().unwrap();
    let t = Instant::now();
    let _ = s2.child.wait();
    until(Duration::from_secs(15), || {
        !view(net, 0, s0).contains(&s2.id) && !view(net, 1, s1).contains(&s2.id)
    })
    .expect("detected");
    t.elapsed()
}

/// Prints the median of `runs` and every run, in ms.
fn print_runs(what: &str, runs: &[Duration]) {
    println!(
        "{what}: median {:.0} ms (runs {:?})",
        median(runs.to_vec()).as_secs_f64() * 1e3,
        runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}
