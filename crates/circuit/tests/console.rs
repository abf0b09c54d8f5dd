//! The web console against real servers: its JSON and SSE endpoints over
//! real HTTP, its refusals (no key on a non-loopback address, no session,
//! no CSRF token), and the page in a real headless Chromium driven through
//! the DevTools protocol. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{Sse, get, post};
use common::{TempDir, TestServer, eventually, fails, ok, run_cli, wait_log};
use serde_json::{Value, json};

/// The console's address, from the server's log line.
fn console_addr(srv: &TestServer) -> SocketAddr {
    assert!(
        wait_log(srv, "serving the web console", 1, Duration::from_secs(10)),
        "no console: {}",
        srv.log()
    );
    let log = srv.log();
    let at = log.find("url=http://").expect("console url in the log") + "url=http://".len();
    let rest = &log[at..];
    let end = rest.find('/').unwrap();
    rest[..end].parse().unwrap()
}

fn start_console(extra: &[&str]) -> (TestServer, SocketAddr) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let srv = TestServer::start(&args);
    let addr = console_addr(&srv);
    (srv, addr)
}

fn csrf(addr: SocketAddr, cookie: &[(&str, &str)]) -> String {
    let s = get(addr, "/api/session", cookie);
    assert_eq!(s.status, 200, "{s:?}");
    s.json()["Csrf"].as_str().unwrap().to_string()
}

/// A watcher whose processes print `<script>` and keep their output in a ring.
const SCRIPT_WATCH: &str = r#"{"Path": "/bin/sh", "Args": ["-c", "echo '<script>alert(1)</script>'; exec sleep 600"],
  "NumProcesses": 2, "Stdout": {"Ring": 4096}}"#;

