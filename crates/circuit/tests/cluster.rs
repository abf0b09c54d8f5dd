//! The cluster across real hosts: each server runs in its own network
//! namespace with its own address; hosts are killed, cut off and healed.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::netns::Net;
use common::{TestServer, bin, eventually, ok, stderr, stdout, wait_log};

/// The members a server lists, as a set of `/X…` paths (empty on error).
fn view(net: &Net, host: usize, srv: &TestServer) -> BTreeSet<String> {
    let o = net.cli(host, &["ls", "-d", &srv.url, "/"]);
    if !o.status.success() {
        return BTreeSet::new();
    }
    stdout(&o).lines().map(String::from).collect()
}

/// Three servers on hosts 0, 1 and 2, the last two joined to the first,
/// once every host lists all three; with the set of their paths.
fn three_joined(net: &Net) -> (TestServer, TestServer, TestServer, BTreeSet<String>) {
    let s0 = net.start(0, 0, &[]);
    let s1 = net.start(1, 0, &["-j", &s0.url]);
    let s2 = net.start(2, 0, &["-j", &s0.url]);
    let all = ids([&s0, &s1, &s2]);
    for (h, s) in [&s0, &s1, &s2].into_iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || view(net, h, s) == all),
            "host {h} never saw all three"
        );
    }
    (s0, s1, s2, all)
}

fn ids<'a>(servers: impl IntoIterator<Item = &'a TestServer>) -> BTreeSet<String> {
    servers.into_iter().map(|s| s.id.clone()).collect()
}

#[test]
fn three_hosts_join_and_share_one_view() {
    let Some(net) = Net::new(3) else { return };
    let s0 = net.start(0, 0, &[]);
    let s1 = net.start(1, 0, &["-j", &s0.url]);
    let s2 = net.start(2, 0, &["-join", &s0.url]);
    let all = ids([&s0, &s1, &s2]);
    for (h, s) in [&s0, &s1, &s2].into_iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || view(&net, h, s) == all),
            "host {h} sees {:?}",
            view(&net, h, s)
        );
    }
    // Any server answers for any other: peek of each server through host 1's.
    for s in [&s0, &s1, &s2] {
        let out = ok(net.cli(1, &["peek", "-d", &s1.url, &s.id]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Addr"], s.url.as_str());
        assert_eq!(v["Members"], 3);
    }
    // Joining one's own cluster is a no-op.
    ok(net.cli(0, &["join", "-d", &s0.url, &s0.id, &s0.url]));
    ok(net.cli(0, &["join", "-d", &s0.url, &s0.id, &s2.url]));
    assert_eq!(view(&net, 0, &s0), all);
}

#[test]
fn multicast_discovery_forms_a_cluster_with_no_seed() {
    let Some(net) = Net::new(3) else { return };
    let group = "239.77.1.1:28831";
    let s: Vec<TestServer> = (0..3)
        .map(|h| net.start(h, 0, &["-if", "eth0", "-discover", group]))
        .collect();
    let all = ids(&s);
    for (h, srv) in s.iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(15), || view(&net, h, srv) == all),
            "host {h}: {:?}",
            view(&net, h, srv)
        );
    }
    // A client finds a server the same way.
    let out = ok(net.cli(0, &["ls", "-discover", group, "-if", "eth0", "/"]));
    assert_eq!(out.lines().map(String::from).collect::<BTreeSet<_>>(), all);
}

#[test]
fn a_server_with_another_key_is_not_discovered() {
    let Some(net) = Net::new(2) else { return };
    let dir = common::TempDir::new("clusterkeys");
    let (k1, k2) = (dir.key("k1"), dir.key("k2"));
    let group = "239.77.1.2:28832";
    let a = net.start(0, 0, &["-if", "eth0", "-discover", group, "-hmac", &k1]);
    let b = net.start(1, 0, &["-if", "eth0", "-discover", group, "-hmac", &k2]);
    let c = net.start(1, 0, &["-discover", group, "-hmac", &k1]);
    let ab = ids([&a, &c]);
    let key1 = &k1;
    assert!(eventually(Duration::from_secs(15), || {
        let o = net.cli(0, &["ls", "-d", &a.url, "-hmac", key1, "/"]);
        stdout(&o).lines().map(String::from).collect::<BTreeSet<_>>() == ab
    }));
    std::thread::sleep(Duration::from_secs(2));
    let o = ok(net.cli(0, &["ls", "-d", &a.url, "-hmac", key1, "/"]));
    assert!(!o.contains(&b.id), "a server with another key joined: {o}");
}

