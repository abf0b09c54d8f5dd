//! `@join` and `@leave` subscriptions end to end: real servers on loopback
//! joining, stopping and being killed, watched with the real CLI and the
//! client library. Every wait is bounded; every process a test starts is
//! killed by its handle (PID) when the test ends.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use circuit_client::{Client, ErrorKind, SubscriptionSource, SubscriptionStat};
use common::{TestServer, eventually, fails, ok, spawn_cli};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(15);

/// The servers `srv` lists at `/`.
fn members(srv: &TestServer) -> BTreeSet<String> {
    ok(srv.cli("ls", &["/"])).lines().map(str::to_string).collect()
}

/// Waits until `srv` lists exactly `ids` at `/`.
#[track_caller]
fn wait_members(srv: &TestServer, ids: &[&str]) {
    let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert!(
        eventually(WAIT, || members(srv) == want),
        "{} lists {:?}, not {want:?}",
        srv.id,
        members(srv)
    );
}

/// Waits until the server log holds `n` requests `op` on `path`, then a
/// little more, so that the request is being served (waiting) by then.
#[track_caller]
fn wait_request(srv: &TestServer, op: &str, path: &str, n: usize) {
    let needle = format!("op=\"{op}\" path={path}\n");
    assert!(
        eventually(WAIT, || srv.log().matches(&needle).count() >= n),
        "no {op} request on {path} in the log: {}",
        srv.log()
    );
    std::thread::sleep(Duration::from_millis(200));
}

/// `peek` of a subscription as the CLI prints it.
fn peek_text(source: &str, pending: u64, dropped: u64) -> String {
    format!(
        "{{\n\t\"Source\": \"{source}\",\n\t\"Pending\": {pending},\n\t\"Dropped\": {dropped},\n\t\"Closed\": false\n}}\n"
    )
}

/// Runs `recv PATH` and waits (bounded) for the one event it prints.
#[track_caller]
fn recv_one(srv: &TestServer, path: &str) -> String {
    let mut recv = spawn_cli(srv, "recv", &[path], Stdio::null());
    let done = recv.finish_within(WAIT).expect("recv returns once an event is there");
    assert!(done.status.success(), "recv failed: {}", done.stderr);
    done.stdout
}

#[test]
fn a_joining_server_is_an_event_and_ls_shows_the_kinds() {
    let a = TestServer::start(&[]);
    let join = format!("{}/watch/join", a.id);
    let leave = format!("{}/watch/leave", a.id);
    ok(a.cli("mk@join", &[&join]));
    ok(a.cli("mk@leave", &[&leave]));
    let ls = ok(a.cli("ls", &["-l", "/..."]));
    assert_eq!(
        ls,
        format!(
            "server          {a}\n·               {a}/watch\n@join           {join}\n@leave          {leave}\n",
            a = a.id
        )
    );
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 0, 0));
    assert_eq!(ok(a.cli("peek", &[&leave])), peek_text("leave", 0, 0));

    let b = TestServer::start(&["-j", &a.url]);
    assert_eq!(recv_one(&a, &join), format!("{}\n", b.id));
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 0, 0));
    assert_eq!(ok(a.cli("peek", &[&leave])), peek_text("leave", 0, 0));

    // A subscription sees events from its creation on: B, already a
    // member, is not replayed to a new one.
    wait_members(&a, &[&a.id, &b.id]);
    let late = format!("{}/watch/late", a.id);
    ok(a.cli("mk@join", &[&late]));
    let mut recv = spawn_cli(&a, "recv", &[&late], Stdio::null());
    assert!(
        recv.still_running_after(Duration::from_millis(500)),
        "nothing to receive yet"
    );
    assert_eq!(ok(a.cli("peek", &[&late])), peek_text("join", 0, 0));

    // Made through another server: the request is forwarded to the owner.
    let remote = format!("{}/watch/join", b.id);
    ok(a.cli("mk@join", &[&remote]));
    let ls = ok(b.cli("ls", &["-l", &format!("{}/watch", b.id)]));
    assert_eq!(ls, format!("@join           {remote}\n"));
}