#[test]
fn the_console_serves_the_cluster_and_its_actions_through_the_servers_requests() {
    let (a, addr) = start_console(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    // The watcher lives on B; the console on A reaches it by the wire's routing.
    ok(b.cli_in("mkwatch", &[&format!("{b_id}/web")], SCRIPT_WATCH.as_bytes()));

    // The page, with the headers that keep it inert.
    let page = get(addr, "/ui/", &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/static/app.js"), "{}", page.body);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(get(addr, "/ui/X0123456789abcdef/web", &[]).status, 200);
    assert!(get(addr, "/static/app.js", &[]).body.contains("textContent"));
    assert_eq!(get(addr, "/", &[]).status, 303);

    // Both servers, each with its figures.
    assert!(
        eventually(Duration::from_secs(15), || {
            get(addr, "/api/cluster", &[]).json()["Servers"]
                .as_array()
                .is_some_and(|s| s.len() == 2)
        }),
        "B never joined"
    );
    let cluster = get(addr, "/api/cluster", &[]).json();
    assert_eq!(cluster["Self"], a_id.trim_start_matches('/'));
    for s in cluster["Servers"].as_array().unwrap() {
        assert!(s["Pid"].as_u64().unwrap() > 0 && s["Rss"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["Members"], 2, "{s}");
        assert_eq!(s["State"], "alive", "{s}");
        assert!(s["Url"].as_str().unwrap().starts_with("circuit://"), "{s}");
    }

    // B's tree, through A.
    let tree = get(addr, &format!("/api/tree?path={b_id}"), &[]).json();
    let web = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Path"] == format!("{b_id}/web"))
        .unwrap_or_else(|| panic!("{tree}"));
    assert_eq!(web["Kind"], "watch");
    assert_eq!(web["Stat"]["Processes"].as_array().unwrap().len(), 2, "{web}");

    // The process's `<script>` comes back as JSON text, never as markup.
    assert!(eventually(Duration::from_secs(10), || {
        get(addr, &format!("/api/output?path={b_id}/web"), &[]).json()["Text"]
            .as_str()
            .is_some_and(|t| t.contains("<script>alert(1)</script>"))
    }));
    let out = get(addr, &format!("/api/output?path={b_id}/web"), &[]);
    assert!(out.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(out.header("x-content-type-options"), Some("nosniff"));

    // The event stream: hello, then the events of the cluster and the stats.
    let mut sse = Sse::open(addr, "/api/events", &[]);
    assert_eq!(sse.status, 200);
    assert!(
        sse.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
    let hello = sse.next(Duration::from_secs(5)).expect("hello");
    assert_eq!(hello.0, "hello");

    // A POST without the CSRF header is refused, and changes nothing.
    let incr = json!({"Path": format!("{b_id}/web"), "Action": "incr"});
    let refused = post(addr, "/api/action", &[], &incr);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.json()["Error"].as_str().unwrap().contains("CSRF"));
    let wrong = post(addr, "/api/action", &[("X-Circuit-Csrf", "AAAA")], &incr);
    assert_eq!(wrong.status, 403);
    let token = csrf(addr, &[]);
    let h = [("X-Circuit-Csrf", token.as_str())];
    let done = post(addr, "/api/action", &h, &incr);
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.json()["Result"], 3);
    let spawned = sse
        .until(Duration::from_secs(10), "event", |d| {
            d.contains("\"spawned\"") && d.contains(&format!("{b_id}/web"))
        })
        .expect("the spawn of the third process on the event stream");
    let ev: Value = serde_json::from_str(&spawned).unwrap();
    assert_eq!(ev["Server"], b_id.trim_start_matches('/'));
    let stats = sse
        .until(Duration::from_secs(10), "stats", |d| d.contains("wid 3"))
        .expect("stats with the third process");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["Servers"].as_array().unwrap().len(), 2, "{stats}");

    // Every action answers with its result or the server's one-line error.
    let n = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": format!("{b_id}/web"), "Action": "numprocs", "N": 1}),
    );
    assert_eq!(n.json()["Result"], 1);
    let d = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": format!("{b_id}/web"), "Action": "decr"}),
    );
    assert_eq!(d.json()["Result"], 0);
    for (action, extra) in [
        ("restart", json!({})),
        ("stop", json!({})),
        ("start", json!({})),
        ("reload", json!({})),
    ] {
        let mut body = json!({"Path": format!("{b_id}/web"), "Action": action});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = post(addr, "/api/action", &h, &body);
        assert_eq!(r.status, 200, "{action}: {r:?}");
        assert_eq!(r.json()["Result"], "done");
    }
    let missing = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": format!("{b_id}/nope"), "Action": "incr"}),
    );
    assert_eq!(missing.status, 404, "{missing:?}");
    let msg = missing.json()["Error"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("{b_id}/nope")) && !msg.contains('\n'), "{msg}");
    let bad = post(addr, "/api/action", &h, &json!({"Path": "nope", "Action": "incr"}));
    assert_eq!(bad.status, 400);

    // Make a process and a watcher from JSON specs, on either server.
    let mk = post(
        addr,
        "/api/make",
        &h,
        &json!({"Path": format!("{a_id}/p"), "Kind": "proc", "Spec": r#"{"Path": "/bin/sleep", "Args": ["600"]}"#}),
    );
    assert_eq!(mk.status, 200, "{mk:?}");
    let peek = get(addr, &format!("/api/peek?path={a_id}/p"), &[]).json();
    assert_eq!(
        (peek["Kind"].as_str(), peek["Stat"]["Phase"].as_str()),
        (Some("proc"), Some("running"))
    );
    let sig = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": format!("{a_id}/p"), "Action": "signal", "Signal": "KILL"}),
    );
    assert_eq!(sig.status, 200, "{sig:?}");
    assert!(eventually(Duration::from_secs(10), || get(
        addr,
        &format!("/api/peek?path={a_id}/p"),
        &[]
    )
    .json()["Stat"]["Phase"]
        == "signaled"));
    let mkw = post(
        addr,
        "/api/make",
        &h,
        &json!({"Path": format!("{b_id}/w2"), "Kind": "watch", "Spec": r#"{"Path": "/bin/sleep", "Args": ["600"], "NumProcesses": 1}"#}),
    );
    assert_eq!(mkw.status, 200, "{mkw:?}");
    let badspec = post(
        addr,
        "/api/make",
        &h,
        &json!({"Path": format!("{b_id}/w3"), "Kind": "watch", "Spec": "{\"Args\": 3}"}),
    );
    assert_eq!(badspec.status, 400, "{badspec:?}");
    assert!(!badspec.json()["Error"].as_str().unwrap().contains('\n'));
    for p in [format!("{a_id}/p"), format!("{b_id}/w2"), format!("{b_id}/web")] {
        let r = post(addr, "/api/action", &h, &json!({"Path": p, "Action": "scrub"}));
        assert_eq!(r.status, 200, "scrub {p}: {r:?}");
    }
    sse.until(Duration::from_secs(10), "event", |d| {
        d.contains("\"scrubbed\"") && d.contains("/web")
    })
    .expect("the scrub on the event stream");
    // The console's requests are the server's requests: logged as such.
    assert!(a.log().contains("op=\"mkproc\""), "{}", a.log());
    assert!(a.log().contains("console action"), "{}", a.log());
}

/// The breaker's key `key` in the console's peek of `path`.
fn console_key(addr: SocketAddr, path: &str, key: &str) -> Value {
    let p = get(addr, &format!("/api/peek?path={path}"), &[]);
    assert_eq!(p.status, 200, "{p:?}");
    let p = p.json();
    assert_eq!(p["Kind"], "breaker", "{p}");
    p["Stat"]["States"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["Key"] == key).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn the_console_resets_opens_and_closes_a_breakers_keys_as_the_cli_does() {
    let (a, addr) = start_console(&[]);
    let path = format!("{}/pay", a.id);
    ok(a.cli_in("mkbreaker", &[&path], br#"{"FailureThreshold": 2, "OpenTimeout": 600}"#));
    // Trip key t1 with two failed calls through the CLI.
    for _ in 0..2 {
        let o = a.cli("breaker", &["exec", &path, "--key", "t1", "--", "false"]);
        assert!(!o.status.success());
    }
    let tripped = console_key(addr, &path, "t1");
    assert_eq!(tripped["State"], "open", "{tripped}");
    assert!(tripped["OpenRemaining"].as_f64().unwrap() > 500.0, "{tripped}");
    let gen_open = tripped["Generation"].as_u64().unwrap();

    let token = csrf(addr, &[]);
    let h = [("X-Circuit-Csrf", token.as_str())];
    let reset = json!({"Path": path, "Action": "reset", "Key": "t1"});
    assert_eq!(post(addr, "/api/action", &[], &reset).status, 403);
    assert_eq!(console_key(addr, &path, "t1")["State"], "open");
    let r = post(addr, "/api/action", &h, &reset);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["Result"], json!({"Changed": true}));
    let k = console_key(addr, &path, "t1");
    assert_eq!(k["State"], "closed", "{k}");
    assert!(k["Generation"].as_u64().unwrap() > gen_open, "{k}");
    // The CLI sees the same: the key admits a call again.
    ok(a.cli("breaker", &["exec", &path, "--key", "t1", "--", "true"]));

    // open, then close, as `circuit breaker open|close PATH --key K`.
    let o = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": path, "Action": "open", "Key": "t1"}),
    );
    assert_eq!(o.json()["Result"], json!({"Changed": true}), "{o:?}");
    assert_eq!(console_key(addr, &path, "t1")["State"], "open");
    let refused = a.cli("breaker", &["exec", &path, "--key", "t1", "--", "true"]);
    assert!(!refused.status.success());
    let c = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": path, "Action": "close", "Key": "t1"}),
    );
    assert_eq!(c.json()["Result"], json!({"Changed": true}), "{c:?}");
    assert_eq!(console_key(addr, &path, "t1")["State"], "closed");
    let again = post(
        addr,
        "/api/action",
        &h,
        &json!({"Path": path, "Action": "close", "Key": "t1"}),
    );
    assert_eq!(again.json()["Result"], json!({"Changed": false}), "{again:?}");

    // Bad requests: one line each, nothing changed.
    let one_line = |body: Value, status: u16, want: &str| {
        let r = post(addr, "/api/action", &h, &body);
        assert_eq!(r.status, status, "{body}: {r:?}");
        let e = r.json()["Error"].as_str().unwrap().to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{body}: {e}");
    };
    one_line(
        json!({"Path": path, "Action": "reset", "Key": "nobody"}),
        404,
        "no key \"nobody\"",
    );
    one_line(json!({"Path": path, "Action": "reset"}), 400, "needs the Key");
    one_line(
        json!({"Path": path, "Action": "trip", "Key": "t1"}),
        400,
        "unknown action \"trip\"",
    );
    one_line(
        json!({"Path": format!("{}/nothing", a.id), "Action": "reset", "Key": "t1"}),
        404,
        "nothing",
    );
    one_line(
        json!({"Path": 3, "Action": "scrub"}),
        422,
        "bad request body: Failed to deserialize the JSON body into the target type: Path: invalid type: integer `3`",
    );
    assert!(console_key(addr, &path, "nobody").is_null());
    assert!(a.log().contains("console action"), "{}", a.log());
    assert!(a.log().contains("op=\"reset\""), "{}", a.log());
}

/// Open pages share one `stats /` request per tick, and none is made once
/// every page is closed.
#[test]
fn open_pages_share_one_stats_feed() {
    let (srv, addr) = start_console(&[]);
    let asked = || srv.log().matches("op=\"stats\"").count();
    let opened = Instant::now();
    let mut pages: Vec<Sse> = (0..3).map(|_| Sse::open(addr, "/api/events", &[])).collect();
    for page in &mut pages {
        for _ in 0..3 {
            page.until(Duration::from_secs(10), "stats", |d| d.contains("Servers"))
                .expect("stats on every page");
        }
    }
    // Three ticks seen on each of three pages: one request per tick, not
    // one per page (which would be 3 per tick, at least 9 by now).
    let (n, ticks) = (asked(), opened.elapsed().as_secs_f64() / 2.0);
    assert!(
        n >= 3 && n as f64 <= ticks + 2.0,
        "{n} stats requests for 3 pages over {ticks:.1} ticks"
    );
    drop(pages);
    std::thread::sleep(Duration::from_millis(300));
    let closed = asked();
    std::thread::sleep(Duration::from_secs(5));
    assert!(asked() <= closed + 1, "stats asked with no page open: {}", srv.log());
}

/// The console's connections are held to the server's limits, as the
/// circuit port's are: a cap per client address, and idle ones closed,
/// while an open page's event stream lives on.
#[test]
fn console_connections_are_capped_and_idle_ones_closed() {
    use std::io::Read;
    let (srv, addr) = start_console(&["--max-conns-per-addr", "4", "--idle-timeout", "3s"]);
    let opened = Instant::now();
    let mut sse = Sse::open(addr, "/api/events", &[]);
    assert_eq!(sse.status, 200);
    let idle: Vec<std::net::TcpStream> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // A fifth connection is closed at once, and that is logged.
    let mut fifth = std::net::TcpStream::connect(addr).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let r = fifth.read(&mut [0; 1]);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the fifth connection is closed at once: {r:?}"
    );
    assert!(
        wait_log(
            &srv,
            "web console: refused connection: 4 connections from this address are open already",
            1,
            Duration::from_secs(5),
        ),
        "{}",
        srv.log()
    );
    // Idle ones are closed after the timeout, not before; then others get in.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(c.read(&mut [0; 1]).unwrap(), 0, "an idle connection is closed");
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(get(addr, "/api/cluster", &[]).status, 200);
    // The page's stream, open all along, still brings stats.
    while opened.elapsed() < Duration::from_secs(8) {
        sse.until(Duration::from_secs(5), "stats", |_| true)
            .expect("stats past the idle timeout");
    }
}

#[test]
fn without_a_key_the_console_stays_on_loopback_unless_told_otherwise() {
    let err = fails(run_cli(
        &["start", "-a", "127.0.0.1:0", "--http", "0.0.0.0:0"],
        b"",
        &[],
    ));
    assert!(
        err.contains("refusing to serve the web console") && err.contains("--http-insecure"),
        "{err}"
    );
    let (srv, addr) = start_console(&["--http-insecure"]);
    assert_eq!(get(addr, "/api/session", &[]).status, 200);
    let mut ports = vec![srv.addr().port(), addr.port()];
    ports.sort();
    assert_eq!(listening_tcp(srv.child.id()), ports);
    drop(srv);
    let srv = TestServer::start(&["--http", "0.0.0.0:0", "--http-insecure"]);
    let _ = console_addr(&srv);
    assert!(srv.log().contains("no login"), "{}", srv.log());
    // A page from another host name (DNS rebinding) is refused on loopback.
    let (_srv, addr) = start_console(&[]);
    let r = get(addr, "/api/session", &[("Host", "evil.example:80")]);
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn a_console_that_cannot_listen_is_an_error_at_start_and_none_listens_without_http() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let err = fails(run_cli(&["start", "-a", "127.0.0.1:0", "--http", &at], b"", &[]));
    assert!(err.contains("cannot listen on") && err.contains(&at), "{err}");
    let err = fails(run_cli(&["start", "-a", "127.0.0.1:0", "--http", "nowhere"], b"", &[]));
    assert!(err.contains("--http nowhere"), "{err}");
    let srv = TestServer::start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!srv.log().contains("web console"), "{}", srv.log());
    // Its listening TCP sockets: the server's port only.
    assert_eq!(listening_tcp(srv.child.id()), vec![srv.addr().port()]);
}

