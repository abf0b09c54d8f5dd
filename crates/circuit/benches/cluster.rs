//! Figures for the cluster (issue 4): a new server visible everywhere, a
//! killed server gone from every view (3 hosts, each in its own network
//! namespace), idle membership traffic per server, and the cost of a request
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
    forwarding();
    let Some(net) = Net::new(3) else {
        println!("network namespaces unavailable: no multi-host figures");
        return;
    };
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
        s2.child.kill().unwrap();
        let t = Instant::now();
        let _ = s2.child.wait();
        until(Duration::from_secs(15), || {
            !view(&net, 0, &s0).contains(&s2.id) && !view(&net, 1, &s1).contains(&s2.id)
        })
        .expect("detected");
        deaths.push(t.elapsed());
    }
    println!(
        "3 hosts: new server visible everywhere (from its URL on stdout): median {:.0} ms (runs {:?})",
        median(joins.clone()).as_secs_f64() * 1e3,
        joins.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    println!(
        "3 hosts: killed server gone from every view: median {:.0} ms (runs {:?})",
        median(deaths.clone()).as_secs_f64() * 1e3,
        deaths.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );

    let _s2 = start_in(&net, 2, &["-j", &s0.url]);
    until(Duration::from_secs(10), || view(&net, 0, &s0).len() == 3).expect("3 members");
    std::thread::sleep(Duration::from_secs(2));
    let (p0, b0) = snmp_udp_out(&net, 1);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let (p1, b1) = snmp_udp_out(&net, 1);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "idle traffic of one server in a 3-server cluster: {:.1} datagrams/s sent, {:.0} bytes/s on the wire",
        (p1 - p0) as f64 / secs,
        (b1 - b0) as f64 / secs
    );
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
                anchor.peek_json().await.unwrap();
            }
            let mut v = Vec::with_capacity(10_000);
            for _ in 0..10_000 {
                let t = Instant::now();
                anchor.peek_json().await.unwrap();
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
