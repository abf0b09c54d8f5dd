//! Channel elements end to end: a real server process, driven by the real
//! CLI and by the client library. Every wait is bounded; every process a
//! test starts is killed by its handle (PID) when the test ends.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use circuit_client::{ChanStat, Client, ErrorKind};
use common::{TempDir, TestServer, fails, ok, run_cli, spawn_cli, wait_log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits until the server has seen `n` requests `op` on `path`, then a
/// little more, so that the request is being served (waiting) by then.
fn wait_request(srv: &TestServer, op: &str, path: &str, n: usize) {
    let needle = format!("op=\"{op}\" path={path}\n");
    assert!(
        wait_log(srv, &needle, n, Duration::from_secs(10)),
        "no {op} request on {path} in the log: {}",
        srv.log()
    );
    std::thread::sleep(Duration::from_millis(200));
}

fn peek_text(cap: u64, closed: bool, sends: u64, recvs: u64) -> String {
    format!(
        "{{\n\t\"Cap\": {cap},\n\t\"Closed\": {closed},\n\t\"Aborted\": false,\n\t\"NumSend\": {sends},\n\t\"NumRecv\": {recvs}\n}}\n"
    )
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn seed_walkthrough_create_a_channel() {
    let srv = TestServer::start(&[]);
    let charlie = format!("{}/this/is/charlie", srv.id);
    ok(srv.cli("mkchan", &[&charlie, "3"]));
    assert_eq!(ok(srv.cli("peek", &[&charlie])), peek_text(3, false, 0, 0));
    let ls = ok(srv.cli("ls", &["-l", "/..."]));
    assert!(ls.contains(&format!("chan            {charlie}\n")), "{ls}");

    let dir = TempDir::new("chan-seed");
    let file = dir.0.join("some_file");
    let contents = "The contents of the message is read out from the standard input.\nline two\n";
    std::fs::write(&file, contents).unwrap();
    let from_file = || Stdio::from(std::fs::File::open(&file).unwrap());

    // Three sends find room in the buffer and return without a receiver.
    for _ in 0..3 {
        let mut send = spawn_cli(&srv, "send", &[&charlie], from_file());
        let done = send.finish_within(WAIT).expect("a send with buffer room returns");
        assert!(done.status.success(), "{}", done.stderr);
    }
    assert_eq!(ok(srv.cli("peek", &[&charlie])), peek_text(3, false, 3, 0));

    // The fourth blocks until a receiver takes a message.
    let mut fourth = spawn_cli(&srv, "send", &[&charlie], from_file());
    assert!(
        fourth.still_running_after(Duration::from_millis(700)),
        "the 4th send must block"
    );
    assert_eq!(ok(srv.cli("recv", &[&charlie])), contents);
    let done = fourth.finish_within(WAIT).expect("the 4th send returns after a recv");
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(ok(srv.cli("peek", &[&charlie])), peek_text(3, false, 4, 1));

    // Close: sends fail, receivers drain the buffer, then fail.
    ok(srv.cli("close", &[&charlie]));
    let err = fails(srv.cli_in("send", &[&charlie], b"late"));
    assert!(
        err.contains("send error") && err.contains("channel closed") && err.contains(&charlie),
        "{err}"
    );
    for _ in 0..3 {
        assert_eq!(ok(srv.cli("recv", &[&charlie])), contents);
    }
    let err = fails(srv.cli("recv", &[&charlie]));
    assert!(err.contains("recv error") && err.contains("channel closed"), "{err}");
    let err = fails(srv.cli("close", &[&charlie]));
    assert!(err.contains("channel already closed"), "{err}");
    assert_eq!(ok(srv.cli("peek", &[&charlie])), peek_text(3, true, 4, 4));

    ok(srv.cli("scrub", &[&charlie]));
    assert_eq!(ok(srv.cli("peek", &[&charlie])), "null\n");
    assert_eq!(ok(srv.cli("ls", &[&format!("{}/...", srv.id)])), "");
    assert!(srv.log().contains("op=\"mkchan\""), "operations are logged");
}

#[test]
fn bad_capacities_and_wrong_places() {
    let srv = TestServer::start(&[]);
    let bad = format!("{}/bad", srv.id);
    for cap in ["-1", "x", "1.5"] {
        let err = fails(srv.cli("mkchan", &[&bad, cap]));
        assert!(
            err.contains("second argument to mkchan must be a non-negative integral capacity"),
            "{cap}: {err}"
        );
    }
    assert_eq!(ok(srv.cli("peek", &[&bad])), "null\n");
    let usage = srv.cli("mkchan", &[&bad]);
    assert_eq!(usage.status.code(), Some(2), "a missing capacity is a usage error");

    ok(srv.cli("mkchan", &[&bad, "0"]));
    let err = fails(srv.cli("mkchan", &[&bad, "1"]));
    assert!(err.contains(&format!("anchor {bad} already holds a chan")), "{err}");
    let err = fails(srv.cli_in("send", &[&srv.id], b"x"));
    assert!(
        err.contains(&format!("anchor {} holds a server, not a chan", srv.id)),
        "{err}"
    );
    let nothing = format!("{}/nothing", srv.id);
    let err = fails(srv.cli("recv", &[&nothing]));
    assert!(err.contains(&format!("no chan at {nothing}")), "{err}");
    let err = fails(srv.cli("close", &[&nothing]));
    assert!(err.contains("no chan at"), "{err}");
    let err = fails(srv.cli("mkchan", &["/", "1"]));
    assert!(err.contains("below a server"), "{err}");
}

#[test]
fn a_large_message_arrives_intact_and_messages_keep_their_order() {
    let srv = TestServer::start(&[]);
    let ch = format!("{}/big", srv.id);
    ok(srv.cli("mkchan", &[&ch, "1"]));
    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (url, path, data) = (srv.url.clone(), ch.clone(), big.clone());
    // Over 32 KiB: the sender blocks until a receiver streams the message.
    let sender = std::thread::spawn(move || run_cli(&["send", "-d", &url, &path], &data, &[]));
    let got = run_cli(&["recv", "-d", &srv.url, &ch], b"", &[]);
    assert!(got.status.success(), "{}", common::stderr(&got));
    assert!(
        got.stdout == big,
        "1 MiB message changed: got {} bytes",
        got.stdout.len()
    );
    ok(sender.join().unwrap());

    let fifo = format!("{}/fifo", srv.id);
    ok(srv.cli("mkchan", &[&fifo, "5"]));
    for i in 0..5 {
        ok(srv.cli_in("send", &[&fifo], format!("message {i}").as_bytes()));
    }
    for i in 0..5 {
        assert_eq!(ok(srv.cli("recv", &[&fifo])), format!("message {i}"));
    }
    // An empty message is a message.
    ok(srv.cli_in("send", &[&fifo], b""));
    assert_eq!(ok(srv.cli("recv", &[&fifo])), "");
    assert_eq!(ok(srv.cli("peek", &[&fifo])), peek_text(5, false, 6, 6));
}

#[test]
fn zero_capacity_is_a_rendezvous() {
    let srv = TestServer::start(&[]);
    let ch = format!("{}/rdv", srv.id);
    ok(srv.cli("mkchan", &[&ch, "0"]));
    let mut send = spawn_cli(&srv, "send", &[&ch], Stdio::piped());
    send.child.stdin.take().unwrap().write_all(b"meet me").unwrap();
    assert!(
        send.still_running_after(Duration::from_millis(500)),
        "no receiver yet: the send waits"
    );
    assert_eq!(ok(srv.cli("peek", &[&ch])), peek_text(0, false, 0, 0));
    assert_eq!(ok(srv.cli("recv", &[&ch])), "meet me");
    let done = send.finish_within(WAIT).expect("the send returns once received");
    assert!(done.status.success(), "{}", done.stderr);

    // The receiver first this time.
    let mut recv = spawn_cli(&srv, "recv", &[&ch], Stdio::null());
    assert!(
        recv.still_running_after(Duration::from_millis(500)),
        "no sender yet: the recv waits"
    );
    ok(srv.cli_in("send", &[&ch], b"here I am"));
    let done = recv.finish_within(WAIT).expect("the recv returns");
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, "here I am");
    assert_eq!(ok(srv.cli("peek", &[&ch])), peek_text(0, false, 2, 2));
}

#[test]
fn scrub_aborts_blocked_senders_and_receivers() {
    let srv = TestServer::start(&[]);
    let empty = format!("{}/empty", srv.id);
    let full = format!("{}/full", srv.id);
    ok(srv.cli("mkchan", &[&empty, "0"]));
    ok(srv.cli("mkchan", &[&full, "1"]));
    ok(srv.cli_in("send", &[&full], b"first"));

    let mut recv = spawn_cli(&srv, "recv", &[&empty], Stdio::null());
    let mut send = spawn_cli(&srv, "send", &[&full], Stdio::null());
    wait_request(&srv, "recv", &empty, 1);
    wait_request(&srv, "send", &full, 2);
    assert!(recv.still_running_after(Duration::ZERO));
    assert!(send.still_running_after(Duration::ZERO));

    ok(srv.cli("scrub", &[&empty]));
    ok(srv.cli("scrub", &[&full]));
    for (what, p) in [("recv", &mut recv), ("send", &mut send)] {
        let done = p.finish_within(WAIT).expect("scrub wakes the waiter");
        assert_eq!(done.status.code(), Some(1), "{what}: {}", done.stderr);
        assert!(
            done.stderr.contains(&format!("{what} error")) && done.stderr.contains("channel aborted"),
            "{what}: {}",
            done.stderr
        );
        assert_eq!(done.stderr.trim_end().lines().count(), 1, "{}", done.stderr);
    }
    assert_eq!(ok(srv.cli("peek", &[&full])), "null\n");
}

#[test]
fn a_sender_killed_mid_message_leaves_the_channel_usable() {
    let srv = TestServer::start(&[]);
    let ch = format!("{}/c", srv.id);
    ok(srv.cli("mkchan", &[&ch, "1"]));

    // Room in the buffer: the send starts streaming, and dies half-way.
    let mut send = spawn_cli(&srv, "send", &[&ch], Stdio::piped());
    let mut input = send.child.stdin.take().unwrap();
    input.write_all(&[b'h'; 10_000]).unwrap();
    input.flush().unwrap();
    wait_request(&srv, "send", &ch, 1);
    send.child.kill().unwrap();
    drop(input);
    assert!(
        wait_log(&srv, "mid-message; message dropped", 1, WAIT),
        "the server must notice: {}",
        srv.log()
    );

    // Its buffer slot is free again: this send returns without a receiver.
    let mut next = spawn_cli(&srv, "send", &[&ch], Stdio::piped());
    next.child.stdin.take().unwrap().write_all(b"whole message").unwrap();
    let done = next
        .finish_within(WAIT)
        .expect("the slot of the dead sender's message is free");
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(ok(srv.cli("recv", &[&ch])), "whole message");
    assert_eq!(ok(srv.cli("peek", &[&ch])), peek_text(1, false, 1, 1));
}

#[test]
fn a_receiver_killed_while_waiting_takes_nothing() {
    let srv = TestServer::start(&[]);
    let ch = format!("{}/c", srv.id);
    ok(srv.cli("mkchan", &[&ch, "0"]));
    let mut recv = spawn_cli(&srv, "recv", &[&ch], Stdio::null());
    wait_request(&srv, "recv", &ch, 1);
    recv.child.kill().unwrap();
    assert!(
        wait_log(&srv, "receiver went away while waiting", 1, WAIT),
        "{}",
        srv.log()
    );

    // With capacity 0, a send matched with the dead receiver would be lost.
    let mut send = spawn_cli(&srv, "send", &[&ch], Stdio::piped());
    send.child.stdin.take().unwrap().write_all(b"for the living").unwrap();
    assert!(send.still_running_after(Duration::from_millis(300)));
    assert_eq!(ok(srv.cli("recv", &[&ch])), "for the living");
    assert!(send.finish_within(WAIT).expect("send returns").status.success());
}

async fn dial(srv: &TestServer) -> Client {
    Client::dial(&srv.url, None).await.expect("dial")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_senders_and_a_hundred_receivers() {
    let srv = TestServer::start(&[]);
    let clients = [dial(&srv).await, dial(&srv).await, dial(&srv).await];
    let chan = clients[0]
        .walk(&format!("{}/crowd", srv.id))
        .unwrap()
        .make_chan(4)
        .await
        .unwrap();
    let message = |i: usize| -> Vec<u8> {
        let mut m = format!("message {i:03} ").into_bytes();
        // Every tenth message is long enough to stream.
        let extra = if i.is_multiple_of(10) { 100_000 } else { i };
        m.extend((0..extra).map(|k| (k % 97) as u8));
        m
    };
    let work = async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let c = clients[i % 3].anchor(chan.path().clone()).chan();
            let m = message(i);
            tasks.spawn(async move { c.send(&m).await.map(|_| None) });
            let c = clients[(i + 1) % 3].anchor(chan.path().clone()).chan();
            tasks.spawn(async move { c.recv().await.map(Some) });
        }
        let mut got = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Some(m) = r.expect("task").expect("send/recv") {
                got.push(m);
            }
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("all messages delivered within 60 s");
    assert_eq!(got.len(), 100);
    let got: BTreeSet<Vec<u8>> = got.into_iter().collect();
    let want: BTreeSet<Vec<u8>> = (0..100).map(message).collect();
    assert!(got == want, "every message exactly once");
    let stat = chan.peek().await.unwrap();
    assert_eq!(
        stat,
        ChanStat {
            cap: 4,
            closed: false,
            aborted: false,
            num_send: 100,
            num_recv: 100
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_streams_close_and_scrub() {
    let srv = TestServer::start(&[]);
    let client = dial(&srv).await;
    let anchor = client.walk(&format!("{}/lib", srv.id)).unwrap();
    let chan = anchor.make_chan(0).await.unwrap();
    let err = anchor.make_chan(1).await.err().expect("occupied");
    assert_eq!(err.kind(), Some(ErrorKind::Exists));

    // A message of any length, written and read in pieces.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let (c, data) = (chan.clone(), big.clone());
    let sender = tokio::spawn(async move {
        let mut w = c.send_stream().await?;
        for piece in data.chunks(7_777) {
            w.write_all(piece).await.map_err(circuit_client::Error::Io)?;
        }
        w.finish().await
    });
    let mut r = chan.recv_stream().await.unwrap();
    let mut got = Vec::new();
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await {
        panic!("{e} after {} bytes; log: {}", got.len(), srv.log());
    }
    assert!(got == big, "streamed message changed: {} bytes", got.len());
    sender.await.unwrap().unwrap();

    // A waiting receiver is woken by close; later sends fail.
    let c = chan.clone();
    let waiting = tokio::spawn(async move { c.recv().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    chan.close().await.unwrap();
    let err = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Closed), "{err}");
    let err = chan.send(b"late").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Closed));
    assert!(err.to_string().contains("channel closed"), "{err}");
    assert_eq!(chan.close().await.unwrap_err().kind(), Some(ErrorKind::Closed));
    let stat = chan.peek().await.unwrap();
    assert!(
        stat.closed && !stat.aborted && stat.num_send == 1 && stat.num_recv == 1,
        "{stat:?}"
    );

    // Scrub aborts a receiver that waits.
    let other = client
        .walk(&format!("{}/other", srv.id))
        .unwrap()
        .make_chan(2)
        .await
        .unwrap();
    let c = other.clone();
    let waiting = tokio::spawn(async move { c.recv().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.scrub().await.unwrap();
    let err = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Aborted), "{err}");
    assert!(err.to_string().contains("channel aborted"), "{err}");
    assert_eq!(other.peek().await.unwrap_err().kind(), Some(ErrorKind::NotFound));

    // A writer dropped before its end abandons the message.
    let third = client
        .walk(&format!("{}/third", srv.id))
        .unwrap()
        .make_chan(1)
        .await
        .unwrap();
    let mut w = third.send_stream().await.unwrap();
    w.write_all(b"never whole").await.unwrap();
    w.flush().await.unwrap();
    drop(w);
    third.send(b"whole").await.unwrap();
    assert_eq!(third.recv().await.unwrap(), b"whole");
    assert_eq!(third.peek().await.unwrap().num_send, 1);
}

/// Runs a test body, failing it if it takes over 90 s in all.
async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), body)
        .await
        .expect("the test finished within 90 s")
}

