//! Hooks: commands (argv) the server runs around a watcher's processes —
//! `BeforeStart` and `AfterStart` around each spawn, `BeforeStop` before a
//! process is sent its stop signal, `AfterStop` once a process the watcher
//! stopped has ended. Each runs with stdin, stdout and stderr on
//! `/dev/null`, `CIRCUIT_WATCH` (the watcher's path) and `CIRCUIT_WID` (the
//! slot) in its environment, and at most [`HOOK_TIMEOUT`] (then SIGKILL).
//!
//! A hook runs to its end within the watcher's task, so the watcher waits
//! for it (a start waits for its `BeforeStart`); on a multi-threaded server
//! the other tasks go on meanwhile (`block_in_place`), on a single-threaded
//! one (`--threads 1`) the server waits too. A failing `BeforeStart`
//! (non-zero exit, timeout, cannot run) aborts that start: the slot is
//! handled like a process that could not be spawned (retried later, flapping
//! counted). Every failure is logged and reported as a `hookfailed` event
//! (`{"Hook", "Wid", "Error"}`); only `BeforeStart` blocks anything.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use circuit_proto::EventKind;
use serde_json::json;
use tracing::{info, warn};

/// The longest a hook may run before it is killed (and counts as failed).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Before a process starts.
    BeforeStart,
    /// After a process started.
    AfterStart,
    /// Before a process is stopped.
    BeforeStop,
    /// After a stopped process ended.
    AfterStop,
}

impl Hook {
    /// Its name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Hook::BeforeStart => "BeforeStart",
            Hook::AfterStart => "AfterStart",
            Hook::BeforeStop => "BeforeStop",
            Hook::AfterStop => "AfterStop",
        }
    }
}

/// Runs `argv` to its end (at most `timeout`) with the hook's environment;
/// `Err` says why it failed.
pub fn run(argv: &[String], watch: &str, wid: u32, timeout: Duration) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(prog)
        .args(args)
        .env("CIRCUIT_WATCH", watch)
        .env("CIRCUIT_WID", wid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{prog} failed: {status}")),
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{prog} still running after {timeout:?}; killed"));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
    }
}

impl super::Shell {
    /// Runs hook `which` for slot `wid`, if the spec has one; logs it, and
    /// reports a failure as a `hookfailed` event. True if it succeeded (or
    /// there is none).
    pub(super) fn hook(&mut self, which: Hook, wid: u32) -> bool {
        let h = &self.spec.hooks;
        let argv = match which {
            Hook::BeforeStart => &h.before_start,
            Hook::AfterStart => &h.after_start,
            Hook::BeforeStop => &h.before_stop,
            Hook::AfterStop => &h.after_stop,
        };
        if argv.is_empty() {
            return true;
        }
        let go = || run(argv, &self.name, wid, HOOK_TIMEOUT);
        // On a multi-threaded server, the other tasks move to other workers
        // while this one waits for the hook.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if multi { tokio::task::block_in_place(go) } else { go() };
        match result {
            Ok(()) => {
                info!(op = "hook", watch = %self.name, hook = which.name(), wid, "hook done");
                true
            }
            Err(error) => {
                warn!(op = "hook", watch = %self.name, hook = which.name(), wid, %error, "hook failed");
                self.report(EventKind::other(
                    "hookfailed",
                    json!({"Hook": which.name(), "Wid": wid, "Error": error}),
                ));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn hooks_succeed_fail_and_time_out() {
        let t = Duration::from_secs(5);
        assert!(
            run(
                &sh(r#"[ "$CIRCUIT_WID" = 3 ] && [ "$CIRCUIT_WATCH" = /X1/w ]"#),
                "/X1/w",
                3,
                t
            )
            .is_ok()
        );
        let e = run(&sh("exit 4"), "/X1/w", 1, t).unwrap_err();
        assert!(e.contains("exit status: 4"), "{e}");
        let e = run(&sh("sleep 5"), "/X1/w", 1, Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(run(&["/no/such/hook".to_string()], "/X1/w", 1, t).is_err());
        assert!(run(&[], "/X1/w", 1, t).is_err());
    }
}
