//! The DNS element, driven the way a person would: `circuit mkdns/set/unset/
//! peek/scrub` against real servers, and `dig` (Debian's bind9-dnsutils)
//! over UDP and TCP against the DNS server it starts. A test needing dig
//! skips with a printed reason when dig is missing, except under `CI=true`
//! where it fails.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::{TempDir, TestServer, eventually, fails, ok, run_cli};
use serde_json::Value;

/// True when `dig` can be run; otherwise prints why the test is skipped
/// (and fails under `CI=true`).
fn have_dig() -> bool {
    match Command::new("dig").arg("-v").output() {
        Ok(o) if o.status.success() => true,
        other => {
            let why = format!("dig is not installed (apt-get install bind9-dnsutils): {other:?}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// `dig @IP -p PORT ARGS…`, bounded: one try, 3 s.
fn dig(addr: &str, args: &[&str]) -> String {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let o = Command::new("dig")
        .args([&format!("@{ip}"), "-p", port, "+tries=1", "+time=3", "+norec"])
        .args(args)
        .output()
        .expect("run dig");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "dig {args:?} failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The lines of dig's `+short` output, sorted.
fn short(addr: &str, args: &[&str]) -> Vec<String> {
    let mut a: Vec<&str> = args.to_vec();
    a.push("+short");
    let mut lines: Vec<String> = dig(addr, &a).lines().map(String::from).collect();
    lines.sort();
    lines
}

fn peek(srv: &TestServer, path: &str) -> Value {
    let out = ok(srv.cli("peek", &[path]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn address(srv: &TestServer, path: &str) -> String {
    peek(srv, path)["Address"].as_str().unwrap().to_string()
}

#[test]
fn the_tutorial_works_as_typed() {
    if !have_dig() {
        return;
    }
    let srv = TestServer::start(&[]);
    let path = format!("{}/mydns", srv.id);
    ok(srv.cli("mkdns", &[&path]));
    let v = peek(&srv, &path);
    assert_eq!(v["Records"], serde_json::json!({}));
    let addr = v["Address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "the server's own IP: {addr}");
    // The kind as the original named it.
    assert!(ok(srv.cli("ls", &["-l", &srv.id])).contains(&format!("dns             {path}")));

    ok(srv.cli("set", &[&path, "miek.nl. 3600 IN MX 10 mx.miek.nl."]));
    ok(srv.cli("set", &[&path, "miek.nl. 3600 IN MX 20 mx2.miek.nl."]));
    let printed = ok(srv.cli("peek", &[&path]));
    assert!(
        printed.contains(
            "\"miek.nl.\": [\n\t\t\t\"miek.nl.\\t3600\\tIN\\tMX\\t10 mx.miek.nl.\",\n\t\t\t\"miek.nl.\\t3600\\tIN\\tMX\\t20 mx2.miek.nl.\"\n\t\t]"
        ),
        "{printed}"
    );
    // Both records, over UDP and over TCP, with the AA flag.
    let full = dig(&addr, &["miek.nl", "MX"]);
    assert!(
        full.contains("status: NOERROR") && full.contains("flags: qr aa;"),
        "{full}"
    );
    assert!(full.contains("ANSWER: 2,"), "{full}");
    for tcp in [&[][..], &["+tcp"][..]] {
        let mut a = vec!["miek.nl", "MX"];
        a.extend_from_slice(tcp);
        assert_eq!(short(&addr, &a), ["10 mx.miek.nl.", "20 mx2.miek.nl."], "{tcp:?}");
    }

    for rr in [
        "miek.nl. 300 IN A 192.0.2.10",
        "miek.nl. 300 IN A 192.0.2.11",
        "miek.nl. AAAA 2001:db8::10",
        "miek.nl. TXT \"v=spf1 -all\"",
        "_sip._udp.miek.nl. SRV 0 5 5060 sip.miek.nl.",
        "www.miek.nl. CNAME miek.nl.",
    ] {
        ok(srv.cli("set", &[&path, rr]));
    }
    assert_eq!(short(&addr, &["miek.nl", "A"]), ["192.0.2.10", "192.0.2.11"]);
    assert_eq!(short(&addr, &["MIEK.NL", "AAAA"]), ["2001:db8::10"]);
    assert_eq!(short(&addr, &["miek.nl", "TXT"]), ["\"v=spf1 -all\""]);
    assert_eq!(short(&addr, &["_sip._udp.miek.nl", "SRV"]), ["0 5 5060 sip.miek.nl."]);
    // A CNAME for another type, and what it leads to among our records.
    assert_eq!(
        short(&addr, &["www.miek.nl", "A"]),
        ["192.0.2.10", "192.0.2.11", "miek.nl."]
    );
    // NODATA: the name exists, not with that type.
    let nodata = dig(&addr, &["_sip._udp.miek.nl", "A"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0,"),
        "{nodata}"
    );
    let nx = dig(&addr, &["nope.miek.nl", "A"]);
    assert!(nx.contains("status: NXDOMAIN") && nx.contains("flags: qr aa;"), "{nx}");

    // A malformed record: one line saying what is wrong, nothing kept.
    let e = fails(srv.cli("set", &[&path, "miek.nl. 3600 IN MX mx.miek.nl."]));
    assert!(e.contains("invalid record") && e.lines().count() == 1, "{e}");
    let e = fails(srv.cli("set", &[&path, "miek.nl. IN BOGUS x"]));
    assert!(e.contains("BOGUS"), "{e}");

    // unset: every record of the name, whatever the case and final dot.
    ok(srv.cli("unset", &[&path, "MIEK.nl"]));
    let v = peek(&srv, &path);
    assert!(v["Records"].get("miek.nl.").is_none(), "{v}");
    assert!(v["Records"].get("www.miek.nl.").is_some(), "{v}");
    // Names remain below it, so it still exists (RFC 8020): no data.
    let ent = dig(&addr, &["miek.nl", "MX"]);
    assert!(ent.contains("status: NOERROR") && ent.contains("ANSWER: 0,"), "{ent}");
    ok(srv.cli("unset", &[&path, "www.miek.nl"]));
    ok(srv.cli("unset", &[&path, "_sip._udp.miek.nl."]));
    assert_eq!(peek(&srv, &path)["Records"], serde_json::json!({}));
    let nx = dig(&addr, &["miek.nl", "MX"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");

    // The operations are logged, one line each, and no query is.
    assert!(
        eventually(Duration::from_secs(5), || srv.log().contains("op=\"unset\"")),
        "{}",
        srv.log()
    );
    let log = srv.log();
    assert!(log.contains("op=\"mkdns\"") && log.contains("op=\"set\""), "{log}");
    assert!(
        !log.contains("miek.nl\" A") && !log.to_lowercase().contains("query"),
        "{log}"
    );
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    if !have_dig() {
        return;
    }
    let srv = TestServer::start(&[]);
    let path = format!("{}/big", srv.id);
    ok(srv.cli("mkdns", &[&path, "127.0.0.1"]));
    let addr = address(&srv, &path);
    for i in 0..60 {
        ok(srv.cli("set", &[&path, &format!("big.example. 60 IN AAAA 2001:db8::{i:x}")]));
    }
    // Without falling back, the UDP answer says TC and holds nothing.
    let udp = dig(&addr, &["big.example", "AAAA", "+ignore"]);
    assert!(udp.contains(" tc") && udp.contains("ANSWER: 0,"), "{udp}");
    // dig's default: it retries over TCP and gets the whole set.
    let full = dig(&addr, &["big.example", "AAAA"]);
    assert!(full.contains("Truncated, retrying in TCP mode"), "{full}");
    assert!(full.contains("ANSWER: 60,") && full.contains("(TCP)"), "{full}");
    assert_eq!(short(&addr, &["big.example", "AAAA"]).len(), 60);
}

#[test]
fn scrub_frees_the_port_and_garbage_never_stops_the_server() {
    if !have_dig() {
        return;
    }
    let srv = TestServer::start(&[]);
    let (a, b) = (format!("{}/a", srv.id), format!("{}/b", srv.id));
    ok(srv.cli("mkdns", &[&a]));
    ok(srv.cli("set", &[&a, "host.test. A 192.0.2.1"]));
    let addr = address(&srv, &a);

    // Garbage datagrams: too short, a response, random bytes, a header
    // claiming sections that are not there. Then a good query is answered.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut junk: Vec<Vec<u8>> = vec![vec![1, 2, 3], vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]];
    junk.push(vec![
        0xAB, 0xCD, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 63,
    ]);
    for n in [12, 40, 512, 1500] {
        junk.push(
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
        );
    }
    for j in &junk {
        sock.send_to(j, &addr).unwrap();
    }
    // The malformed query with a readable header gets FORMERR.
    let mut formerr = None;
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if buf[..2] == [0xAB, 0xCD] {
            formerr = Some(buf[3] & 0x0F);
            break;
        }
        assert!(n >= 12);
    }
    assert_eq!(formerr, Some(1), "FORMERR for a query whose question is cut");
    assert_eq!(short(&addr, &["host.test", "A"]), ["192.0.2.1"]);
    assert_eq!(short(&addr, &["host.test", "A", "+tcp"]), ["192.0.2.1"]);

    // A port in use is a clear error, and nothing is kept.
    let e = fails(srv.cli("mkdns", &[&b, &addr]));
    assert!(e.contains("is in use"), "{e}");
    assert!(!ok(srv.cli("ls", &[&srv.id])).contains(&b), "nothing kept at {b}");

    // Scrub closes both sockets: the same port binds again at once.
    ok(srv.cli("scrub", &[&a]));
    UdpSocket::bind(&addr).expect("UDP port free after scrub");
    std::net::TcpListener::bind(&addr).expect("TCP port free after scrub");
    ok(srv.cli("mkdns", &[&b, &addr]));
    assert_eq!(address(&srv, &b), addr);
    ok(srv.cli("set", &[&b, "host.test. A 192.0.2.2"]));
    assert_eq!(short(&addr, &["host.test", "A", "+tcp"]), ["192.0.2.2"]);
}

#[test]
fn an_element_on_another_server_made_from_this_one() {
    if !have_dig() {
        return;
    }
    let s0 = TestServer::start(&[]);
    let s1 = TestServer::start(&["-j", &s0.url]);
    assert!(
        eventually(Duration::from_secs(10), || {
            let ls = ok(s0.cli("ls", &["/"]));
            ls.contains(&s1.id) && ls.contains(&s0.id)
        }),
        "servers never joined"
    );
    // Made, filled and peeked through s0; it runs on s1's host.
    let path = format!("{}/remote", s1.id);
    ok(s0.cli("mkdns", &[&path, ":0"]));
    ok(s0.cli("set", &[&path, "remote.test. 60 IN TXT \"on s1\""]));
    let addr = address(&s0, &path);
    assert_eq!(address(&s1, &path), addr);
    assert_eq!(short(&addr, &["remote.test", "TXT"]), ["\"on s1\""]);
    ok(s0.cli("unset", &[&path, "remote.test."]));
    assert!(dig(&addr, &["remote.test", "TXT"]).contains("NXDOMAIN"));
    ok(s0.cli("scrub", &[&path]));
    assert!(!ok(s1.cli("ls", &[&s1.id])).contains("remote"));
}

#[test]
fn config_file_dns_and_reload_without_rebinding() {
    if !have_dig() {
        return;
    }
    let dir = TempDir::new("dns-config");
    let file = dir.0.join("cluster.toml");
    let write = |records: &str| {
        std::fs::write(
            &file,
            format!("[dns.home]\nAddress = \"127.0.0.1\"\nRecords = [{records}]\n"),
        )
        .unwrap()
    };
    write("\"a.home. A 192.0.2.1\", \"a.home. A 192.0.2.2\"");
    let srv = TestServer::start(&["--config", file.to_str().unwrap()]);
    let path = format!("{}/home", srv.id);
    let addr = address(&srv, &path);
    assert_eq!(short(&addr, &["a.home", "A"]), ["192.0.2.1", "192.0.2.2"]);

    write("\"b.home. A 192.0.2.3\"");
    let report = ok(srv.cli("reloadconfig", &[&srv.id]));
    assert!(report.contains(&format!("\"Changed\": [\n\t\t\"{path}\"")), "{report}");
    assert_eq!(address(&srv, &path), addr, "same sockets");
    assert_eq!(short(&addr, &["b.home", "A"]), ["192.0.2.3"]);
    assert!(dig(&addr, &["a.home", "A"]).contains("NXDOMAIN"));

    // A bad record fails the reload for that element and keeps the old set.
    write("\"b.home. A 192.0.2.3\", \"b.home. MX nonsense\"");
    let report = ok(srv.cli("reloadconfig", &[&srv.id]));
    assert!(report.contains("invalid record"), "{report}");
    assert_eq!(short(&addr, &["b.home", "A"]), ["192.0.2.3"]);

    // A bad record at boot fails the start with a one-line error.
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[dns.x]\nRecords = [\"x. A 1.2.3\"]\n").unwrap();
    let o = run_cli(
        &["start", "-a", "127.0.0.1:0", "--config", bad.to_str().unwrap()],
        b"",
        &[],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid record"));
}