/// The TCP ports process `pid` listens on (its socket inodes matched in
/// /proc/net/tcp and tcp6).
fn listening_tcp(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[").map(|r| r.trim_end_matches(']').to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports
}

#[test]
fn the_config_file_can_turn_the_console_on() {
    let dir = TempDir::new("console-config");
    let file = dir.0.join("c.toml");
    std::fs::write(&file, "[console]\nHttp = \"127.0.0.1:0\"\n[chan.jobs]\nCap = 2\n").unwrap();
    let srv = TestServer::start(&["--config", file.to_str().unwrap()]);
    let addr = console_addr(&srv);
    let tree = get(addr, &format!("/api/tree?path={}", srv.id), &[]).json();
    assert_eq!(tree[0]["Kind"], "chan", "{tree}");
    assert_eq!(tree[0]["Stat"]["Cap"], 2, "{tree}");
    std::fs::write(&file, "[console]\nPort = 1\n").unwrap();
    let err = fails(run_cli(
        &["start", "-a", "127.0.0.1:0", "--config", file.to_str().unwrap()],
        b"",
        &[],
    ));
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn with_a_key_every_request_needs_a_session_from_a_one_time_login_url() {
    let dir = TempDir::new("console-key");
    let key = dir.key("key");
    let key_s = key.as_str();
    let (srv, addr) = start_console(&["-hmac", key_s]);
    for path in ["/api/cluster", "/api/session", "/ui/", "/api/events", "/static/app.js"] {
        let r = get(addr, path, &[]);
        assert_eq!(r.status, 401, "{path}: {r:?}");
    }
    let r = post(addr, "/api/action", &[], &json!({"Path": srv.id, "Action": "scrub"}));
    assert_eq!(r.status, 401);
    // console-login needs the key.
    let err = fails(run_cli(&["console-login", &addr.to_string()], b"", &[]));
    assert!(err.contains("-hmac"), "{err}");
    let login = ok(run_cli(
        &["console-login", "-hmac", key_s, &format!("http://{addr}/")],
        b"",
        &[],
    ));
    let url = login.trim();
    let path = url
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or_else(|| panic!("{url}"));
    assert!(path.starts_with("/login?t="), "{url}");
    let in_ = get(addr, path, &[]);
    assert_eq!(in_.status, 303, "{in_:?}");
    let cookie = in_.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    // The token is good once.
    let again = get(addr, path, &[]);
    assert_eq!(again.status, 401);
    assert!(again.json()["Error"].as_str().unwrap().contains("used already"));
    // A token of another key is refused.
    let other = dir.key("other");
    let forged = ok(run_cli(
        &["console-login", "-hmac", &other, &addr.to_string()],
        b"",
        &[],
    ));
    let forged_path = &forged.trim()[forged.find("/login").unwrap()..];
    assert_eq!(get(addr, forged_path, &[]).status, 401);
    assert_eq!(get(addr, "/login?t=garbage", &[]).status, 401);

    let c = [("Cookie", session.as_str())];
    assert_eq!(get(addr, "/api/cluster", &c).status, 200);
    assert_eq!(get(addr, "/ui/", &c).status, 200);
    let token = csrf(addr, &c);
    let w = format!("{}/w", srv.id);
    let spec = br#"{"Path": "/bin/sleep", "Args": ["600"]}"#;
    ok(run_cli(&["mkwatch", "-d", &srv.url, "-hmac", key_s, &w], spec, &[]));
    let incr = json!({"Path": format!("{}/w", srv.id), "Action": "incr"});
    // The session alone is not enough for a POST; nor another session's token.
    assert_eq!(post(addr, "/api/action", &c, &incr).status, 403);
    let second = ok(run_cli(&["console-login", "-hmac", key_s, &addr.to_string()], b"", &[]));
    let second = get(addr, &second.trim()[second.find("/login").unwrap()..], &[]);
    let session2 = second
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token2 = csrf(addr, &[("Cookie", session2.as_str())]);
    assert_ne!(token, token2);
    let cross = [("Cookie", session.as_str()), ("X-Circuit-Csrf", token2.as_str())];
    assert_eq!(post(addr, "/api/action", &cross, &incr).status, 403);
    let good = [("Cookie", session.as_str()), ("X-Circuit-Csrf", token.as_str())];
    let r = post(addr, "/api/action", &good, &incr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["Result"], 2);
    // Logged out: the session is gone, and so is its event stream.
    let mut sse = Sse::open(addr, "/api/events", &c);
    assert_eq!(sse.status, 200);
    sse.until(Duration::from_secs(10), "stats", |_| true)
        .expect("stats while logged in");
    assert_eq!(post(addr, "/logout", &good, &json!({})).status, 200);
    assert_eq!(get(addr, "/api/cluster", &c).status, 401);
    let ended = sse.until(Duration::from_secs(10), "ended", |_| true);
    assert!(
        ended
            .as_deref()
            .is_some_and(|d| d.contains("log in again with `circuit console-login`")),
        "{ended:?}"
    );
    assert_eq!(sse.next(Duration::from_secs(10)), None, "the stream closes");
    assert!(srv.log().contains("console login"), "{}", srv.log());
}

/// Headless Chromium from the system, or why there is none. Under CI=true
/// a missing browser fails the test (`.ci/run` installs it).
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| std::path::Path::new(d).join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no chromium in PATH: .ci/run must install it"
        );
        eprintln!("skipped: no chromium in PATH (apt-get install chromium)");
    }
    found
}