#[test]
fn killed_and_cut_off_servers_leave_every_view_and_healed_ones_return() {
    let Some(net) = Net::new(3) else { return };
    let (s0, s1, mut s2, _) = three_joined(&net);

    // kill -9: gone from every view.
    s2.child.kill().unwrap();
    let _ = s2.child.wait();
    let two = ids([&s0, &s1]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == two
        && view(&net, 1, &s1) == two));
    // Requests for it fail at once with a clear error, never hang.
    let t = Instant::now();
    let o = net.cli(0, &["peek", "-d", &s0.url, &format!("{}/x", s2.id)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not in the cluster"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(10));

    // Cut host 1 off: each side loses the other.
    net.cut(1);
    let only = |s: &TestServer| ids([s]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == only(&s0)));
    assert!(eventually(Duration::from_secs(10), || view(&net, 1, &s1) == only(&s1)));
    // Healed: both come back, with the same ids.
    net.heal(1);
    assert!(
        eventually(Duration::from_secs(20), || view(&net, 0, &s0) == two
            && view(&net, 1, &s1) == two),
        "after heal: {:?} / {:?}",
        view(&net, 0, &s0),
        view(&net, 1, &s1)
    );
}

/// Each server holds a connection to its next two members (in id order),
/// which never idles out: a server killed on a live host is seen at once
/// through it (its kernel closes the connection), not at its turn in the
/// probe order, even long after the last request.
#[test]
fn a_killed_server_is_seen_through_the_connections_its_neighbours_hold() {
    let Some(net) = Net::new(3) else { return };
    let idle = ["--idle-timeout", "1s"];
    let s0 = net.start(0, 0, &idle);
    let s1 = net.start(1, 0, &[&idle[..], &["-j", &s0.url]].concat());
    let mut s2 = net.start(2, 0, &[&idle[..], &["-j", &s0.url]].concat());
    let all = ids([&s0, &s1, &s2]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == all
        && view(&net, 1, &s1) == all
        && view(&net, 2, &s2) == all));
    // In a ring of three, each server holds the two others.
    for s in [&s0, &s1, &s2] {
        assert!(
            eventually(Duration::from_secs(10), || s.log().matches("op=\"hold\"").count() >= 2),
            "{}",
            s.log()
        );
    }
    // Well past the idle timeout, the held connections are still there.
    std::thread::sleep(Duration::from_secs(3));
    s2.child.kill().unwrap();
    let _ = s2.child.wait();
    let victim = &s2.id[1..];
    for s in [&s0, &s1] {
        assert!(
            wait_log(
                s,
                &format!("connection to member broke: checking it peer={victim}"),
                1,
                Duration::from_secs(10)
            ),
            "{}",
            s.log()
        );
    }
    let two = ids([&s0, &s1]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == two
        && view(&net, 1, &s1) == two));
    // No idle connection broke before: only the victim's.
    for s in [&s0, &s1] {
        assert_eq!(s.log().matches("connection to member broke").count(), 1, "{}", s.log());
    }
}

#[test]
fn two_clusters_merge_with_join() {
    let Some(net) = Net::new(4) else { return };
    let a0 = net.start(0, 0, &[]);
    let a1 = net.start(1, 0, &["-j", &a0.url]);
    let b0 = net.start(2, 0, &[]);
    let b1 = net.start(3, 0, &["-j", &b0.url]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &a0) == ids([&a0, &a1])));
    assert!(eventually(Duration::from_secs(10), || view(&net, 2, &b0) == ids([&b0, &b1])));
    // Ask a1 (through a0) to merge with b0's cluster.
    ok(net.cli(0, &["join", "-d", &a0.url, &a1.id, &b0.url]));
    let all = ids([&a0, &a1, &b0, &b1]);
    for (h, s) in [&a0, &a1, &b0, &b1].into_iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(15), || view(&net, h, s) == all),
            "host {h}: {:?}",
            view(&net, h, s)
        );
    }
}

