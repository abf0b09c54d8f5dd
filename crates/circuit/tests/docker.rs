//! Docker elements against the real engine: the seed README's example as
//! typed there, the streams, exit codes, signals, peek, scrub, a remote
//! server, and the containers left by a killed server. Tests that need the
//! engine skip (with a printed reason) when none answers, except under
//! `CI=true`. Every container a test's servers make is removed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::docker::{self, Cleanup, IMAGE, containers_of};
use common::{TempDir, TestServer, bin, eventually, fails, ok, wait_log};

/// The seed README's example, exactly as typed there.
const SEED: &str = r#"    "Image": "ubuntu",
    "Memory": 1000000000,
    "CpuShares": 3,
    "Lxc": ["lxc.cgroup.cpuset.cpus = 0,1"],
    "Volume": ["/webapp", "/src/webapp:/opt/webapp:ro"],
    "Dir": "/",
    "Entry": "",
    "Env": ["PATH=/usr/bin"],
    "Path": "/bin/ls",
    "Args": ["/"],
"#;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn spec(path: &str, args: &[&str]) -> String {
    serde_json::json!({"Image": IMAGE, "Path": path, "Args": args}).to_string()
}

fn docker_server() -> (TestServer, Cleanup) {
    let srv = TestServer::start(&["-docker"]);
    let clean = Cleanup::of(&[&srv.id]);
    (srv, clean)
}

#[test]
fn the_seed_example_runs_as_typed() {
    if !docker::available() {
        return;
    }
    // The engine makes a missing bind source; remove it after, if we caused it.
    let made_src = !std::path::Path::new("/src").exists();
    let (srv, _clean) = docker_server();
    let docky = format!("{}/docky", srv.id);
    ok(srv.cli_in("mkdkr", &[&docky], SEED.replace("ubuntu", IMAGE).as_bytes()));
    let listing = ok(srv.cli("stdout", &[&docky]));
    let names: Vec<&str> = listing.lines().collect();
    for n in ["bin", "opt", "webapp"] {
        assert!(names.contains(&n), "ls / printed {listing:?}");
    }
    let end = json(&ok(srv.cli("wait", &[&docky])));
    assert_eq!(end["State"]["Status"], "exited", "{end}");
    assert_eq!(end["State"]["ExitCode"], 0);
    let ls = ok(srv.cli("ls", &["-l", &format!("{}/...", srv.id)]));
    assert!(
        ls.lines().any(|l| l.starts_with("docker") && l.ends_with(&docky)),
        "{ls}"
    );
    let peek = json(&ok(srv.cli("peek", &[&docky])));
    let host = &peek["HostConfig"];
    assert_eq!(host["Memory"], 1_000_000_000, "{host}");
    assert_eq!(host["CpuShares"], 3);
    assert_eq!(host["CpusetCpus"], "0,1");
    assert_eq!(host["Binds"][0], "/src/webapp:/opt/webapp:ro");
    assert_eq!(peek["Config"]["Env"][0], "PATH=/usr/bin");
    assert_eq!(peek["Config"]["WorkingDir"], "/");
    let name = format!("circuit-{}-docky", srv.id.trim_start_matches('/'));
    assert_eq!(peek["Name"], format!("/{name}"));
    assert_eq!(peek["Config"]["Labels"]["circuit.path"], docky);
    assert_eq!(containers_of(&srv.id).len(), 1);
    ok(srv.cli("scrub", &[&docky]));
    assert!(containers_of(&srv.id).is_empty(), "scrub left a container");
    assert_eq!(ok(srv.cli("peek", &[&docky])).trim(), "null");
    if made_src {
        let _ = std::fs::remove_dir("/src/webapp");
        let _ = std::fs::remove_dir("/src");
    }
}

