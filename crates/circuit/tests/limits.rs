//! Hostile input from the wire against a real server: deep and long paths,
//! forged names in raw frames, unfinished requests, and replies of any size.

mod common;

use std::time::{Duration, Instant};

use circuit_proto::conn::{self, Control, StreamHandle};
use circuit_proto::frame::{MAX_REQUEST, encode, read_frame};
use circuit_proto::secure::client_handshake;
use circuit_proto::{CircuitUrl, ErrorKind, Path, Reply, Request, Response};
use common::{TestServer, eventually, fails, ok, stdout};
use tokio::io::AsyncWriteExt;

/// The request the raw tests forge: `mkchan PATH 1`.
fn make_chan(path: Path) -> Request {
    Request::new(path, circuit_proto::ChanOp::Make { cap: 1 })
}

/// A plain connection to `srv`, as the client library opens one.
async fn raw(srv: &TestServer) -> Control {
    let url: CircuitUrl = srv.url.parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(&url.addr).await.unwrap();
    conn::client(client_handshake(tcp, None).await.unwrap())
}

/// Writes `bytes` on a new stream and flushes, leaving the stream open.
async fn send_raw(ctl: &mut Control, bytes: &[u8]) -> StreamHandle {
    let mut s = ctl.open_stream().await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
    s
}