#[test]
fn making_one_where_it_cannot_go_fails_clearly() {
    let a = TestServer::start(&[]);
    let err = fails(a.cli("mk@join", &[&a.id]));
    assert!(err.contains("is a server; make the subscription below it"), "{err}");
    let taken = format!("{}/taken", a.id);
    ok(a.cli("mkchan", &[&taken, "1"]));
    let err = fails(a.cli("mk@leave", &[&taken]));
    assert!(err.contains(&format!("anchor {taken} already holds a chan")), "{err}");
    let sub = format!("{}/sub", a.id);
    ok(a.cli("mk@join", &[&sub]));
    let err = fails(a.cli("mk@leave", &[&sub]));
    assert!(err.contains("mk@leave error"), "{err}");
    assert!(err.contains(&format!("anchor {sub} already holds a @join")), "{err}");
    // A subscription is not a channel.
    let err = fails(a.cli_in("send", &[&sub], b"x"));
    assert!(err.contains("holds a @join, not a chan"), "{err}");
    let err = fails(a.cli("mk@join", &["/Xffffffffffffffff/sub"]));
    assert!(err.contains("not in the cluster"), "{err}");
}

#[test]
fn a_killed_server_is_delivered_by_leave() {
    let a = TestServer::start(&[]);
    let leave = format!("{}/leave", a.id);
    ok(a.cli("mk@leave", &[&leave]));
    let mut b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    let mut recv = spawn_cli(&a, "recv", &[&leave], Stdio::null());
    wait_request(&a, "recv", &leave, 1);
    assert!(recv.still_running_after(Duration::from_millis(100)), "no one left yet");
    let killed = Instant::now();
    // Our own child, by PID.
    b.child.kill().unwrap();
    let done = recv.finish_within(WAIT).expect("the leave arrives");
    assert!(done.status.success(), "recv failed: {}", done.stderr);
    assert_eq!(done.stdout, format!("{}\n", b.id));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "detection took {took:?}");
    wait_members(&a, &[&a.id]);
    assert_eq!(ok(a.cli("peek", &[&leave])), peek_text("leave", 0, 0));
}

#[test]
fn a_stopped_server_is_delivered_by_leave() {
    let a = TestServer::start(&[]);
    let join = format!("{}/join", a.id);
    let leave = format!("{}/leave", a.id);
    ok(a.cli("mk@join", &[&join]));
    ok(a.cli("mk@leave", &[&leave]));
    let mut b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    ok(b.cli("stop", &[&b.id]));
    assert!(b.wait_exit(WAIT).is_some(), "B stops");
    assert_eq!(recv_one(&a, &leave), format!("{}\n", b.id));
    // The join of B is still there for whoever asks, once.
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 1, 0));
    assert_eq!(recv_one(&a, &join), format!("{}\n", b.id));
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 0, 0));
}

#[test]
fn several_joins_arrive_in_order_exactly_once() {
    let a = TestServer::start(&[]);
    let join = format!("{}/join", a.id);
    ok(a.cli("mk@join", &[&join]));
    let mut others: Vec<TestServer> = Vec::new();
    for _ in 0..3 {
        let s = TestServer::start(&["-j", &a.url]);
        let mut want: Vec<&str> = vec![&a.id];
        want.extend(others.iter().map(|o| o.id.as_str()));
        want.push(&s.id);
        wait_members(&a, &want);
        others.push(s);
    }
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 3, 0));
    for s in &others {
        assert_eq!(recv_one(&a, &join), format!("{}\n", s.id));
    }
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 0, 0));
    let mut fourth = spawn_cli(&a, "recv", &[&join], Stdio::null());
    assert!(
        fourth.still_running_after(Duration::from_millis(500)),
        "every join was delivered once"
    );
}