#[test]
fn streams_round_trip_and_exit_codes_come_through_wait() {
    if !docker::available() {
        return;
    }
    let (srv, _clean) = docker_server();
    let cat = format!("{}/cat", srv.id);
    ok(srv.cli_in("mkdkr", &[&cat], spec("/bin/cat", &[]).as_bytes()));
    ok(srv.cli_in("stdin", &[&cat], b"hello\nworld\n"));
    assert_eq!(ok(srv.cli("stdout", &[&cat])), "hello\nworld\n");
    // stdin was closed: cat ended, and a second writer is refused.
    assert_eq!(json(&ok(srv.cli("wait", &[&cat])))["State"]["ExitCode"], 0);
    assert!(fails(srv.cli_in("stdin", &[&cat], b"x")).contains("stdin is closed"));

    let sh = format!("{}/sh", srv.id);
    let script = "echo out; echo err >&2; exit 3";
    ok(srv.cli_in("mkdkr", &[&sh], spec("/bin/sh", &["-c", script]).as_bytes()));
    assert_eq!(ok(srv.cli("stderr", &[&sh])), "err\n");
    assert_eq!(ok(srv.cli("stdout", &[&sh])), "out\n");
    let end = json(&ok(srv.cli("wait", &[&sh])));
    assert_eq!(end["State"]["ExitCode"], 3, "{end}");
    // `waitall` takes containers too.
    ok(srv.cli_in("waitall", &[], format!("{cat}\n{sh}\n").as_bytes()));
    ok(srv.cli("scrub", &[&cat]));
    ok(srv.cli("scrub", &[&sh]));
    assert!(containers_of(&srv.id).is_empty());
}

#[test]
fn output_nobody_reads_holds_the_container_back() {
    if !docker::available() {
        return;
    }
    let (srv, _clean) = docker_server();
    let big = format!("{}/big", srv.id);
    // 8 MiB is far more than the engine and the sockets buffer.
    let script = "head -c 8388608 /dev/zero; echo done >&2";
    ok(srv.cli_in("mkdkr", &[&big], spec("/bin/sh", &["-c", script]).as_bytes()));
    std::thread::sleep(Duration::from_secs(2));
    let peek = json(&ok(srv.cli("peek", &[&big])));
    assert_eq!(
        peek["State"]["Running"], true,
        "it ran on with nobody reading: {}",
        peek["State"]
    );
    let out = srv.cli("stdout", &[&big]);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 8 << 20);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(ok(srv.cli("stderr", &[&big])), "done\n");
    assert_eq!(json(&ok(srv.cli("wait", &[&big])))["State"]["ExitCode"], 0);
    ok(srv.cli("scrub", &[&big]));
}

#[test]
fn signal_term_ends_a_sleep_and_peek_shows_the_engine_state() {
    if !docker::available() {
        return;
    }
    let (srv, _clean) = docker_server();
    let sl = format!("{}/sleeper", srv.id);
    ok(srv.cli_in("mkdkr", &[&sl], spec("/bin/sleep", &["1000"]).as_bytes()));
    let peek = json(&ok(srv.cli("peek", &[&sl])));
    assert_eq!(peek["State"]["Running"], true, "{peek}");
    assert!(peek["State"]["Pid"].as_u64().unwrap() > 0);
    assert_eq!(peek["Config"]["Cmd"], serde_json::json!(["/bin/sleep", "1000"]));
    assert!(fails(srv.cli("signal", &["NOPE", &sl])).contains("not recognized"));
    ok(srv.cli("signal", &["TERM", &sl]));
    let end = json(&ok(srv.cli("wait", &[&sl])));
    // The engine's init forwarded TERM; sleep died of it: 128 + 15.
    assert_eq!(end["State"]["ExitCode"], 143, "{end}");
    assert!(fails(srv.cli("signal", &["15", &sl])).contains("no running container"));
    ok(srv.cli("scrub", &[&sl]));
    assert!(containers_of(&srv.id).is_empty());

    // `"Scrub": true`: gone once it exits, container included.
    let once = format!("{}/once", srv.id);
    let mut s = json(&spec("/bin/true", &[]));
    s["Scrub"] = true.into();
    ok(srv.cli_in("mkdkr", &[&once], s.to_string().as_bytes()));
    assert!(
        eventually(Duration::from_secs(20), || containers_of(&srv.id).is_empty()),
        "a Scrub container was left"
    );
    assert_eq!(ok(srv.cli("peek", &[&once])).trim(), "null");
}

