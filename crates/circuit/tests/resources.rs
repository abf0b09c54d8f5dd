//! Connections and resources that cannot be exhausted, and the log lines an
//! operator reads: real servers, attacked from this test process.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TempDir, TestServer, bin, eventually, fails, ok, run_cli, stdout};

/// A server started with its open-file limit set to `soft` (and `hard`, if
/// given) before `exec`, as a shell's `ulimit -n` would.
fn start_limited(soft: u64, hard: Option<u64>, extra: &[&str]) -> TestServer {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, cur_hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let hard = hard.unwrap_or(cur_hard);
    let mut cmd = Command::new(bin());
    cmd.args(["start", "-a", "127.0.0.1:0"]).args(extra);
    // SAFETY: setrlimit is one system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from));
    }
    TestServer::spawn(cmd)
}

/// Raises this test process's soft open-file limit to its hard one; the
/// hard limit.
fn raise_own_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard > soft {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Sends a plain client's greeting; true if the server answered "go on".
fn greet(s: &mut TcpStream) -> bool {
    if s.write_all(b"CIRCUIT\x01\x00").is_err() {
        return false;
    }
    let mut status = [0u8; 1];
    matches!(s.read(&mut status), Ok(1)) && status[0] == 0
}

/// Lines of the log that contain `what`.
fn lines_with(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// 1,100 greeted but idle plain connections, from five addresses (each
/// under the per-address cap), against a server started with the old
/// default soft limit of 1,024: it raises the limit and a CLI still gets in.
#[test]
fn idle_connections_do_not_lock_clients_out() {
    let hard = raise_own_limit();
    if hard < 1_400 {
        eprintln!("skipped: the hard open-file limit is {hard}; this test needs 1,400");
        return;
    }
    let srv = start_limited(1024, None, &[]);
    let to = srv.addr();
    let mut held = Vec::new();
    for i in 0..1_100u32 {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i % 5) as u8);
        let Ok(mut s) = connect_from(from, to) else { break };
        if !greet(&mut s) {
            break;
        }
        held.push(s);
    }
    assert_eq!(
        held.len(),
        1_100,
        "every idle connection was greeted; log: {}",
        srv.log()
    );
    let out = ok(srv.cli("peek", &[&srv.id]));
    assert!(out.contains(&srv.url), "{out}");
    assert!(srv.log().contains("raised the open-file limit"), "{}", srv.log());
    drop(held);
}

/// One address may hold at most `--max-conns-per-addr` connections; others
/// are closed as they come, logged once; other addresses are served.
#[test]
fn connections_per_address_are_capped() {
    let srv = TestServer::start(&["--max-conns-per-addr", "8"]);
    let to = srv.addr();
    let from = Ipv4Addr::new(127, 0, 0, 9);
    let mut greeted = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        let mut s = connect_from(from, to).unwrap();
        if greet(&mut s) {
            greeted.push(s);
        } else {
            refused += 1;
        }
    }
    assert_eq!((greeted.len(), refused), (8, 4), "log: {}", srv.log());
    ok(srv.cli("ls", &["/"]));
    let cap = "connections from this address are open already";
    assert!(
        eventually(Duration::from_secs(5), || srv.log().contains(cap)),
        "{}",
        srv.log()
    );
    assert_eq!(
        lines_with(&srv.log(), cap),
        1,
        "refusals are rate-limited: {}",
        srv.log()
    );
    assert!(srv.log().contains("peer=127.0.0.9:"), "{}", srv.log());
    // Once they close, the address is welcome again.
    drop(greeted);
    assert!(eventually(Duration::from_secs(10), || {
        connect_from(from, to).map(|mut s| greet(&mut s)).unwrap_or(false)
    }));
}

/// A connection that carries no stream for `--idle-timeout` is closed; a
/// fresh one is served as before.
#[test]
fn idle_connections_are_closed() {
    let srv = TestServer::start(&["--idle-timeout", "1s"]);
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    assert!(greet(&mut s));
    let began = Instant::now();
    let mut rest = Vec::new();
    let end = s.read_to_end(&mut rest);
    assert!(end.is_ok(), "the server closed the idle connection: {end:?}");
    assert!(began.elapsed() < Duration::from_secs(10), "{:?}", began.elapsed());
    ok(srv.cli("ls", &["/"]));
    let o = run_cli(&["start", "-a", "127.0.0.1:0", "--idle-timeout", "soon"], b"", &[]);
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(e.contains("expected a duration like 300s"), "{e}");
}

