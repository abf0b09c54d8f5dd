//! Hooks: commands (argv) the server runs around a watcher's processes —
//! `BeforeStart` and `AfterStart` around each spawn, `BeforeStop` before a
//! process is sent its stop signal, `AfterStop` once a process the watcher
//! stopped has ended. Each runs with stdin, stdout and stderr on
//! `/dev/null`, `CIRCUIT_WATCH` (the watcher's path) and `CIRCUIT_WID` (the
//! slot) in its environment, and at most [`HOOK_TIMEOUT`] (then SIGKILL).
//!
//! A hook is an async child of the server's reaper, in its own process
//! group: the watcher's task awaits it (a start waits for its
//! `BeforeStart`; requests to that watcher wait their turn), while every
//! other task of the server goes on, even with `--threads 1`. The timeout is
//! on the server's [`Clock`]; a hook past it is SIGKILLed with its process
//! group. The first starts of a watcher with a `BeforeStart` or `AfterStart`
//! hook happen in its task, after `mkwatch` has answered (so an exec error
//! of those is a `spawnfailed` event, not `mkwatch`'s error). A failing `BeforeStart`
//! (non-zero exit, timeout, cannot run) aborts that start: the slot is
//! handled like a process that could not be spawned (retried later, flapping
//! counted). Every failure is logged and reported as a `hookfailed` event
//! (`{"Hook", "Wid", "Error"}`); only `BeforeStart` blocks anything.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use circuit_proto::{EventKind, ProcExit, WatchEvent};
use nix::sys::signal::Signal;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::elements::proc::ReaperHandle;

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

/// Runs `argv` to its end (at most `timeout` on `clock`) as a child of
/// `reaper`, with the hook's environment; `Err` says why it failed.
pub async fn run(
    reaper: &ReaperHandle,
    clock: &Clock,
    argv: &[String],
    watch: &str,
    wid: u32,
    timeout: Duration,
) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("CIRCUIT_WATCH", watch)
        .env("CIRCUIT_WID", wid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let child = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {prog}: {e}"))?;
    drop(cmd);
    let pid = child.pid();
    let ended = child.ended();
    tokio::pin!(ended);
    let exit = match clock.timeout(timeout, &mut ended).await {
        Some((_, exit)) => exit,
        None => {
            let _ = reaper.signal(pid, Signal::SIGKILL, true);
            ended.await;
            return Err(format!("{prog} still running after {timeout:?}; killed"));
        }
    };
    match exit {
        Some(ProcExit {
            code: 0, signal: None, ..
        }) => Ok(()),
        Some(ProcExit { signal: Some(sig), .. }) => Err(format!("{prog} failed: signal: {sig}{}", signal_name(sig))),
        Some(ProcExit { code, .. }) => Err(format!("{prog} failed: exit status: {code}")),
        None => Err(format!("waiting for {prog}: the server is stopping")),
    }
}

/// ` (SIGKILL)` for 9, as `std`'s exit status prints it.
fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| String::new(), |s| format!(" ({})", s.as_str()))
}

impl super::Shell {
    /// Runs hook `which` for slot `wid`, if the spec has one; logs it, and
    /// reports a failure as a `hookfailed` event. True if it succeeded (or
    /// there is none).
    pub(super) async fn hook(&mut self, which: Hook, wid: u32) -> bool {
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
        let result = run(&self.reaper, &self.clock, argv, &self.name, wid, HOOK_TIMEOUT).await;
        match result {
            Ok(()) => {
                info!(op = "hook", watch = %self.name, hook = which.name(), wid, "hook done");
                true
            }
            Err(error) => {
                warn!(op = "hook", watch = %self.name, hook = which.name(), wid, %error, "hook failed");
                self.report(EventKind::Watch(WatchEvent::HookFailed {
                    hook: which.name().into(),
                    wid,
                    error,
                }));
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

    #[tokio::test]
    async fn hooks_succeed_fail_and_time_out() {
        let reaper = crate::elements::proc::Reaper::start();
        let (r, c) = (&reaper.handle(), &Clock::new());
        let t = Duration::from_secs(5);
        assert!(
            run(
                r,
                c,
                &sh(r#"[ "$CIRCUIT_WID" = 3 ] && [ "$CIRCUIT_WATCH" = /X1/w ]"#),
                "/X1/w",
                3,
                t
            )
            .await
            .is_ok()
        );
        let e = run(r, c, &sh("exit 4"), "/X1/w", 1, t).await.unwrap_err();
        assert!(e.contains("exit status: 4"), "{e}");
        let e = run(r, c, &sh("sleep 5"), "/X1/w", 1, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(run(r, c, &["/no/such/hook".to_string()], "/X1/w", 1, t).await.is_err());
        assert!(run(r, c, &[], "/X1/w", 1, t).await.is_err());
        let e = run(r, c, &sh("kill -9 $$"), "/X1/w", 1, t).await.unwrap_err();
        assert!(e.contains("signal: 9 (SIGKILL)"), "{e}");
        assert_eq!(reaper.live(), 0, "every hook reaped");
    }

    /// The timeout is on the server's clock: on a paused one, a hook that
    /// would sleep an hour is killed at once, with no real wait.
    #[tokio::test(start_paused = true)]
    async fn a_hook_times_out_on_the_clock() {
        let reaper = crate::elements::proc::Reaper::start();
        let clock = Clock::new();
        let t0 = clock.now();
        let real = std::time::Instant::now();
        let e = run(&reaper.handle(), &clock, &sh("sleep 3600"), "/X1/w", 1, HOOK_TIMEOUT)
            .await
            .unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(clock.now() - t0 >= HOOK_TIMEOUT);
        assert!(real.elapsed() < HOOK_TIMEOUT, "{:?}", real.elapsed());
    }
}
