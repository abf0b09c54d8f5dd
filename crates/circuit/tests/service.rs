//! Operable as a service: shell completions and man pages generated from the
//! parser's own definitions, and `packaging/circuit.service`, whose command
//! line is run for real (with its paths moved into a temporary directory).
//! Tools that may be missing (zsh, fish, man, groff, systemd-analyze) are
//! used when present; a check that cannot run says so on stderr.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TempDir, TestServer, bin, ok, run_cli, stderr, stdout};

/// The commands `circuit --help` lists (clap's own `help` included).
fn commands() -> Vec<String> {
    let help = ok(run_cli(&["--help"], b"", &[]));
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(list.len() > 25, "too few commands in --help: {list:?}\n{help}");
    for expected in ["start", "keygen", "ls", "mk@join", "completions", "manpages", "help"] {
        assert!(list.iter().any(|c| c == expected), "{expected} missing from {list:?}");
    }
    list
}

/// Whether a tool can be run at all.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs a tool on a script given as a file; bounded by the tool itself
/// (these only parse or render).
fn run(tool: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(tool)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

fn completion_script(shell: &str, dir: &Path) -> PathBuf {
    let script = ok(run_cli(&["completions", shell], b"", &[]));
    assert!(!script.is_empty(), "{shell}: empty script");
    let file = dir.join(format!("circuit.{shell}"));
    std::fs::write(&file, script).unwrap();
    file
}

/// What bash completes after `circuit WORDS…` (the last word being typed).
fn bash_complete(script: &Path, words: &[&str]) -> BTreeSet<String> {
    let line = words.join(" ");
    let driver = format!(
        "source {script:?} || exit 3\n\
         COMP_WORDS=(circuit {line})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE='circuit {line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _circuit circuit \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        cword = words.len(),
    );
    let out = run("bash", &["--norc", "--noprofile", "-c", &driver], &[]);
    assert!(out.status.success(), "bash completion failed: {}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn bash_completion_offers_every_command() {
    let dir = TempDir::new("svc-bash");
    let script = completion_script("bash", &dir.0);
    let out = run("bash", &["-n", script.to_str().unwrap()], &[]);
    assert!(out.status.success(), "bash -n refused the script: {}", stderr(&out));

    let text = std::fs::read_to_string(&script).unwrap();
    let offered = bash_complete(&script, &[""]);
    for cmd in commands() {
        assert!(
            text.contains(&format!("circuit,{cmd})")),
            "the script has no case for {cmd}"
        );
        assert!(
            offered.contains(&cmd),
            "`circuit <TAB>` does not offer {cmd}: {offered:?}"
        );
    }
    // A prefix narrows the choice, and a command's own flags follow it.
    let mk = bash_complete(&script, &["mk"]);
    assert!(
        mk.contains("mkproc") && mk.contains("mkwatch") && mk.contains("mk@join"),
        "{mk:?}"
    );
    assert!(mk.iter().all(|w| w.starts_with("mk")), "{mk:?}");
    let flags = bash_complete(&script, &["start", "--"]);
    for flag in ["--addr", "--join", "--var", "--url-file", "--hmac", "--discover"] {
        assert!(
            flags.iter().any(|f| f.trim_end_matches('=') == flag),
            "start: no {flag} in {flags:?}"
        );
    }
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let dir = TempDir::new("svc-shells");
    let cmds = commands();
    for shell in ["zsh", "fish"] {
        let script = completion_script(shell, &dir.0);
        let text = std::fs::read_to_string(&script).unwrap();
        for cmd in &cmds {
            assert!(text.contains(cmd.as_str()), "{shell}: {cmd} missing");
        }
        if have(shell) {
            let out = run(shell, &["-n", script.to_str().unwrap()], &[]);
            assert!(out.status.success(), "{shell} -n refused the script: {}", stderr(&out));
        } else {
            eprintln!("{shell} is not installed: its script was checked for the command names only");
        }
    }
    // A shell clap does not know is a usage error, not a crash.
    let out = run_cli(&["completions", "tcsh"], b"", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Writes the pages into a fresh directory; checks the list printed.
fn man_pages(dir: &Path, env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let listed = ok(run_cli(&["manpages", dir.to_str().unwrap()], b"", env));
    let listed: BTreeSet<PathBuf> = listed.lines().map(PathBuf::from).collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(listed, on_disk, "printed list and files differ");
    on_disk
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

#[test]
fn man_pages_for_every_command_read_by_man() {
    let root = TempDir::new("svc-man");
    let dir = root.0.join("man1"); // made by the command
    let pages = man_pages(&dir, &[("SOURCE_DATE_EPOCH", "86400")]);
    let version = env!("CARGO_PKG_VERSION");

    let mut expected: BTreeSet<String> = commands()
        .into_iter()
        .filter(|c| c != "help")
        .map(|c| format!("circuit-{c}.1"))
        .collect();
    expected.insert("circuit.1".into());
    assert_eq!(pages.keys().cloned().collect::<BTreeSet<_>>(), expected);

    for (file, text) in &pages {
        let title = file.trim_end_matches(".1");
        let th = format!(".TH {title} 1 1970-01-02 \"circuit {version}\" \"Circuit Manual\"");
        assert!(text.lines().any(|l| l == th), "{file}: no {th:?} line");
        assert!(text.contains(".SH NAME") && text.contains(".SH SYNOPSIS"), "{file}");
    }
    assert!(
        pages["circuit-start.1"].contains("url\\-file"),
        "start's page lacks its flags"
    );
    assert!(
        pages["circuit.1"].contains(".SH SUBCOMMANDS"),
        "the main page lists no commands"
    );

    // The same date gives the same bytes (packagers rebuild them).
    let again = man_pages(&root.0.join("again"), &[("SOURCE_DATE_EPOCH", "86400")]);
    assert_eq!(pages, again);

    // Rendered by man (or groff), with no warning.
    let page = dir.join("circuit-mkproc.1");
    let page = page.to_str().unwrap();
    let rendered = if have("man") {
        Some(run(
            "man",
            &["--warnings", "-l", page],
            &[("MANWIDTH", "80"), ("MAN_KEEP_FORMATTING", "")],
        ))
    } else if have("groff") {
        Some(run("groff", &["-k", "-man", "-Tutf8", "-ww", page], &[]))
    } else {
        eprintln!("neither man nor groff is installed: the pages' headers were checked only");
        None
    };
    if let Some(out) = rendered {
        assert!(out.status.success(), "rendering failed: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "warnings while rendering {page}");
        let text = stdout(&out);
        assert!(text.contains("circuit-mkproc") && text.contains("SYNOPSIS"), "{text}");
    }
}

/// `packaging/circuit.service` as sections of (key, value), in order.
fn unit() -> BTreeMap<String, Vec<(String, String)>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/circuit.service");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: continuation lines are not expected",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("line {}: outside a section", n + 1));
        sections
            .get_mut(&section)
            .unwrap()
            .push((k.trim().into(), v.trim().into()));
    }
    sections
}

fn get<'a>(unit: &'a BTreeMap<String, Vec<(String, String)>>, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .map(|kv| kv.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect())
        .unwrap_or_default()
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<(String, String)>>, section: &str, key: &str) -> &'a str {
    match get(unit, section, key)[..] {
        [v] => v,
        ref vs => panic!("[{section}] {key}: expected one value, found {vs:?}"),
    }
}

#[test]
fn the_unit_restarts_hardens_and_keeps_the_key_private() {
    let u = unit();
    assert_eq!(
        u.keys().map(String::as_str).collect::<Vec<_>>(),
        ["Install", "Service", "Unit"]
    );
    assert_eq!(one(&u, "Service", "Restart"), "on-failure");
    assert_eq!(one(&u, "Service", "StateDirectory"), "circuit");
    assert_eq!(one(&u, "Service", "KillMode"), "mixed");
    assert_eq!(one(&u, "Install", "WantedBy"), "multi-user.target");
    let exec = one(&u, "Service", "ExecStart");
    assert!(exec.starts_with("/usr/local/bin/circuit start "), "{exec}");
    assert!(exec.contains(" --var /var/lib/circuit "), "{exec}");
    // The key: a root-only file handed over as a credential.
    let cred = one(&u, "Service", "LoadCredential");
    assert_eq!(cred, "key:/etc/circuit/key");
    assert!(exec.contains(" --hmac %d/key "), "{exec}");
    // Discovery on by default, -j through CIRCUIT_ARGS.
    let env = get(&u, "Service", "Environment");
    assert!(env.contains(&"CIRCUIT_DISCOVER=228.8.8.8:8822"), "{env:?}");
    assert!(exec.ends_with(" $CIRCUIT_ARGS"), "{exec}");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(&u, "Service", key), value, "{key}");
    }
    // Elements run ordinary programs: nothing that breaks them.
    for key in [
        "MemoryDenyWriteExecute",
        "SystemCallFilter",
        "PrivateNetwork",
        "PrivateUsers",
    ] {
        assert!(
            get(&u, "Service", key).is_empty(),
            "{key} would stop elements' processes"
        );
    }
    // The server's graceful stop (at most 60 s + 2 s) fits in systemd's.
    let stop = one(&u, "Service", "TimeoutStopSec")
        .trim_end_matches('s')
        .parse::<u64>()
        .unwrap();
    assert!(stop > 62, "TimeoutStopSec={stop}");
}