#[test]
fn requests_are_forwarded_to_the_owner_streams_included() {
    let Some(net) = Net::new(3) else { return };
    let (s0, s1, s2, _) = three_joined(&net);

    // A process on host 2, made, fed and read through other hosts' servers.
    let p = format!("{}/cat", s2.id);
    ok(net.cli_in(0, &["mkproc", "-d", &s0.url, &p], br#"{"Path":"/bin/cat"}"#));
    ok(net.cli_in(1, &["stdin", "-d", &s1.url, &p], b"hello across hosts\n"));
    assert_eq!(ok(net.cli(0, &["stdout", "-d", &s0.url, &p])), "hello across hosts\n");
    let st: serde_json::Value = serde_json::from_str(&ok(net.cli(1, &["wait", "-d", &s1.url, &p]))).unwrap();
    assert_eq!(st["Phase"], "exited");

    // A channel on host 1: a 1 MiB message sent through host 0, received through host 2.
    let c = format!("{}/ch", s1.id);
    ok(net.cli(2, &["mkchan", "-d", &s2.url, &c, "1"]));
    let msg: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    // Longer than a buffered message: it streams once the receiver is there.
    let got = std::thread::scope(|scope| {
        let recv = scope.spawn(|| net.cli(2, &["recv", "-d", &s2.url, &c]));
        ok(net.cli_in(0, &["send", "-d", &s0.url, &c], &msg));
        recv.join().unwrap()
    });
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        got.stdout == msg,
        "message changed on the way ({} bytes)",
        got.stdout.len()
    );

    let listing = ok(net.cli(0, &["ls", "-d", &s0.url, "-l", "/..."]));
    assert!(listing.contains(&format!("proc            {p}")), "{listing}");
    assert!(listing.contains(&format!("chan            {c}")), "{listing}");
    ok(net.cli(2, &["scrub", "-d", &s2.url, &p]));
    ok(net.cli(0, &["scrub", "-d", &s0.url, &c]));
    assert_eq!(ok(net.cli(1, &["ls", "-d", &s1.url, "/..."])).lines().count(), 3);
}

/// Servers are killed and restarted (with new ids) while a client keeps
/// working through a stable server: every request to a stable server
/// succeeds, and requests to churned ones fail fast or succeed, never hang.
#[test]
fn churn() {
    let Some(net) = Net::new(4) else { return };
    let s0 = net.start(0, 0, &[]);
    let s1 = net.start(1, 0, &["-j", &s0.url]);
    let port = 29000 + (std::process::id() % 1000) as u16;
    let mut churned: Vec<TestServer> = (2..4).map(|h| net.start(h, port, &["-j", &s0.url])).collect();
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0).len() == 4));
    for round in 0..6 {
        let h = 2 + round % 2;
        let victim = &mut churned[round % 2];
        victim.child.kill().unwrap();
        let _ = victim.child.wait();
        // While it is down and coming back, work goes on through s0.
        for i in 0..5 {
            let path = format!("{}/churn/{round}/{i}", s1.id);
            ok(net.cli(0, &["mkchan", "-d", &s0.url, &path, "2"]));
            ok(net.cli(0, &["peek", "-d", &s0.url, &path]));
            ok(net.cli(0, &["scrub", "-d", &s0.url, &path]));
            let t = Instant::now();
            let o = net.cli(0, &["peek", "-d", &s0.url, &victim.id]);
            assert!(t.elapsed() < Duration::from_secs(10), "a request to a dead server hung");
            // Not a member (any more), not reachable, or lost while asked:
            // the request raced the kill.
            let e = stderr(&o);
            assert!(
                o.status.success() || e.contains("not") || e.contains("before it answered"),
                "{e}"
            );
        }
        let fresh = net.start(h, port, &["-j", &s0.url]);
        assert_ne!(fresh.id, victim.id, "a restarted server gets a new id");
        *victim = fresh;
        let want: BTreeSet<String> = ids([&s0, &s1, &churned[0], &churned[1]]);
        assert!(
            eventually(Duration::from_secs(15), || view(&net, 0, &s0) == want
                && view(&net, 1, &s1) == want),
            "round {round}: {:?}",
            view(&net, 0, &s0)
        );
    }
}

