//! `circuit top` in a real terminal: a detached tmux session of its own
//! (on a tmux server of its own, whose socket is in a temporary directory), driven with send-keys and read with
//! capture-pane. Every wait is bounded; only this test's session is killed.
//! Without tmux the test is skipped with a reason, except under CI=true,
//! where `.ci/run` installs it.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TempDir, TestServer, bin, ok};
use serde_json::Value;

/// A tmux session of this test's own, on its own tmux server; killed on drop.
struct Session {
    socket: std::path::PathBuf,
    name: String,
}

impl Session {
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", &self.name]).stdout).into_owned()
    }

    /// `#{pane_dead} #{pane_dead_status}` of the session's pane.
    fn dead(&self) -> String {
        let o = self.tmux(&[
            "display-message",
            "-p",
            "-t",
            &self.name,
            "#{pane_dead} #{pane_dead_status} #{pane_dead_signal}",
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-session", "-t", &self.name]);
    }
}

fn tmux_present() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Polls (bounded) until `f` holds; returns whether it did.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_shows_the_processes_and_quits_on_q() {
    if !tmux_present() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "tmux is required under CI=true (.ci/run installs it)"
        );
        println!("skipped: tmux is not installed");
        return;
    }
    let srv = TestServer::start(&[]);
    let sleeper = format!("{}/sleeper", srv.id);
    ok(srv.cli_in("mkproc", &[&sleeper], br#"{"Path": "/bin/sleep", "Args": ["60"]}"#));
    let peek: Value = serde_json::from_str(&ok(srv.cli("peek", &[&sleeper]))).unwrap();
    let pid = peek["Pid"].as_u64().expect("a started process has a Pid").to_string();

    let dir = TempDir::new("top");
    let name = format!("circuit-top-{}", std::process::id());
    let s = Session {
        socket: dir.0.join("tmux.sock"),
        name: name.clone(),
    };
    // Run from a shell, as a user does, which records top's exit status.
    let status_file = dir.0.join("status");
    let cmd = format!(
        "sh -c '{} top -d {}; echo $? > {}'",
        bin().display(),
        srv.url,
        status_file.display()
    );
    let started = s.tmux(&["new-session", "-d", "-s", &name, "-x", "160", "-y", "40", &cmd]);
    assert!(
        started.status.success(),
        "tmux new-session: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    // Keep the pane once top exits, to read its exit status.
    ok(s.tmux(&["set-option", "-t", &name, "remain-on-exit", "on"]));

    let mut screen = String::new();
    let shown = eventually(Duration::from_secs(20), || {
        screen = s.pane();
        screen
            .lines()
            .any(|l| l.contains("/sleeper") && l.split_whitespace().any(|w| w == pid))
    });
    assert!(shown, "top never showed pid {pid} of {sleeper}:\n{screen}");
    assert!(screen.contains("circuit top: 1 servers, 1 processes"), "{screen}");
    assert!(screen.contains(&srv.id), "the server is listed:\n{screen}");
    assert_eq!(s.dead(), "0", "top is still running");

    ok(s.tmux(&["send-keys", "-t", &name, "q"]));
    // tmux 3.3 may mark the pane dead before it records an exit status, so
    // the status comes from the shell that ran top.
    let mut state = String::new();
    let exited = eventually(Duration::from_secs(10), || {
        state = s.dead();
        state.starts_with('1') && std::fs::read_to_string(&status_file).is_ok_and(|t| t.ends_with('\n'))
    });
    assert!(exited, "top did not exit on q (pane: {state:?}):\n{}", s.pane());
    let status = std::fs::read_to_string(&status_file).unwrap_or_default();
    assert_eq!(status.trim(), "0", "top exited with status 0");
    // The terminal is given back: the table is gone from the screen.
    let mut after = String::new();
    let restored = eventually(Duration::from_secs(5), || {
        after = s.pane();
        !after.contains("circuit top:")
    });
    assert!(restored, "the view was left on screen:\n{after}");
}