#[test]
fn concurrent_receivers_each_get_a_distinct_event() {
    let a = TestServer::start(&[]);
    let join = format!("{}/join", a.id);
    ok(a.cli("mk@join", &[&join]));
    let mut r1 = spawn_cli(&a, "recv", &[&join], Stdio::null());
    let mut r2 = spawn_cli(&a, "recv", &[&join], Stdio::null());
    wait_request(&a, "recv", &join, 2);
    let b = TestServer::start(&["-j", &a.url]);
    wait_members(&a, &[&a.id, &b.id]);
    let c = TestServer::start(&["-j", &a.url]);
    let d1 = r1.finish_within(WAIT).expect("first receiver served");
    let d2 = r2.finish_within(WAIT).expect("second receiver served");
    assert!(
        d1.status.success() && d2.status.success(),
        "{} {}",
        d1.stderr,
        d2.stderr
    );
    let got: BTreeSet<String> = [d1.stdout, d2.stdout].into_iter().collect();
    let want: BTreeSet<String> = [format!("{}\n", b.id), format!("{}\n", c.id)].into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(ok(a.cli("peek", &[&join])), peek_text("join", 0, 0));
}

#[test]
fn scrub_wakes_a_blocked_recv() {
    let a = TestServer::start(&[]);
    let leave = format!("{}/leave", a.id);
    ok(a.cli("mk@leave", &[&leave]));
    let mut recv = spawn_cli(&a, "recv", &[&leave], Stdio::null());
    wait_request(&a, "recv", &leave, 1);
    assert!(recv.still_running_after(Duration::from_millis(100)));
    ok(a.cli("scrub", &[&leave]));
    let done = recv.finish_within(WAIT).expect("scrub wakes the receiver");
    assert_eq!(done.status.code(), Some(1), "{}", done.stdout);
    assert_eq!(done.stderr.trim_end().lines().count(), 1, "{}", done.stderr);
    assert!(
        done.stderr
            .contains(&format!("recv error: {leave}: subscription scrubbed")),
        "{}",
        done.stderr
    );
    assert_eq!(ok(a.cli("peek", &[&leave])), "null\n");
    fails(a.cli("recv", &[&leave]));
    assert!(a.log().contains("subscription scrubbed"), "logged");
}

#[test]
fn the_library_makes_receives_peeks_and_scrubs() {
    let a = TestServer::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::dial(&a.url, None).await.unwrap();
        let anchor = client.walk(&format!("{}/lib/join", a.id)).unwrap();
        let joins = anchor.make_subscription(SubscriptionSource::Join).await.unwrap();
        let leaves = client
            .walk(&format!("{}/lib/leave", a.id))
            .unwrap()
            .make_subscription(SubscriptionSource::Leave)
            .await
            .unwrap();
        assert_eq!(
            joins.peek().await.unwrap(),
            SubscriptionStat {
                source: SubscriptionSource::Join,
                pending: 0,
                dropped: 0,
                closed: false
            }
        );
        let again = anchor.make_subscription(SubscriptionSource::Leave).await.err().unwrap();
        assert_eq!(again.kind(), Some(ErrorKind::Exists));

        let mut b = TestServer::start(&["-j", &a.url]);
        let joined = tokio::time::timeout(WAIT, joins.recv())
            .await
            .expect("bounded")
            .unwrap();
        assert_eq!(joined.to_string(), b.id);
        b.child.kill().unwrap();
        let left = tokio::time::timeout(WAIT, leaves.recv())
            .await
            .expect("bounded")
            .unwrap();
        assert_eq!(left.to_string(), b.id);
        assert_eq!(leaves.peek().await.unwrap().pending, 0);

        // Scrub while a receiver waits: it fails, and so does a later one.
        let waiting = tokio::spawn({
            let joins = joins.clone();
            async move { joins.recv().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        anchor.subscription().scrub().await.unwrap();
        let err = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("bounded")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::Aborted), "{err}");
        assert!(err.to_string().contains("subscription scrubbed"), "{err}");
        assert_eq!(joins.peek().await.unwrap_err().kind(), Some(ErrorKind::NotFound));
        assert!(joins.recv().await.is_err());

        // The wrong kind of element says so.
        let chan = client
            .walk(&format!("{}/lib/chan", a.id))
            .unwrap()
            .make_chan(1)
            .await
            .unwrap();
        let err = chan.anchor().subscription().peek().await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::WrongKind));
    });
}
