//! Several hosts, each in its own network namespace: clients reach servers on
//! other hosts, notice a host cut off, and find servers by multicast.

mod common;

use std::time::{Duration, Instant};

use common::netns::Net;
use common::{TestServer, fails, ok, stdout};

#[test]
fn clients_reach_servers_on_other_hosts_and_notice_cut_offs() {
    let Some(net) = Net::new(3) else { return };
    let servers: Vec<TestServer> = (0..3).map(|h| net.start(h, 0, &[])).collect();
    for (h, srv) in servers.iter().enumerate() {
        assert!(srv.url.contains(&net.hosts[h].ip), "{} on {}", srv.url, net.hosts[h].ip);
        let from = (h + 1) % 3;
        assert_eq!(ok(net.cli(from, &["ls", "-d", &srv.url, "/"])), format!("{}\n", srv.id));
    }

    net.cut(2);
    let t = Instant::now();
    let e = fails(net.cli(0, &["ls", "-d", &servers[2].url, "/"]));
    assert!(e.contains("cannot reach"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "a cut-off host fails fast: {:?}",
        t.elapsed()
    );
    // The others are unaffected.
    assert_eq!(
        ok(net.cli(0, &["ls", "-d", &servers[1].url, "/"])),
        format!("{}\n", servers[1].id)
    );

    net.heal(2);
    let end = Instant::now() + Duration::from_secs(10);
    let mut out = net.cli(0, &["ls", "-d", &servers[2].url, "/"]);
    while !out.status.success() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        out = net.cli(0, &["ls", "-d", &servers[2].url, "/"]);
    }
    assert_eq!(stdout(&out), format!("{}\n", servers[2].id));
}

#[test]
fn multicast_discovery_across_hosts() {
    let Some(net) = Net::new(2) else { return };
    let group = "239.77.0.9:28829";
    let srv = net.start(1, 0, &["-if", "eth0", "-discover", group]);
    assert!(
        srv.url.contains(&net.hosts[1].ip),
        "-if eth0 binds that address: {}",
        srv.url
    );
    let out = ok(net.cli(0, &["ls", "-discover", group, "-if", "eth0", "/"]));
    assert_eq!(out, format!("{}\n", srv.id));
}