/// Out of descriptors, the accept loop backs off and says so once, not ten
/// times a second, and serves again once descriptors are free.
#[test]
fn accept_failures_back_off_with_one_line() {
    raise_own_limit();
    let srv = start_limited(64, Some(64), &[]);
    let to = srv.addr();
    let mut held = Vec::new();
    for i in 0..120u32 {
        let from = Ipv4Addr::new(127, 0, 0, 20 + (i % 4) as u8);
        if let Ok(s) = connect_from(from, to) {
            held.push(s);
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || srv.log().contains("accept failed")),
        "the server ran out of descriptors: {}",
        srv.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let n = lines_with(&srv.log(), "accept failed");
    assert_eq!(n, 1, "one line per 10 s at most: {}", srv.log());
    drop(held);
    assert!(
        eventually(Duration::from_secs(30), || run_ls(&srv)),
        "served again: {}",
        srv.log()
    );
}

fn run_ls(srv: &TestServer) -> bool {
    srv.cli("ls", &["/"]).status.success()
}

/// Refusals are logged with the peer's address and what the server saw,
/// once per kind however many come.
#[test]
fn refusals_are_logged_once_each_with_what_was_seen() {
    let srv = TestServer::start(&[]);
    let to = srv.addr();
    for _ in 0..30 {
        let mut s = TcpStream::connect(to).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    for _ in 0..5 {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(greet(&mut s));
        s.write_all(&[0xffu8; 64]).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    let seen = "refused connection: a greeting that is not circuit's: \"GET / HTT\"";
    let mux = "multiplexer protocol error";
    assert!(
        eventually(Duration::from_secs(10), || {
            let log = srv.log();
            log.contains(seen) && log.contains(mux)
        }),
        "{}",
        srv.log()
    );
    let log = srv.log();
    assert_eq!(lines_with(&log, seen), 1, "{log}");
    assert_eq!(lines_with(&log, mux), 1, "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains(seen))
            .all(|l| l.contains("peer=127.0.0.1:")),
        "{log}"
    );

    // Datagrams that are not membership's, counted: the first is logged at
    // once, with what to do about it; the rest wait for the next line.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"CRM1\0an older server's membership datagram", to).unwrap();
    for _ in 0..20 {
        udp.send_to(b"forged membership datagram", to).unwrap();
    }
    let line = "ignored membership datagrams: 1 from a server of another circuit version \
                (wire format CRM1, ours CRM2): run one version on every server";
    assert!(
        eventually(Duration::from_secs(10), || srv.log().contains(line)),
        "{}",
        srv.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lines_with(&srv.log(), "ignored membership datagrams"),
        1,
        "{}",
        srv.log()
    );
}

/// A join that does not happen says why on the joining server: the seed
/// ignores its datagrams in silence (another key), or is not there.
#[test]
fn a_join_that_fails_says_why() {
    let dir = TempDir::new("joinwhy");
    let key = &dir.key("key");
    let seed = TestServer::start(&["-hmac", key]);
    let keyless = TestServer::start(&["-j", &seed.url]);
    let keyed = TestServer::start(&["-hmac", key, "-j", &seed.url]);
    let nobody = TestServer::start(&["-j", "circuit://127.0.0.1:1/1/X0000000000000001"]);
    let why = format!(
        "not joined the cluster of {} after 2 s: server {} is not reachable \
         (the server requires a key: give -hmac FILE",
        &seed.id[1..],
        &seed.id[1..]
    );
    let nobody_why = "not joined the cluster of X0000000000000001 after 2 s: server X0000000000000001 \
                      is not reachable (Connection refused";
    assert!(
        eventually(Duration::from_secs(15), || keyless.log().contains(&why)
            && nobody.log().contains(nobody_why)),
        "keyless: {}\nnobody: {}",
        keyless.log(),
        nobody.log()
    );
    assert!(!keyless.log().contains("it may have just left"), "{}", keyless.log());
    // The seed says what it ignored, and what to do.
    assert!(
        eventually(Duration::from_secs(5), || seed.log().contains(
            "not sealed, and this server has a cluster key: give every server the same key file"
        )),
        "{}",
        seed.log()
    );
    // A join that works says nothing of the kind.
    let joined = |srv: &TestServer| {
        let o = srv.cli("ls", &["-hmac", key, "/"]);
        o.status.success() && stdout(&o).lines().count() == 2
    };
    assert!(
        eventually(Duration::from_secs(10), || joined(&keyed)),
        "{}",
        keyed.log()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!keyed.log().contains("not joined"), "{}", keyed.log());
}

/// A clean stop, after ordinary work, logs no warning.
#[test]
fn a_clean_stop_logs_no_warning() {
    let dir = TempDir::new("cleanstop");
    let key = &dir.key("key");
    let mut srv = TestServer::start(&["-hmac", key]);
    let chan = format!("{}/c", srv.id);
    ok(srv.cli("mkchan", &["-hmac", key, &chan, "1"]));
    ok(srv.cli("ls", &["-hmac", key, "/..."]));
    ok(srv.cli("scrub", &["-hmac", key, &chan]));
    ok(srv.cli("stop", &["-hmac", key, &srv.id]));
    assert!(srv.wait_exit(Duration::from_secs(20)).is_some(), "stopped");
    let log = srv.log();
    assert!(log.contains("stopped"), "{log}");
    assert_eq!(lines_with(&log, "WARN"), 0, "{log}");
}

/// Weak key files are refused at start, in one clear line.
#[test]
fn weak_keys_are_refused() {
    let dir = TempDir::new("weakkey");
    let zeros = dir.0.join("zeros");
    std::fs::write(&zeros, [0u8; 32]).unwrap();
    let e = fails(run_cli(
        &["start", "-a", "127.0.0.1:0", "-hmac", zeros.to_str().unwrap()],
        b"",
        &[],
    ));
    assert!(e.contains("only zero bytes"), "{e}");
    let short = dir.0.join("short");
    std::fs::write(&short, "AAECAwQFBgc=\n").unwrap();
    let e = fails(run_cli(
        &["start", "-a", "127.0.0.1:0", "-hmac", short.to_str().unwrap()],
        b"",
        &[],
    ));
    assert!(e.contains("at least 16"), "{e}");
}

/// A new server removes the default state directories of killed servers
/// (lock free, process gone) and leaves a held one alone.
#[test]
fn stale_state_dirs_are_removed() {
    let tmp = std::env::temp_dir();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let stale = tmp.join(format!(
        "circuit-X{:016x}-P{dead}",
        0x5eed_0000_0000_0000u64 + dead as u64
    ));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join(".lock"), b"").unwrap();
    // Held: locked by this process, like a running server.
    let held = tmp.join(format!(
        "circuit-X{:016x}-P{dead}",
        0x5eed_1000_0000_0000u64 + dead as u64
    ));
    std::fs::create_dir_all(&held).unwrap();
    let f = std::fs::File::create(held.join(".lock")).unwrap();
    let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let srv = TestServer::start(&[]);
    let removed = eventually(Duration::from_secs(5), || !stale.exists());
    let kept = held.exists();
    drop(lock);
    let _ = std::fs::remove_dir_all(&held);
    let _ = std::fs::remove_dir_all(&stale);
    assert!(removed, "stale dir removed: {}", srv.log());
    assert!(kept, "a locked dir is kept");
}

/// A library client whose connection the server closed for idleness dials
/// again on its next request, instead of failing as a lost connection.
#[tokio::test]
async fn a_library_client_outlives_the_idle_timeout() {
    let srv = TestServer::start(&["--idle-timeout", "500ms"]);
    let client = circuit_client::Client::dial(&srv.url, None).await.unwrap();
    let server = client.servers().await.unwrap().remove(0);
    server.peek().await.unwrap();
    // Three idle timeouts: the server has closed the connection by then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stat = server.peek().await.expect("the client dials again after an idle close");
    assert_eq!(stat.members, 1);
}