#[test]
fn a_server_without_docker_says_how_to_enable_it() {
    let srv = TestServer::start(&[]);
    let e = fails(srv.cli_in("mkdkr", &[&format!("{}/d", srv.id)], spec("/bin/true", &[]).as_bytes()));
    assert!(
        e.contains("docker elements are not enabled on this server (start it with -docker)"),
        "{e}"
    );
}

#[test]
fn an_unreachable_engine_is_named_at_start_and_at_mkdkr() {
    let tmp = TempDir::new("nodocker");
    let socket = format!("unix://{}/docker.sock", tmp.0.display());
    let mut cmd = Command::new(bin());
    cmd.args(["start", "-a", "127.0.0.1:0", "-docker"])
        .env("DOCKER_HOST", &socket);
    let srv = TestServer::spawn(cmd);
    assert!(
        wait_log(&srv, "does not answer", 1, Duration::from_secs(10)),
        "{}",
        srv.log()
    );
    assert!(srv.log().contains(&socket), "{}", srv.log());
    let e = fails(srv.cli_in("mkdkr", &[&format!("{}/d", srv.id)], spec("/bin/true", &[]).as_bytes()));
    assert!(
        e.contains(&format!("the Docker engine at {socket} is unreachable")),
        "{e}"
    );
}

#[test]
fn a_missing_image_is_a_clear_error_and_leaves_nothing() {
    if !docker::available() {
        return;
    }
    let (srv, _clean) = docker_server();
    let s = serde_json::json!({"Image": "circuit-test-no-such-image:none", "Path": "/bin/true"});
    let e = fails(srv.cli_in("mkdkr", &[&format!("{}/d", srv.id)], s.to_string().as_bytes()));
    assert!(
        e.contains("image \"circuit-test-no-such-image:none\" is not in this server's Docker engine"),
        "{e}"
    );
    assert!(containers_of(&srv.id).is_empty());
    assert_eq!(ok(srv.cli("peek", &[&format!("{}/d", srv.id)])).trim(), "null");
    // A command the image lacks: the engine's init cannot run it (127), and says why.
    let nope = format!("{}/nope", srv.id);
    ok(srv.cli_in("mkdkr", &[&nope], spec("/bin/nope", &[]).as_bytes()));
    assert!(ok(srv.cli("stderr", &[&nope])).contains("/bin/nope"));
    assert_eq!(json(&ok(srv.cli("wait", &[&nope])))["State"]["ExitCode"], 127);
    ok(srv.cli("scrub", &[&nope]));
    assert!(containers_of(&srv.id).is_empty());
}

#[test]
fn a_container_is_made_and_driven_through_another_server() {
    if !docker::available() {
        return;
    }
    let (host, _clean) = docker_server();
    let other = TestServer::start(&["-j", &host.url]);
    assert!(
        eventually(Duration::from_secs(10), || ok(other.cli("ls", &["/"]))
            .contains(&host.id)),
        "the servers never joined"
    );
    let cat = format!("{}/far/cat", host.id);
    ok(other.cli_in("mkdkr", &[&cat], spec("/bin/cat", &[]).as_bytes()));
    ok(other.cli_in("stdin", &[&cat], b"across\n"));
    assert_eq!(ok(other.cli("stdout", &[&cat])), "across\n");
    assert_eq!(json(&ok(other.cli("wait", &[&cat])))["State"]["ExitCode"], 0);
    assert_eq!(containers_of(&host.id).len(), 1);
    ok(other.cli("scrub", &[&cat]));
    assert!(containers_of(&host.id).is_empty());
}