/// The browser, closed (and its process killed, by PID) on every way out.
struct Chrome {
    browser: chromiumoxide::Browser,
    pid: Option<u32>,
    _profile: TempDir,
}

impl Chrome {
    async fn launch(exe: &std::path::Path) -> Chrome {
        use chromiumoxide::{Browser, BrowserConfig};
        use futures::StreamExt;
        let profile = TempDir::new("chromium");
        let config = BrowserConfig::builder()
            .chrome_executable(exe)
            .no_sandbox()
            .arg("--disable-dev-shm-usage")
            .arg("--disable-gpu")
            .user_data_dir(&profile.0)
            .window_size(1400, 900)
            .viewport(None)
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(20))
            .build()
            .expect("browser config");
        let (mut browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        tokio::spawn(async move { while handler.next().await.is_some() {} });
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());
        Chrome {
            browser,
            pid,
            _profile: profile,
        }
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Evaluates `js` in the page until it is true (bounded).
async fn until_true(page: &chromiumoxide::Page, js: &str, limit: Duration) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if let Ok(v) = page.evaluate(js).await
            && v.into_value::<bool>().unwrap_or(false)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn eval<T: serde::de::DeserializeOwned>(page: &chromiumoxide::Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_page_follows_the_cluster_live() {
    let Some(exe) = chromium() else { return };
    let (a, addr) = start_console(&[]);
    let b = TestServer::start(&["-j", &a.url]);
    let mut c = TestServer::start(&["-j", &a.url]);
    let (b_id, c_id) = (b.id.clone(), c.id.clone());
    let spec = r#"{"Path": "/bin/sh", "Args": ["-c", "echo '<img src=x onerror=window.__xss=1><script>window.__xss=2</script>'; exec sleep 600"],
      "NumProcesses": 2, "Stdout": {"Ring": 4096}}"#;
    ok(b.cli_in("mkwatch", &[&format!("{b_id}/web")], spec.as_bytes()));
    ok(c.cli("mkchan", &[&format!("{c_id}/jobs"), "2"]));
    ok(c.cli_in("mkbreaker", &[&format!("{c_id}/pay")], br#"{"OpenTimeout": 600}"#));
    ok(c.cli("breaker", &["open", &format!("{c_id}/pay"), "--key", "<b>t1</b>"]));
    assert!(
        eventually(Duration::from_secs(20), || {
            get(addr, "/api/cluster", &[]).json()["Servers"]
                .as_array()
                .is_some_and(|s| s.len() == 3)
        }),
        "the three servers never formed a cluster"
    );

    let chrome = Chrome::launch(&exe).await;
    let page = chrome
        .browser
        .new_page(format!("http://{addr}/ui/"))
        .await
        .expect("open the console");
    let web = format!(".element[data-path=\"{b_id}/web\"]");
    assert!(
        until_true(
            &page,
            "document.querySelectorAll('section.server').length === 3",
            Duration::from_secs(20)
        )
        .await,
        "three servers never showed"
    );
    assert!(
        until_true(
            &page,
            &format!("document.querySelectorAll('{web} tr.proc').length === 2"),
            Duration::from_secs(20)
        )
        .await,
        "the watcher's two processes never showed"
    );
    // Each row: WID, pid, restarts, CPU, RSS, and the two graphs.
    let cells: Vec<String> = eval(
        &page,
        &format!("[...document.querySelectorAll('{web} tr.proc')[0].children].map(td => td.textContent)"),
    )
    .await;
    assert_eq!(cells[0], "1", "{cells:?}");
    assert!(cells[1].parse::<u32>().is_ok(), "{cells:?}");
    assert_eq!(
        eval::<u64>(
            &page,
            &format!("document.querySelectorAll('{web} canvas.spark').length")
        )
        .await,
        4
    );
    assert!(
        until_true(
            &page,
            &format!("document.querySelector('.element[data-path=\"{c_id}/jobs\"]') !== null"),
            Duration::from_secs(10)
        )
        .await
    );

    // A breaker's keys as a table (the key as text), reset from its row.
    let key_row = format!(".element[data-path=\"{c_id}/pay\"] tr.key");
    assert!(
        until_true(
            &page,
            &format!("(r => r !== null && r.children[0].textContent === '<b>t1</b>' && r.textContent.includes('open'))(document.querySelector('{key_row}'))"),
            Duration::from_secs(10)
        )
        .await,
        "the breaker's key never showed open"
    );
    page.find_element(format!("{key_row} button[data-action=\"reset\"]"))
        .await
        .expect("the reset button")
        .click()
        .await
        .expect("click reset");
    assert!(
        until_true(
            &page,
            &format!("(r => r !== null && r.querySelector('.badge').textContent === 'closed')(document.querySelector('{key_row}'))"),
            Duration::from_secs(10)
        )
        .await,
        "the reset key never showed closed"
    );

    // incr: the third process appears, the page is the same page (no reload).
    let _: Value = eval(&page, "window.__same_page = 42").await;
    page.find_element(format!("{web} button[data-action=\"incr\"]"))
        .await
        .expect("the incr button")
        .click()
        .await
        .expect("click incr");
    assert!(
        until_true(
            &page,
            &format!("document.querySelectorAll('{web} tr.proc').length === 3"),
            Duration::from_secs(20)
        )
        .await,
        "the new process never showed"
    );
    assert_eq!(
        eval::<u64>(&page, "window.__same_page").await,
        42,
        "the page was reloaded"
    );
    assert!(
        until_true(
            &page,
            "document.querySelector('#events').textContent.includes('numprocs')",
            Duration::from_secs(10)
        )
        .await
    );

    // A process's markup is shown as text and never runs.
    page.find_element(format!("{web} button[data-action=\"stdout\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        until_true(
            &page,
            "document.querySelector('#output').textContent.includes('<script>window.__xss=2</script>')",
            Duration::from_secs(10)
        )
        .await
    );
    assert_eq!(
        eval::<u64>(&page, "document.querySelectorAll('#output *').length").await,
        0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        eval::<bool>(&page, "window.__xss === undefined").await,
        "markup from a process ran"
    );

    // The graphs draw from the stats the page receives (a line of the RSS
    // green once two samples are in, whatever the antialiasing).
    let drawn = format!(
        "[...document.querySelectorAll('{web} canvas.rss')].some(c => {{ const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; for (let i = 0; i < d.length; i += 4) if (d[i + 1] - d[i] > 30) return true; return false; }})"
    );
    assert!(
        until_true(&page, &drawn, Duration::from_secs(20)).await,
        "no RSS graph was drawn"
    );

    // The screenshot, as a test artifact.
    let shot = common::bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("console-screenshot.png");
    page.save_screenshot(
        chromiumoxide::page::ScreenshotParams::builder().full_page(true).build(),
        &shot,
    )
    .await
    .expect("screenshot");
    eprintln!("screenshot: {}", shot.display());

    // A server killed (by PID): it leaves the page without a reload.
    let c_pid = c.child.id();
    let _ = c.child.kill();
    let _ = c.child.wait();
    assert!(
        until_true(
            &page,
            &format!(
                "document.querySelector('section.server[data-id=\"{}\"]') === null",
                c_id.trim_start_matches('/')
            ),
            Duration::from_secs(40)
        )
        .await,
        "server {c_id} (pid {c_pid}) never left the page"
    );
    assert_eq!(
        eval::<u64>(&page, "document.querySelectorAll('section.server').length").await,
        2
    );
    assert_eq!(eval::<u64>(&page, "window.__same_page").await, 42);

    // A URL per element: only that element.
    page.goto(format!("http://{addr}/ui{b_id}/web"))
        .await
        .expect("the element's URL");
    assert!(until_true(&page, &format!("document.querySelectorAll('{web} tr.proc').length === 3 && document.querySelectorAll('section.server').length === 1"), Duration::from_secs(20)).await);
    // The serving server killed: the page says so rather than going stale.
    let mut a = a;
    let _ = a.child.kill();
    let _ = a.child.wait();
    assert!(
        until_true(&page, "!document.querySelector('#banner').hidden && document.querySelector('#link').textContent === 'disconnected'", Duration::from_secs(15)).await,
        "the page never showed that its server is gone"
    );
    let mut chrome = chrome;
    let _ = tokio::time::timeout(Duration::from_secs(10), chrome.browser.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), chrome.browser.wait()).await;
}