/// The `i`th message of a pipelined test: its number first, so order shows;
/// every thousandth is long enough to stream (over the 32 KiB read-ahead).
fn numbered(i: usize) -> Vec<u8> {
    let mut m = format!("{i:06} ").into_bytes();
    let extra = if i % 1000 == 999 { 50_000 } else { i % 200 };
    m.extend((0..extra).map(|k| (k % 89) as u8));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_handles_deliver_every_message_once_in_order() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let chan = client
            .walk(&format!("{}/pipe", srv.id))
            .unwrap()
            .make_chan(16)
            .await
            .unwrap();
        const N: usize = 20_000;
        let mut rx = chan.receiver().await.unwrap();
        let receiver = tokio::spawn(async move {
            for i in 0..N {
                let m = rx.recv().await.map_err(|e| format!("message {i}: {e}"))?;
                if m != numbered(i) {
                    return Err(format!(
                        "message {i} is {:?}…",
                        String::from_utf8_lossy(&m[..m.len().min(7)])
                    ));
                }
            }
            Ok::<_, String>(())
        });
        let mut tx = chan.sender().await.unwrap();
        let work = async {
            for i in 0..N {
                tx.send(&numbered(i)).await.unwrap();
                assert!(tx.in_flight() <= circuit_client::SEND_WINDOW);
            }
            tx.flush().await
        };
        let placed = tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("sent within 60 s")
            .unwrap();
        assert_eq!((placed, tx.in_flight()), (N as u64, 0));
        tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .expect("received within 60 s")
            .unwrap()
            .unwrap();
        let stat = chan.peek().await.unwrap();
        assert_eq!((stat.num_send, stat.num_recv), (N as u64, N as u64));
        // Nothing is left over: a plain receive waits.
        let c = chan.clone();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), c.recv())
                .await
                .is_err(),
            "the channel is empty"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_sender_feeds_plain_receivers() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let chan = client
            .walk(&format!("{}/rdv", srv.id))
            .unwrap()
            .make_chan(0)
            .await
            .unwrap();
        let mut tx = chan.sender().await.unwrap();
        // A send returns once written, not once placed: with no receiver on a
        // rendezvous channel, nothing is placed yet.
        tx.send(&numbered(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(tx.in_flight(), 1);
        assert_eq!(chan.peek().await.unwrap().num_send, 0);
        assert_eq!(chan.recv().await.unwrap(), numbered(0));
        assert_eq!(tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap(), 1);
        assert_eq!(chan.peek().await.unwrap().num_send, 1);

        // Four plain receivers share the rest; each sees its part in order.
        let mut receivers = Vec::new();
        for _ in 0..4 {
            let c = chan.clone();
            receivers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..50 {
                    got.push(c.recv().await?);
                }
                Ok::<_, circuit_client::Error>(got)
            }));
        }
        let work = async {
            for i in 1..=200 {
                tx.send(&numbered(i)).await.unwrap();
            }
            tx.flush().await.unwrap()
        };
        assert_eq!(tokio::time::timeout(Duration::from_secs(30), work).await.unwrap(), 201);
        let mut all = BTreeSet::new();
        for r in receivers {
            let got = tokio::time::timeout(WAIT, r).await.unwrap().unwrap().unwrap();
            let mut last = None;
            for m in got {
                let n: usize = String::from_utf8_lossy(&m[..6]).parse().unwrap();
                assert_eq!(m, numbered(n));
                assert!(last < Some(n), "each receiver gets its messages in order");
                last = Some(n);
                assert!(all.insert(n), "message {n} twice");
            }
        }
        assert_eq!(all, (1..=200).collect::<BTreeSet<_>>());
        let stat = chan.peek().await.unwrap();
        assert_eq!((stat.num_send, stat.num_recv), (201, 201));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_says_channel_closed_with_the_number_placed() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let chan = client
            .walk(&format!("{}/closing", srv.id))
            .unwrap()
            .make_chan(1)
            .await
            .unwrap();
        let mut tx = chan.sender().await.unwrap();
        tx.send(b"a").await.unwrap();
        assert_eq!(tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap(), 1);
        // "b" waits for room; a sender already waiting still delivers after a
        // close, the ones after it do not.
        tx.send(b"b").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        chan.close().await.unwrap();
        tx.send(b"c").await.unwrap();
        assert_eq!(chan.recv().await.unwrap(), b"a");
        let err = tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap_err();
        assert_eq!(err.placed, 2, "{err}");
        assert_eq!(err.error.kind(), Some(ErrorKind::Closed), "{err}");
        assert!(err.to_string().contains("channel closed"), "{err}");
        let again = tx.send(b"d").await.unwrap_err();
        assert_eq!(again.kind(), Some(ErrorKind::Closed), "the handle stays failed");
        assert_eq!(chan.recv().await.unwrap(), b"b");
        assert_eq!(chan.recv().await.unwrap_err().kind(), Some(ErrorKind::Closed));
        let stat = chan.peek().await.unwrap();
        assert!(stat.closed && stat.num_send == 2 && stat.num_recv == 2, "{stat:?}");

        // A pipelined receiver drains a closed channel, then fails.
        let drained = client
            .walk(&format!("{}/drained", srv.id))
            .unwrap()
            .make_chan(3)
            .await
            .unwrap();
        for m in [b"x", b"y"] {
            drained.send(m).await.unwrap();
        }
        drained.close().await.unwrap();
        let mut rx = drained.receiver().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"x");
        assert_eq!(rx.recv().await.unwrap(), b"y");
        let err = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::Closed), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_aborts_pipelined_handles() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let full = client
            .walk(&format!("{}/full", srv.id))
            .unwrap()
            .make_chan(1)
            .await
            .unwrap();
        let empty = client
            .walk(&format!("{}/empty", srv.id))
            .unwrap()
            .make_chan(0)
            .await
            .unwrap();
        let mut tx = full.sender().await.unwrap();
        for m in [b"1", b"2", b"3"] {
            tx.send(m).await.unwrap();
        }
        let mut rx = empty.receiver().await.unwrap();
        let waiting = tokio::spawn(async move { rx.recv().await.map(|_| rx) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "nothing to receive yet");

        full.scrub().await.unwrap();
        empty.scrub().await.unwrap();
        let err = tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap_err();
        assert_eq!((err.placed, err.error.kind()), (1, Some(ErrorKind::Aborted)), "{err}");
        assert!(err.to_string().contains("channel aborted"), "{err}");
        let err = tokio::time::timeout(WAIT, waiting)
            .await
            .unwrap()
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err.kind(), Some(ErrorKind::Aborted), "{err}");
        assert!(err.to_string().contains("channel aborted"), "{err}");
        assert_eq!(full.peek().await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_receiver_handle_loses_only_what_was_written_to_it() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let chan = client
            .walk(&format!("{}/taken", srv.id))
            .unwrap()
            .make_chan(10)
            .await
            .unwrap();
        let mut tx = chan.sender().await.unwrap();
        for i in 0..10 {
            tx.send(&numbered(i)).await.unwrap();
        }
        assert_eq!(tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap(), 10);

        // Credit 4: the server takes and writes messages 0..4 at once; the
        // handle returns two and is dropped, so 2 and 3 are lost.
        let mut rx = chan.receiver_with_credit(4).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), numbered(0));
        assert_eq!(rx.recv().await.unwrap(), numbered(1));
        drop(rx);
        let settled = async {
            for _ in 0..100 {
                if chan.peek().await.unwrap().num_recv == 4 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, settled).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stat = chan.peek().await.unwrap();
        assert_eq!((stat.num_send, stat.num_recv), (10, 4), "taken ahead = credit");
        assert_eq!(chan.recv().await.unwrap(), numbered(4), "the channel goes on in order");

        // Credit 1: the server takes a message only once the last one was
        // returned, so dropping the handle after a receive loses nothing.
        let mut rx = chan.receiver_with_credit(1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), numbered(5));
        drop(rx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(chan.peek().await.unwrap().num_recv, 6);
        let mut rx = chan.receiver().await.unwrap();
        for i in 6..10 {
            assert_eq!(rx.recv().await.unwrap(), numbered(i));
        }
        let stat = chan.peek().await.unwrap();
        assert_eq!((stat.num_send, stat.num_recv), (10, 10));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pipelined_send_abandons_only_its_message() {
    let srv = TestServer::start(&[]);
    bounded(async {
        let client = dial(&srv).await;
        let chan = client
            .walk(&format!("{}/cancel", srv.id))
            .unwrap()
            .make_chan(0)
            .await
            .unwrap();
        let mut tx = chan.sender().await.unwrap();
        let c = chan.clone();
        let first = tokio::spawn(async move { c.recv().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A long message, its send cut off half-way.
        let long = vec![7u8; 64 << 20];
        let cut = tokio::time::timeout(Duration::from_millis(50), tx.send(&long)).await;
        assert!(cut.is_err(), "64 MiB take longer than 50 ms");
        tx.send(b"next").await.unwrap();
        // The receiver that took the long message learns it was cut short.
        let err = tokio::time::timeout(WAIT, first).await.unwrap().unwrap().unwrap_err();
        assert!(err.to_string().contains("sender went away"), "{err}");
        assert_eq!(tokio::time::timeout(WAIT, chan.recv()).await.unwrap().unwrap(), b"next");
        assert_eq!(tokio::time::timeout(WAIT, tx.flush()).await.unwrap().unwrap(), 1);
        let stat = chan.peek().await.unwrap();
        assert_eq!((stat.num_send, stat.num_recv), (1, 1));
    })
    .await;
}