/// The unit's ExecStart as argv, with its paths moved under `tmp`, the way
/// systemd would expand it with `CIRCUIT_ADDR` and `CIRCUIT_ARGS` from an
/// environment file.
fn exec_start(u: &BTreeMap<String, Vec<(String, String)>>, tmp: &Path, addr: &str, args: &str) -> Vec<String> {
    let creds = tmp.join("credentials");
    let run = tmp.join("run");
    let mut argv = Vec::new();
    for word in one(u, "Service", "ExecStart").split_whitespace() {
        match word {
            "/usr/local/bin/circuit" => argv.push(bin().display().to_string()),
            "${CIRCUIT_ADDR}" => argv.push(addr.to_string()),
            "$CIRCUIT_ARGS" => argv.extend(args.split_whitespace().map(str::to_string)),
            "/var/lib/circuit" => argv.push(tmp.join("state").display().to_string()),
            w => {
                assert!(!w.contains('$'), "a variable the test does not know: {w}");
                argv.push(
                    w.replace("%d", creds.to_str().unwrap())
                        .replace("%t", run.to_str().unwrap()),
                );
            }
        }
    }
    argv
}

#[test]
fn the_units_command_line_runs_a_server_clients_find() {
    let u = unit();
    let tmp = TempDir::new("svc-unit");
    // What the README's install steps and systemd lay out.
    std::fs::create_dir_all(tmp.0.join("credentials")).unwrap();
    std::fs::create_dir_all(tmp.0.join("run/circuit")).unwrap();
    std::fs::create_dir_all(tmp.0.join("state")).unwrap();
    let key = tmp.0.join("credentials/key");
    std::fs::write(&key, ok(run_cli(&["keygen"], b"", &[]))).unwrap();

    let first = TestServer::start(&["--hmac", key.to_str().unwrap()]);
    let argv = exec_start(&u, &tmp.0, "127.0.0.1:0", &format!("-j {}", first.url));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let mut srv = TestServer::spawn(cmd);

    // --url-file: the URL, whole, where the unit says clients find it.
    let url_file = tmp.0.join("run/circuit/url");
    let text = std::fs::read_to_string(&url_file).unwrap();
    assert_eq!(text, format!("{}\n", srv.url));
    let env = [("CIRCUIT", url_file.to_str().unwrap())];
    let hmac = key.to_str().unwrap();
    let ls = ok(run_cli(&["ls", "--hmac", hmac, "/"], b"", &env));
    // It joined the first server, as -j in CIRCUIT_ARGS says.
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let ls = ok(run_cli(&["ls", "--hmac", hmac, "/"], b"", &env));
            ls.contains(&srv.id) && ls.contains(&first.id)
        }),
        "{ls}"
    );
    // Its state directory is the one given.
    assert!(
        srv.log().contains(tmp.0.join("state").to_str().unwrap()),
        "{}",
        srv.log()
    );

    // A clean stop removes the URL, which would otherwise name a dead server.
    ok(run_cli(&["stop", "--hmac", hmac, &srv.id], b"", &env));
    let status = srv.wait_exit(Duration::from_secs(20)).expect("the server did not stop");
    assert!(status.success(), "{status:?}: {}", srv.log());
    assert!(!url_file.exists(), "the URL file outlived the server");
    // The first one too, cleanly, so it leaves no state directory behind.
    ok(run_cli(
        &["stop", "-d", &first.url, "--hmac", hmac, &first.id],
        b"",
        &[],
    ));
    let mut first = first;
    assert!(
        first.wait_exit(Duration::from_secs(20)).is_some(),
        "the first server did not stop"
    );
}