#[test]
fn stop_removes_containers_and_a_restart_sweeps_a_killed_servers() {
    if !docker::available() {
        return;
    }
    let var = TempDir::new("dkrvar");
    let var_s = var.0.to_str().unwrap();
    // A clean stop removes what the server made.
    let mut a = TestServer::start(&["-docker"]);
    let _clean_a = Cleanup::of(&[&a.id]);
    ok(a.cli_in(
        "mkdkr",
        &[&format!("{}/s", a.id)],
        spec("/bin/sleep", &["1000"]).as_bytes(),
    ));
    ok(a.cli("stop", &[&a.id]));
    assert!(
        a.wait_exit(Duration::from_secs(20)).is_some(),
        "the server did not stop"
    );
    assert!(containers_of(&a.id).is_empty(), "stop left a container");

    // A killed server leaves its container; a live server's are never swept.
    let live = TestServer::start(&["-docker"]);
    let _clean_live = Cleanup::of(&[&live.id]);
    ok(live.cli_in(
        "mkdkr",
        &[&format!("{}/keep", live.id)],
        spec("/bin/sleep", &["1000"]).as_bytes(),
    ));
    let killed = TestServer::start(&["-docker", "--var", var_s]);
    let _clean_killed = Cleanup::of(&[&killed.id]);
    ok(killed.cli_in(
        "mkdkr",
        &[&format!("{}/s", killed.id)],
        spec("/bin/sleep", &["1000"]).as_bytes(),
    ));
    let killed_id = killed.id.clone();
    drop(killed); // SIGKILL
    assert_eq!(containers_of(&killed_id).len(), 1);
    let again = TestServer::start(&["-docker", "--var", var_s]);
    let _clean_again = Cleanup::of(&[&again.id]);
    assert!(
        eventually(Duration::from_secs(20), || containers_of(&killed_id).is_empty()),
        "the restarted server left the killed one's container; log: {}",
        again.log()
    );
    assert!(
        again
            .log()
            .contains("removed a container left by a server that is gone")
    );
    assert_eq!(containers_of(&live.id).len(), 1, "a live server's container was swept");
    ok(live.cli("scrub", &[&format!("{}/keep", live.id)]));
    assert!(containers_of(&live.id).is_empty());
}

#[test]
fn the_library_drives_a_container_with_a_typed_handle() {
    if !docker::available() {
        return;
    }
    let (srv, _clean) = docker_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use circuit_client::{Client, DockerSpec, ElementStat, ErrorKind};
        use tokio::io::AsyncWriteExt;
        let client = Client::dial(&srv.url, None).await.unwrap();
        let anchor = client.walk(&srv.id).unwrap().walk("lib").unwrap();
        let d = anchor
            .make_docker(DockerSpec::new(IMAGE, "/bin/wc", ["-c"]))
            .await
            .unwrap();
        assert!(d.peek().await.unwrap().running());
        // A second reader of one stream is refused while the first reads.
        let out = d.stdout().await.unwrap();
        let busy = d.stdout().await.err().expect("a second stdout reader");
        assert_eq!(busy.kind(), Some(ErrorKind::Busy), "{busy}");
        let mut input = d.stdin().await.unwrap();
        input.write_all(b"twelve bytes").await.unwrap();
        input.close().await.unwrap();
        assert_eq!(String::from_utf8(out.read_all().await.unwrap()).unwrap().trim(), "12");
        let end = d.wait().await.unwrap();
        assert_eq!(end.exit_code(), Some(0));
        assert_eq!(
            end.name().unwrap(),
            format!("circuit-{}-lib", srv.id.trim_start_matches('/'))
        );
        assert!(matches!(anchor.wait().await.unwrap(), ElementStat::Docker(_)));
        // A docker handle on a process is a clear error, not a hang.
        let p = client.walk(&srv.id).unwrap().walk("p").unwrap();
        p.make_proc(circuit_client::ProcSpec::new("/bin/true", Vec::<String>::new()))
            .await
            .unwrap();
        let e = p.docker().peek().await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::WrongKind), "{e}");
        d.scrub().await.unwrap();
        let e = d.wait().await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
    });
    assert!(containers_of(&srv.id).is_empty());
}