/// Servers that each join the previous one (a chain of seeds) still end up
/// in one cluster where everyone sees everyone (loopback; no namespaces).
#[test]
fn a_chain_of_joins_forms_one_cluster() {
    let mut servers: Vec<TestServer> = vec![TestServer::start(&[])];
    for _ in 0..5 {
        let prev = servers.last().unwrap().url.clone();
        servers.push(TestServer::start(&["-j", &prev]));
    }
    let all = ids(&servers);
    for s in &servers {
        assert!(
            eventually(Duration::from_secs(15), || {
                let o = s.cli("ls", &["/"]);
                stdout(&o).lines().map(String::from).collect::<BTreeSet<_>>() == all
            }),
            "{} sees {}",
            s.id,
            stdout(&s.cli("ls", &["/"]))
        );
    }
    // The server element counts members.
    let v: serde_json::Value = serde_json::from_str(&ok(servers[0].cli("peek", &[&servers[3].id]))).unwrap();
    assert_eq!(v["Members"], 6);
}

/// `circuit stdout` through another server, whose owner dies mid-stream,
/// fails (non-zero, naming the dead server) instead of ending as if the
/// output were whole.
#[test]
fn output_cut_short_by_a_dead_owner_is_an_error() {
    let Some(net) = Net::new(2) else { return };
    let s0 = net.start(0, 0, &[]);
    let mut s1 = net.start(1, 0, &["-j", &s0.url]);
    let all = ids([&s0, &s1]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == all));
    let p = format!("{}/talker", s1.id);
    let spec = br#"{"Path": "/bin/sh", "Args": ["-c", "echo one; exec sleep 60"]}"#;
    ok(net.cli_in(0, &["mkproc", "-d", &s0.url, &p], spec));
    let peek: serde_json::Value = serde_json::from_str(&ok(net.cli(0, &["peek", "-d", &s0.url, &p]))).unwrap();
    let _pids = common::Pids::of([peek["Pid"].as_u64().expect("a pid")]);
    let mut reader = net.command(0, &bin());
    reader
        .args(["stdout", "-d", &s0.url, &p])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let reader = reader.spawn().expect("spawn circuit stdout");
    // And a receiver waiting on a channel of the owner, through s0 too.
    let c = format!("{}/ch", s1.id);
    ok(net.cli(0, &["mkchan", "-d", &s0.url, &c, "0"]));
    let mut waiting = net.command(0, &bin());
    waiting
        .args(["recv", "-d", &s0.url, &c])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let waiting = waiting.spawn().expect("spawn circuit recv");
    std::thread::sleep(Duration::from_millis(500));
    s1.child.kill().expect("kill the owner");
    let _ = s1.child.wait();
    let end = Instant::now() + Duration::from_secs(15);
    let mut reader = reader;
    let status = loop {
        if let Some(st) = reader.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = reader.kill();
            panic!("circuit stdout still running 15 s after its owner died");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "a cut stream exited 0; stderr: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    let owner = s1.id.trim_start_matches('/');
    assert!(
        err.contains(owner),
        "the error does not name the dead server {owner}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");

    let mut waiting = waiting;
    let end = Instant::now() + Duration::from_secs(15);
    while waiting.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = waiting.kill();
            panic!("circuit recv still waiting 15 s after its owner died");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiting.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "recv from a dead owner exited 0");
    assert!(
        err.contains(owner),
        "the error does not name the dead server {owner}: {err}"
    );
    let dial = s0.url.split('/').nth(2).unwrap();
    assert!(
        !err.contains(&format!("lost the connection to {dial}")),
        "blames the dial-in server: {err}"
    );
}