#[test]
fn a_url_file_that_cannot_be_written_stops_the_start() {
    let tmp = TempDir::new("svc-url");
    let bad = tmp.0.join("no/such/dir/url");
    let out = Command::new(bin())
        .args(["start", "-a", "127.0.0.1:0", "--url-file", bad.to_str().unwrap()])
        .env_remove("CIRCUIT_DISCOVER")
        .env_remove("CIRCUIT_HMAC")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("circuit: --url-file ") && last.contains("No such file"),
        "{err}"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !have("systemd-analyze") {
        eprintln!("systemd-analyze is not installed: the unit was checked by the parser of this file only");
        return;
    }
    let tmp = TempDir::new("svc-verify");
    // verify checks that ExecStart's binary exists and that Documentation's
    // man page is installed: give it the binary under test and its pages.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/circuit.service"))
        .unwrap()
        .replace("/usr/local/bin/circuit", bin().to_str().unwrap());
    let unit = tmp.0.join("circuit.service");
    std::fs::write(&unit, text).unwrap();
    ok(run_cli(
        &["manpages", tmp.0.join("man/man1").to_str().unwrap()],
        b"",
        &[],
    ));
    let out = run(
        "systemd-analyze",
        &["verify", unit.to_str().unwrap()],
        &[("MANPATH", tmp.0.join("man").to_str().unwrap())],
    );
    // verify exits 0 on settings it ignores, so any line it prints fails too.
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "systemd-analyze verify complained");
}
