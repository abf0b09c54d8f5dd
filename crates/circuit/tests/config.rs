//! `circuit start --config FILE` and `circuit reloadconfig /X…`: a real
//! server, the real CLI, real processes. Every wait is bounded; processes a
//! watcher reported are killed by pid only if a test fails half-way.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Pids, TempDir, TestServer, alive, fails, ok, run_cli, stderr};
use serde_json::{Value, json};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The pids of the watcher at `path`, once it has `n` processes running (bounded wait).
fn pids(srv: &TestServer, path: &str, n: usize, seen: &mut Pids) -> BTreeSet<u64> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let v = json(&ok(srv.cli("peek", &[path])));
        let list: BTreeSet<u64> = v["Processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["Pid"].as_u64().filter(|&pid| pid > 0))
            .collect();
        seen.0.extend(&list);
        if list.len() == n {
            return list;
        }
        assert!(Instant::now() < end, "{path} never had {n} processes: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

const FIRST: &str = r#"
# Watchers first, then channels, whatever the order here.
[chan.jobs]
Cap = 3

[watch.keep]
Path = "/bin/sleep"
Args = ["60"]
GracefulTimeout = 5

[watch.change]
path = "/bin/sleep"
args = ["60"]
num_processes = 2
GracefulTimeout = 5

[watch.gone]
Path = "/bin/sleep"
Args = ["60"]
GracefulTimeout = 5

[watch.api]
Anchor = "svc/api"
Path = "/bin/sleep"
Args = ["60"]
"#;

const SECOND: &str = r#"
[chan.jobs]
Cap = 3

[watch.keep]
Path = "/bin/sleep"
Args = ["60"]
GracefulTimeout = 5

[watch.change]
path = "/bin/sleep"
args = ["61"]
num_processes = 2
GracefulTimeout = 5

[watch.added]
Path = "/bin/sleep"
Args = ["60"]
NumProcesses = 2

[chan.taken]
Cap = 1

[watch.api]
Anchor = "svc/api"
Path = "/bin/sleep"
Args = ["60"]
"#;

#[test]
fn config_boots_and_reloads_only_what_changed() {
    let dir = TempDir::new("config");
    let file = dir.0.join("cluster.toml");
    std::fs::write(&file, FIRST).unwrap();
    let srv = TestServer::start(&["--config", file.to_str().unwrap()]);
    let at = |name: &str| format!("{}/{name}", srv.id);
    let mut seen = Pids::default();

    let keep = pids(&srv, &at("keep"), 1, &mut seen);
    let change = pids(&srv, &at("change"), 2, &mut seen);
    let gone = pids(&srv, &at("gone"), 1, &mut seen);
    let api = pids(&srv, &at("svc/api"), 1, &mut seen);
    let listing = ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)]));
    assert!(
        listing.lines().any(|l| l.starts_with("chan ") && l.ends_with("/jobs")),
        "{listing}"
    );
    assert_eq!(json(&ok(srv.cli("peek", &[&at("jobs")])))["Cap"], json!(3));
    for i in 0..3 {
        ok(srv.cli_in("send", &[&at("jobs")], format!("m{i}").as_bytes()));
    }
    // A watcher made by hand is never touched by reloadconfig.
    ok(srv.cli_in(
        "mkwatch",
        &[&at("manual")],
        br#"{"Path": "/bin/sleep", "Args": ["60"]}"#,
    ));
    let manual = pids(&srv, &at("manual"), 1, &mut seen);
    ok(srv.cli("mkchan", &[&at("taken"), "5"]));

    std::fs::write(&file, SECOND).unwrap();
    let summary = json(&ok(srv.cli("reloadconfig", &[&srv.id])));
    assert_eq!(sorted(&summary["Created"]), [at("added")], "{summary}");
    assert_eq!(sorted(&summary["Changed"]), [at("change")], "{summary}");
    assert_eq!(sorted(&summary["Removed"]), [at("gone")], "{summary}");
    let mut unchanged = vec![at("jobs"), at("keep"), at("svc/api")];
    unchanged.sort();
    assert_eq!(sorted(&summary["Unchanged"]), unchanged, "{summary}");
    let failed = summary["Failed"].as_array().expect("Failed is a list");
    assert_eq!(failed.len(), 1, "{summary}");
    assert_eq!(failed[0]["Path"], json!(at("taken")), "{summary}");
    assert!(
        failed[0]["Error"].as_str().unwrap().contains("already holds a chan"),
        "{summary}"
    );
    // The hand-made channel there is untouched: still capacity 5.
    assert_eq!(json(&ok(srv.cli("peek", &[&at("taken")])))["Cap"], json!(5));

    assert_eq!(
        pids(&srv, &at("keep"), 1, &mut seen),
        keep,
        "an unchanged watcher keeps its processes"
    );
    assert_eq!(pids(&srv, &at("svc/api"), 1, &mut seen), api);
    assert_eq!(pids(&srv, &at("manual"), 1, &mut seen), manual);
    let changed = pids(&srv, &at("change"), 2, &mut seen);
    assert!(
        changed.is_disjoint(&change),
        "a changed watcher has new processes: {change:?} then {changed:?}"
    );
    let v = json(&ok(srv.cli("peek", &[&at("change")])));
    assert!(v.to_string().contains("\"61\""), "the new spec is in force: {v}");
    pids(&srv, &at("added"), 2, &mut seen);
    assert_eq!(ok(srv.cli("peek", &[&at("gone")])).trim(), "null");
    let end = Instant::now() + Duration::from_secs(10);
    while change.iter().chain(&gone).any(|&p| alive(p)) {
        assert!(Instant::now() < end, "the old processes never went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The unchanged channel kept its messages.
    assert_eq!(ok(srv.cli("recv", &[&at("jobs")])), "m0");

    // Nothing changed: everything is left alone.
    let again = json(&ok(srv.cli("reloadconfig", &[&srv.id])));
    assert_eq!(again["Created"], json!([]), "{again}");
    assert_eq!(again["Changed"], json!([]), "{again}");
    assert_eq!(again["Removed"], json!([]), "{again}");
    assert_eq!(again["Unchanged"].as_array().map(Vec::len), Some(5), "{again}");
    assert_eq!(again["Failed"].as_array().map(Vec::len), Some(1), "{again}");

    // A broken file fails the reload with one line, and changes nothing.
    std::fs::write(&file, "[watch.keep]\nPath = \"/bin/sleep\"\nArgs = [\"60\"\n").unwrap();
    let err = fails(srv.cli("reloadconfig", &[&srv.id]));
    assert!(err.contains("cluster.toml:3:"), "{err}");
    assert_eq!(pids(&srv, &at("keep"), 1, &mut seen), keep);
    assert_eq!(pids(&srv, &at("added"), 2, &mut seen).len(), 2);

    let mut srv = srv;
    ok(srv.cli("stop", &[&srv.id]));
    assert!(
        srv.wait_exit(Duration::from_secs(15)).is_some(),
        "the server never stopped"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while seen.0.iter().any(|&p| alive(p)) {
        assert!(Instant::now() < end, "processes outlived the server");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_config_fails_start_with_one_clear_line() {
    let dir = TempDir::new("badconfig");
    let file = dir.0.join("cluster.toml");
    let start = |text: &str| {
        std::fs::write(&file, text).unwrap();
        fails(run_cli(
            &["start", "-a", "127.0.0.1:0", "--config", file.to_str().unwrap()],
            b"",
            &[("CIRCUIT_DISCOVER", "")],
        ))
    };
    let err = start("[watch.web]\nPath = \"/bin/sleep\"\n\n[bogus.home]\nDomain = \"x\"\n");
    assert!(
        err.contains("cluster.toml:4:2: unknown element kind \"bogus\""),
        "{err}"
    );
    let err = start("[watch.web]\nPath = \"/bin/sleep\"\n\n[dns.home]\nDomain = \"x\"\n");
    assert!(
        err.contains("cluster.toml:4:6: [dns.home]: unknown field \"Domain\" of a DNS server"),
        "{err}"
    );
    let err = start("[watch.web]\nPath = \"/bin/sleep\"\nNumProcesses = \"two\"\n");
    assert!(
        err.contains("cluster.toml:1:8: [watch.web]: field \"NumProcesses\""),
        "{err}"
    );
    let err = start("[watch.web\nPath = \"/bin/sleep\"\n");
    assert!(err.contains("cluster.toml:1:"), "{err}");
    let missing = dir.0.join("nope.toml");
    let o = run_cli(
        &["start", "-a", "127.0.0.1:0", "--config", missing.to_str().unwrap()],
        b"",
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nope.toml") && err.contains("No such file"), "{err}");
    // A server started without a config file has nothing to reload.
    let plain = TestServer::start(&[]);
    let err = fails(plain.cli("reloadconfig", &[&plain.id]));
    assert!(err.contains("started without --config FILE"), "{err}");
    // A watcher whose command cannot start fails the boot too.
    std::fs::write(&file, "[watch.web]\nPath = \"/nonexistent/cmd\"\n").unwrap();
    let o = run_cli(
        &["start", "-a", "127.0.0.1:0", "--config", file.to_str().unwrap()],
        b"",
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cluster.toml") && err.contains("/nonexistent/cmd"),
        "{err}"
    );
}