/// A server killed while another holds a connection to it (it forwarded a
/// request there): the broken connection is a hint, the member is checked
/// at once, found refusing, and declared down; every view drops it.
#[test]
fn a_broken_connection_to_a_killed_server_declares_it_down_at_once() {
    let Some(net) = Net::new(3) else { return };
    let (s0, s1, mut s2, _) = three_joined(&net);
    // s0 forwards to s2: it now holds a connection to it.
    ok(net.cli(0, &["peek", "-d", &s0.url, &s2.id]));
    s2.child.kill().unwrap();
    let _ = s2.child.wait();
    let two = ids([&s0, &s1]);
    assert!(eventually(Duration::from_secs(10), || view(&net, 0, &s0) == two
        && view(&net, 1, &s1) == two));
    // s0 took the hint (whoever declared it down first: s0 on its check,
    // or s1 at a missed probe, and gossip told the other).
    let log = s0.log();
    assert!(log.contains("connection to member broke: checking it"), "{log}");
    assert!(log.contains(&format!("member left: {}", s2.id)), "{log}");
}

/// Hosts busy at 100 % CPU for 5 s (more busy loops than cores) make no
/// member leave or rejoin.
#[test]
fn busy_hosts_make_no_member_leave() {
    let Some(net) = Net::new(3) else { return };
    let (s0, s1, s2, all) = three_joined(&net);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<common::netns::Proc> = (0..2 * cores)
        .map(|i| {
            let mut c = net.command(i % 3, std::path::Path::new("sh"));
            c.args(["-c", "while :; do :; done"]);
            common::netns::Proc(c.spawn().expect("start a busy loop"))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    drop(hogs);
    std::thread::sleep(Duration::from_secs(2));
    for (h, s) in [&s0, &s1, &s2].into_iter().enumerate() {
        assert_eq!(view(&net, h, s), all, "host {h}");
        let log = s.log();
        assert!(!log.contains("member left"), "host {h}: {log}");
        assert!(!log.contains("was declared down"), "host {h}: {log}");
    }
}

/// Without a key on a non-loopback address the server says loudly that
/// anyone who reaches its port can join and command it; on loopback it
/// does not.
#[test]
fn a_keyless_server_on_a_network_address_warns_loudly() {
    let Some(net) = Net::new(1) else { return };
    let s = net.start(0, 0, &[]);
    assert!(
        common::wait_log(&s, "NO CLUSTER KEY", 1, Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let local = TestServer::start(&[]);
    ok(local.cli("ls", &["/"]));
    assert!(!local.log().contains("NO CLUSTER KEY"), "{}", local.log());
}

/// A request forwarded to an owner that stops answering (SIGSTOP: its
/// kernel still acknowledges, so the connection never breaks) fails once
/// the owner is declared down, naming it, instead of waiting for it forever.
#[test]
fn a_request_waiting_on_a_paused_owner_fails_once_it_is_declared_down() {
    let Some(net) = Net::new(3) else { return };
    let (s0, s1, _s2, _) = three_joined(&net);
    let c = format!("{}/ch", s1.id);
    ok(net.cli(0, &["mkchan", "-d", &s0.url, &c, "0"]));
    let mut waiting = net.command(0, &bin());
    waiting
        .args(["recv", "-d", &s0.url, &c])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut waiting = common::netns::Proc(waiting.spawn().expect("spawn circuit recv"));
    std::thread::sleep(Duration::from_millis(500));
    let owner = nix::unistd::Pid::from_raw(s1.child.id() as i32);
    nix::sys::signal::kill(owner, nix::sys::signal::SIGSTOP).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = waiting.0.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(owner, nix::sys::signal::SIGCONT).unwrap();
    let status = status.expect("recv through s0 still waiting 15 s after its owner stopped answering");
    let mut err = String::new();
    std::io::Read::read_to_string(waiting.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "recv from a paused owner exited 0");
    let id = s1.id.trim_start_matches('/');
    assert!(err.contains(id), "the error does not name the owner {id}: {err}");
}