/// The answer on `s`, bounded in time.
async fn answer(s: &mut StreamHandle) -> Response {
    tokio::time::timeout(Duration::from_secs(20), read_frame::<Response, _>(s))
        .await
        .expect("an answer in time")
        .expect("a whole answer")
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A whole `mkchan` frame for `/<server>/names…` with any names at all:
/// a valid request is encoded around a placeholder name, and the postcard
/// bytes of the names list (count, then length and bytes of each) are
/// swapped for the forged ones.
fn forged(server: &str, names: &[&str]) -> Vec<u8> {
    const MARK: &str = "QQQQQQQQQQQQQQQQ";
    let frame = encode(&make_chan(format!("{server}/{MARK}").parse().unwrap())).unwrap();
    let body = &frame[4..];
    let at = body.windows(MARK.len()).position(|w| w == MARK.as_bytes()).unwrap();
    assert_eq!(&body[at - 2..at], &[1, MARK.len() as u8], "one name, 16 bytes long");
    let mut list = Vec::new();
    leb128(names.len(), &mut list);
    for n in names {
        leb128(n.len(), &mut list);
        list.extend_from_slice(n.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&body[..at - 2]);
    out.extend_from_slice(&list);
    out.extend_from_slice(&body[at + MARK.len()..]);
    let mut framed = (out.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&out);
    framed
}

/// A path `depth` names deep below `srv`, each name `name`.
fn deep(srv: &TestServer, name: &str, depth: usize) -> String {
    format!("{}{}", srv.id, format!("/{name}").repeat(depth))
}

#[test]
fn deep_paths_are_refused_and_the_deepest_allowed_is_quick() {
    let srv = TestServer::start(&[]);
    // 5,000 names (10 KB): once a stack overflow that took the server down.
    let huge = deep(&srv, "a", 5_000);
    for (cmd, args) in [("mkchan", vec![huge.as_str(), "1"]), ("scrub", vec![huge.as_str()])] {
        let err = fails(srv.cli(cmd, &args));
        assert!(err.contains("limit of 64 names"), "{err}");
        assert!(
            err.contains("(10018 bytes)") && err.len() < 400,
            "the path is not echoed whole: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // 1,500 names: its listing once took 37 s of CPU.
    let err = fails(srv.cli("ls", &[&format!("{}/...", deep(&srv, "a", 1_500))]));
    assert!(err.contains("limit of 64 names"), "{err}");
    let err = fails(srv.cli("mkchan", &[&deep(&srv, "a", 65), "1"]));
    assert!(err.contains("limit of 64 names"), "{err}");
    let long = format!("{}/{}", deep(&srv, &"b".repeat(255), 16), "c".repeat(100));
    assert!(long.len() > 4096);
    let err = fails(srv.cli("mkchan", &[&long, "1"]));
    assert!(err.contains("limit of 4096 bytes"), "{err}");

    // The deepest path allowed is served, listed and scrubbed.
    let at_max = deep(&srv, "a", 64);
    ok(srv.cli("mkchan", &[&at_max, "1"]));
    let listed = ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)]));
    assert_eq!(listed.lines().count(), 64, "{listed}");
    assert!(listed.lines().last().unwrap().contains(&at_max));
    ok(srv.cli("scrub", &[&at_max]));
    assert_eq!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])), "");
    ok(srv.cli("peek", &[&srv.id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_with_bad_names_are_refused() {
    let srv = TestServer::start(&[]);
    let mut ctl = raw(&srv).await;
    // The forging itself is sound: a good name makes a channel.
    let mut s = send_raw(&mut ctl, &forged(&srv.id, &["good"])).await;
    assert_eq!(answer(&mut s).await, Ok(Reply::Done));

    let long = "n".repeat(70_000);
    let deep = vec!["a"; 5_000];
    let bad: Vec<(Vec<&str>, &str)> = vec![
        (vec![".."], "anchor name \"..\" is invalid"),
        (vec!["good", "."], "anchor name \".\" is invalid"),
        (vec![""], "anchor name \"\" is invalid"),
        (vec!["a/b"], "anchor name \"a/b\" is invalid"),
        (vec!["a\0b"], "anchor name \"a\\0b\" is invalid"),
        (vec!["a\nFORGED INFO stopped"], "is invalid"),
        (vec![&long], "(70000 bytes)\" is invalid"),
        (deep, "limit of 64 names"),
    ];
    for (names, why) in &bad {
        let mut s = send_raw(&mut ctl, &forged(&srv.id, names)).await;
        let err = answer(&mut s).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
        assert!(err.message.starts_with("bad request: "), "{err}");
        assert!(err.message.contains(why), "{names:.20?}: {err}");
        assert!(err.message.len() < 300 && !err.message.contains('\n'), "{err}");
    }
    // Over the request limit: refused on its length word alone.
    // (Only its start is sent: the server refuses it before reading on.)
    let big = "n".repeat(MAX_REQUEST);
    let mut s = send_raw(&mut ctl, &forged(&srv.id, &[&big])[..1000]).await;
    let err = answer(&mut s).await.unwrap_err();
    assert!(
        err.message.contains("over the limit of 262144 bytes per request"),
        "{err}"
    );

    // Nothing was made but the good channel, and listing everything works.
    let all = ok(srv.cli("ls", &["-l", "/..."]));
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(all.contains(&format!("{}/good", srv.id)), "{all}");
    let log = srv.log();
    assert!(log.matches("bad request").count() >= bad.len(), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a name forged a log line: {log}"
    );
}

/// A `mkchan` that must be answered (a fresh name each time).
async fn probe(ctl: &mut Control, srv: &TestServer, n: &mut usize) -> Response {
    *n += 1;
    let mut s = send_raw(ctl, &forged(&srv.id, &[&format!("probe{n}")])).await;
    answer(&mut s).await
}

/// The length word of a request as big as allowed, and nothing after it.
fn stalled() -> [u8; 4] {
    (MAX_REQUEST as u32).to_le_bytes()
}

/// Sends again each stalled request of `held` that was already refused.
/// The server reads streams concurrently: a probe read while the last
/// stalled request's length word is still on its way takes a few bytes of
/// the budget, and that stalled request is refused for them.
async fn resend_refused(ctl: &mut Control, held: &mut [StreamHandle]) {
    for s in held {
        // An answer is one small frame: it is read whole or not at all.
        let Ok(got) = tokio::time::timeout(Duration::from_millis(1), read_frame::<Response, _>(s)).await else {
            continue;
        };
        let e = got.expect("a whole answer").unwrap_err();
        assert!(e.message.contains("per-connection limit of 1 MiB"), "{e}");
        *s = send_raw(ctl, &stalled()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_requests_are_bounded_per_connection_and_per_server() {
    let srv = TestServer::start(&[]);
    let mut n = 0;
    // One connection: four stalled requests take its whole 1 MiB.
    let mut first = raw(&srv).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(send_raw(&mut first, &stalled()).await);
    }
    let mut refused = None;
    for _ in 0..100 {
        match probe(&mut first, &srv, &mut n).await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(_) => {
                resend_refused(&mut first, &mut held).await;
                tokio::time::sleep(Duration::from_millis(20)).await
            }
        }
    }
    let e = refused.expect("the connection's budget runs out");
    assert_eq!(e.kind, ErrorKind::Busy);
    assert!(e.message.contains("per-connection limit of 1 MiB"), "{e}");
    // Another connection is not affected.
    let mut other = raw(&srv).await;
    assert_eq!(probe(&mut other, &srv, &mut n).await, Ok(Reply::Done));

    // Sixteen more connections doing the same take the server's 16 MiB.
    let mut crowd = Vec::new();
    for _ in 0..16 {
        let mut c = raw(&srv).await;
        for _ in 0..4 {
            held.push(send_raw(&mut c, &stalled()).await);
        }
        crowd.push(c);
    }
    let mut refused = None;
    for _ in 0..100 {
        match probe(&mut other, &srv, &mut n).await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let e = refused.expect("the server's budget runs out");
    assert!(e.message.contains("per-server limit of 16 MiB"), "{e}");

    // The crowd leaves: its budget comes back.
    drop(crowd);
    held.truncate(4);
    let back = Instant::now();
    let mut fresh = raw(&srv).await;
    let mut served = false;
    while !served && back.elapsed() < Duration::from_secs(8) {
        served = probe(&mut fresh, &srv, &mut n).await.is_ok();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the budget of closed connections is given back");

    // The first connection's stalled requests meet the deadline, and its budget returns.
    let e = answer(&mut held[0]).await.unwrap_err();
    assert!(
        e.message.contains("not whole within 10 s (the request deadline)"),
        "{e}"
    );
    let mut served = false;
    for _ in 0..100 {
        if probe(&mut first, &srv, &mut n).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the connection's budget is given back after the deadline");
    let log = srv.log();
    for limit in ["per-connection limit", "per-server limit", "request deadline"] {
        assert!(log.contains(limit), "{limit} is logged: {log}");
    }
    let lines = log.matches("request refused").count();
    assert!(lines <= 40, "refusals are logged, not flooded: {lines} lines");
}

#[test]
fn replies_over_one_frame_arrive_whole_forwarded_too() {
    let a = TestServer::start(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    assert!(
        eventually(Duration::from_secs(20), || {
            let o = b.cli("ls", &["/"]);
            o.status.success() && stdout(&o).lines().count() == 2
        }),
        "b joins a"
    );
    // Twelve channels 64 names deep, names of 60 bytes: listing every
    // anchor takes about 1.5 MB, more than one frame.
    let mut chans = Vec::new();
    for i in 0..12 {
        let names: String = (0..64).map(|j| format!("/c{i:02}l{j:02}{}", "x".repeat(54))).collect();
        let path = format!("{}{names}", a.id);
        ok(a.cli("mkchan", &[&path, "1"]));
        chans.push(path);
    }
    let all = format!("{}/...", a.id);
    let here = ok(a.cli("ls", &[&all]));
    assert!(here.len() > 1 << 20, "{} bytes", here.len());
    assert_eq!(here.lines().count(), 12 * 64);
    // Through b: relayed byte for byte, and gathered for `ls /...`.
    assert_eq!(ok(b.cli("ls", &[&all])), here);
    let everything = ok(b.cli("ls", &["/..."]));
    assert_eq!(everything.lines().count(), 12 * 64 + 2);
    for c in &chans {
        ok(a.cli("scrub", &[c]));
    }
    assert_eq!(ok(a.cli("ls", &[&all])), "");
}
