//! The process element: an OS process started by this server, with its
//! stdin, stdout and stderr kept as pipes.
//!
//! - **Reaping.** One [`Reaper`] per server owns every child it started: on
//!   each SIGCHLD it calls `waitpid(pid, WNOHANG|WUNTRACED|WCONTINUED)` for each
//!   live pid (never `waitpid(-1)`, so it cannot steal anyone else's child) and
//!   publishes the new status. A pid stays registered until the process has
//!   ended and been reaped, whatever happened to its element: no zombies.
//!   Signals are sent under the reaper's lock, so a pid is never signalled
//!   after it was reaped (and possibly reused).
//! - **Pipes.** Each stream is an OS pipe of 32 KiB; the server keeps one end
//!   and copies only while a client is attached, so a process whose output
//!   nobody reads blocks, as in a shell pipe. One reader (or writer) at a time
//!   per stream: a second one gets [`ProcError::Busy`].
//! - **Spawn errors.** A process that cannot be started still makes an
//!   element, in phase `unknown`, whose `Exit.Error` says why (as the original
//!   did); `mkproc` reports the error. With `Scrub: true` nothing is kept.
//! - **Scrub** detaches a running process: it keeps running (in its own
//!   process group, so a Ctrl-C at the server's terminal does not reach it),
//!   its stdin is closed, and so are our ends of its stdout and stderr: its
//!   next write meets a closed pipe (SIGPIPE, as with any pipe), so a process
//!   that writes ends there while a quiet one runs on; the reaper still reaps
//!   it. Pending `wait`s fail with "aborted". Stopping the server scrubs
//!   every element the same way, so processes outlive the server, as in the
//!   original.
//! - **Tasks.** The tasks that close a scrubbed process's pipes run on the
//!   server's task tracker. The reaper's own task is owned by the [`Reaper`]
//!   (aborted when it is dropped or [`Reaper::stop`]ped, the server's last
//!   step, so that watchers stopping gracefully are reaped to the end); it
//!   is not on the tracker, whose end the server waits for.

pub(crate) mod ops;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use circuit_proto::{ErrorKind, ProcExit, ProcPhase, ProcSpec, ProcStat};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, OwnedMutexGuard, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clock::Clock;

/// Bytes a pipe buffers before its writer blocks.
pub const PIPE_SIZE: usize = 32 * 1024;

/// What can go wrong with a process element.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The spec cannot be run.
    #[error("{0}")]
    Spec(String),
    /// The stream already has its one reader or writer.
    #[error("{0} is busy: it already has a {1} (one at a time)")]
    Busy(&'static str, &'static str),
    /// The stream is gone: stdin was closed, or the process never started.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// The element was scrubbed.
    #[error("aborted: the process element was scrubbed")]
    Aborted,
    /// Not a signal this server knows.
    #[error("signal {0:?} not recognized; give a name like TERM or SIGTERM, or a number like 15")]
    BadSignal(String),
    /// The process has ended (or never started).
    #[error("no running process to signal")]
    NotRunning,
    /// The OS refused.
    #[error("{0}")]
    Os(String),
}

impl ProcError {
    /// The wire class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProcError::Spec(_) | ProcError::BadSignal(_) => ErrorKind::Invalid,
            ProcError::Busy(..) => ErrorKind::Busy,
            ProcError::Closed(_) | ProcError::NotRunning => ErrorKind::Closed,
            ProcError::Aborted => ErrorKind::Aborted,
            ProcError::Os(_) => ErrorKind::Io,
        }
    }
}

/// Phase and exit of a process, as the reaper last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    phase: ProcPhase,
    exit: Option<ProcExit>,
}

impl Status {
    const RUNNING: Status = Status {
        phase: ProcPhase::Running,
        exit: None,
    };

    fn lost(error: String) -> Status {
        Status {
            phase: ProcPhase::Unknown,
            exit: Some(ProcExit {
                code: -1,
                signal: None,
                error: Some(error),
            }),
        }
    }
}

/// Reaps every process this server started. Dropping it stops its task.
pub struct Reaper {
    inner: Arc<ReaperInner>,
    task: JoinHandle<()>,
}

struct ReaperInner {
    /// Live (not yet reaped) children and where to publish their status.
    live: Mutex<HashMap<i32, watch::Sender<Status>>>,
    /// Wakes the task when a pid is registered, in case its SIGCHLD came first.
    kick: Notify,
    /// Where the tasks that follow its processes run (the server's tracker).
    tasks: TaskTracker,
}

impl Reaper {
    /// Starts the reaper task on a tracker of its own; call from within a
    /// runtime, before any process is spawned.
    pub fn start() -> Reaper {
        Reaper::start_on(&TaskTracker::new(), Clock::new())
    }

    /// Starts the reaper task; the tasks that follow its processes run on
    /// `tasks` (the server's tracker).
    pub fn start_on(tasks: &TaskTracker, clock: Clock) -> Reaper {
        let inner = Arc::new(ReaperInner {
            live: Mutex::new(HashMap::new()),
            kick: Notify::new(),
            tasks: tasks.clone(),
        });
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen to SIGCHLD; polling children every 50 ms instead");
                None
            }
        };
        let me = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = me.kick.notified() => {}
                    got = async {
                        match sigchld.as_mut() {
                            Some(s) => s.recv().await,
                            None => { clock.sleep(Duration::from_millis(50)).await; Some(()) }
                        }
                    } => if got.is_none() { sigchld = None },
                }
                me.reap();
            }
        });
        Reaper { inner, task }
    }

    /// Children started and not yet reaped.
    pub fn live(&self) -> usize {
        self.inner.live.lock().unwrap().len()
    }

    /// A handle to spawn and signal children through this reaper.
    pub fn handle(&self) -> ReaperHandle {
        ReaperHandle(self.inner.clone())
    }

    /// Stops reaping: the server's last step, once its elements are scrubbed.
    /// Children not yet reaped are left to init.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Spawns and signals children through the server's [`Reaper`]; for
/// elements whose own task needs it (watchers). Cheap to clone.
#[derive(Clone)]
pub struct ReaperHandle(Arc<ReaperInner>);

impl ReaperHandle {
    /// Spawns `cmd` and registers its pid at once, so it is always reaped.
    /// For children whose stdio the caller sets up; `std`'s `Child` is
    /// dropped, the reaper owns the pid.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let child = cmd.spawn()?;
        let pid = child.id();
        let status = self.0.register(pid as i32);
        Ok(Child { pid, status })
    }

    /// Sends `sig` to `pid` if it has not been reaped; with `group`, to its
    /// whole process group (whose id is `pid`: children are spawned with
    /// `process_group(0)`), so its own children get it too.
    pub fn signal(&self, pid: u32, sig: Signal, group: bool) -> Result<(), ProcError> {
        let target = if group { -(pid as i32) } else { pid as i32 };
        let live = self.0.live.lock().unwrap();
        if !live.contains_key(&(pid as i32)) {
            return Err(ProcError::NotRunning);
        }
        nix::sys::signal::kill(Pid::from_raw(target), sig).map_err(|e| ProcError::Os(format!("signal error: {e}")))
    }
}

/// A child registered with the [`Reaper`] by [`ReaperHandle::spawn`].
pub struct Child {
    pid: u32,
    status: watch::Receiver<Status>,
}

impl Child {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves once the child has ended and been reaped, with its pid and
    /// how it ended (`None` if the reaper stopped first).
    pub async fn ended(mut self) -> (u32, Option<ProcExit>) {
        let exit = match self.status.wait_for(|s| s.phase.is_final()).await {
            Ok(s) => s.exit.clone(),
            Err(_) => None,
        };
        (self.pid, exit)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReaperInner {
    fn register(&self, pid: i32) -> watch::Receiver<Status> {
        let (tx, rx) = watch::channel(Status::RUNNING);
        self.live.lock().unwrap().insert(pid, tx);
        self.kick.notify_one();
        rx
    }

    /// Collects every status change of every live child.
    fn reap(&self) {
        let mut live = self.live.lock().unwrap();
        live.retain(|&pid, tx| {
            // A child reports at most a few changes at once (stop, continue, exit).
            for _ in 0..16 {
                let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED | WaitPidFlag::WCONTINUED;
                let status = match waitpid(Pid::from_raw(pid), Some(flags)) {
                    Ok(WaitStatus::StillAlive) => return true,
                    Ok(WaitStatus::Exited(_, code)) => Status {
                        phase: ProcPhase::Exited,
                        exit: Some(ProcExit {
                            code,
                            signal: None,
                            error: None,
                        }),
                    },
                    Ok(WaitStatus::Signaled(_, sig, _)) => Status {
                        phase: ProcPhase::Signaled,
                        exit: Some(ProcExit {
                            code: -1,
                            signal: Some(sig as i32),
                            error: None,
                        }),
                    },
                    Ok(WaitStatus::Stopped(..)) => Status {
                        phase: ProcPhase::Stopped,
                        exit: None,
                    },
                    Ok(WaitStatus::Continued(_)) => Status {
                        phase: ProcPhase::Continued,
                        exit: None,
                    },
                    Ok(_) => continue,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECHILD) => Status::lost("the process was reaped by someone else".into()),
                    Err(e) => {
                        warn!(pid, error = %e, "waitpid failed");
                        return true;
                    }
                };
                let done = status.phase.is_final();
                info!(op = "reap", pid, phase = %status.phase, exit = ?status.exit, "process status changed");
                tx.send_replace(status);
                if done {
                    return false;
                }
            }
            true
        });
    }

    /// Sends `sig` to `pid` if it has not been reaped.
    fn kill(&self, pid: i32, sig: Signal) -> Result<(), ProcError> {
        let live = self.live.lock().unwrap();
        if !live.contains_key(&pid) {
            return Err(ProcError::NotRunning);
        }
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(|e| ProcError::Os(format!("signal error: {e}")))
    }
}

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal, ProcError> {
    let t = s.trim();
    let bad = || ProcError::BadSignal(s.to_string());
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t.parse().map_err(|_| bad())?;
        return Signal::try_from(n).map_err(|_| bad());
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    format!("SIG{name}").parse().map_err(|_| bad())
}

/// Checks a spec before anything is started.
pub fn validate(spec: &ProcSpec) -> Result<(), ProcError> {
    if spec.path.trim().is_empty() {
        return Err(ProcError::Spec("the process spec has no Path".into()));
    }
    if let Some(bad) = spec.env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        return Err(ProcError::Spec(format!("Env entry {bad:?} is not NAME=VALUE")));
    }
    Ok(())
}

type InLock = Arc<tokio::sync::Mutex<Option<pipe::Sender>>>;
type OutLock = Arc<tokio::sync::Mutex<Option<pipe::Receiver>>>;

/// A process element. Shared by handle; its status is published by the reaper.
pub struct Proc {
    spec: ProcSpec,
    pid: Option<u32>,
    error: Option<String>,
    status: watch::Receiver<Status>,
    reaper: Arc<ReaperInner>,
    stdin: InLock,
    stdout: OutLock,
    stderr: OutLock,
    scrubbed: watch::Sender<bool>,
}

/// The right to write a process's stdin, held by one writer at a time.
pub struct StdinLease(OwnedMutexGuard<Option<pipe::Sender>>);

impl StdinLease {
    /// The pipe into the process.
    pub fn writer(&mut self) -> &mut pipe::Sender {
        self.0.as_mut().expect("a lease is only given for an open stdin")
    }

    /// Closes the process's stdin for good: it reads end of file.
    pub fn close(mut self) {
        self.0.take();
    }
}

impl crate::elements::streams::StdinLease for StdinLease {
    type Writer = pipe::Sender;

    fn writer(&mut self) -> Option<&mut pipe::Sender> {
        self.0.as_mut()
    }

    async fn close(&mut self) -> std::io::Result<()> {
        self.0.take();
        Ok(())
    }

    fn error(path: &circuit_proto::Path, end: crate::elements::streams::StdinEnd) -> circuit_proto::WireError {
        use crate::elements::streams::StdinEnd;
        let e = match end {
            StdinEnd::Aborted => ProcError::Aborted,
            StdinEnd::Closed => ProcError::Closed("stdin"),
            StdinEnd::Failed(what) => ProcError::Os(what),
        };
        circuit_proto::WireError::at(e.kind(), path, format!("{path}: {e}"))
    }
}

/// The right to read a process's stdout or stderr, held by one reader at a time.
pub struct OutLease(OwnedMutexGuard<Option<pipe::Receiver>>);

impl OutLease {
    /// The pipe out of the process.
    pub fn reader(&mut self) -> &mut pipe::Receiver {
        self.0.as_mut().expect("a lease is only given for an open stream")
    }
}

/// The server's end of a child's pipes.
struct Pipes {
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

fn pipes(child: &mut std::process::Child) -> std::io::Result<Pipes> {
    fn fd<T: Into<OwnedFd>>(s: Option<T>) -> std::io::Result<OwnedFd> {
        let fd: OwnedFd = s.ok_or_else(|| std::io::Error::other("pipe missing"))?.into();
        // Smaller than Linux's 64 KiB default; best effort (not on every kernel).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
        Ok(fd)
    }
    Ok(Pipes {
        stdin: pipe::Sender::from_owned_fd(fd(child.stdin.take())?)?,
        stdout: pipe::Receiver::from_owned_fd(fd(child.stdout.take())?)?,
        stderr: pipe::Receiver::from_owned_fd(fd(child.stderr.take())?)?,
    })
}

impl Proc {
    /// Starts `spec` (call [`validate`] first). Always returns an element;
    /// when the process could not start, [`Proc::spawn_error`] says why.
    /// Must run within the server's runtime.
    pub fn spawn(reaper: &Reaper, spec: ProcSpec) -> Arc<Proc> {
        let mut cmd = Command::new(spec.path.trim());
        cmd.args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if !spec.env.is_empty() {
            cmd.env_clear();
            for e in &spec.env {
                if let Some((k, v)) = e.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        if !spec.dir.is_empty() {
            cmd.current_dir(&spec.dir);
        }
        let (scrubbed, _) = watch::channel(false);
        let failed = |spec: ProcSpec, error: String| {
            let (_, status) = watch::channel(Status::lost(error.clone()));
            Arc::new(Proc {
                spec,
                pid: None,
                error: Some(error),
                status,
                reaper: reaper.inner.clone(),
                stdin: Arc::default(),
                stdout: Arc::default(),
                stderr: Arc::default(),
                scrubbed: scrubbed.clone(),
            })
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let error = match spec.dir.is_empty() {
                    true => format!("exec error: {}: {e}", spec.path.trim()),
                    false => format!("exec error: {} in {}: {e}", spec.path.trim(), spec.dir),
                };
                return failed(spec, error);
            }
        };
        let pid = child.id();
        // Registered before anything else can fail, so the child is always reaped.
        let status = reaper.inner.register(pid as i32);
        let pipes = match pipes(&mut child) {
            Ok(p) => p,
            Err(e) => {
                let _ = reaper.inner.kill(pid as i32, Signal::SIGKILL);
                return failed(spec, format!("exec error: setting up the pipes of pid {pid}: {e}"));
            }
        };
        // `std::process::Child` neither waits nor kills on drop: the reaper owns the pid.
        drop(child);
        Arc::new(Proc {
            spec,
            pid: Some(pid),
            error: None,
            status,
            reaper: reaper.inner.clone(),
            stdin: Arc::new(tokio::sync::Mutex::new(Some(pipes.stdin))),
            stdout: Arc::new(tokio::sync::Mutex::new(Some(pipes.stdout))),
            stderr: Arc::new(tokio::sync::Mutex::new(Some(pipes.stderr))),
            scrubbed,
        })
    }

    /// Why the process could not be started, if it could not.
    pub fn spawn_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The spec it was made with.
    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    /// Its OS process id, if it started.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Its status now.
    pub fn stat(&self) -> ProcStat {
        let s = self.status.borrow().clone();
        ProcStat {
            cmd: self.spec.clone(),
            phase: s.phase,
            pid: self.pid,
            exit: s.exit,
        }
    }

    /// Waits until the process has ended (at once if it has) and returns its
    /// final status; fails with [`ProcError::Aborted`] if scrubbed first.
    pub async fn wait(&self) -> Result<ProcStat, ProcError> {
        let mut status = self.status.clone();
        let mut scrubbed = self.scrubbed.subscribe();
        loop {
            if status.borrow_and_update().phase.is_final() {
                return Ok(self.stat());
            }
            if *scrubbed.borrow_and_update() {
                return Err(ProcError::Aborted);
            }
            tokio::select! {
                r = status.changed() => if r.is_err() {
                    // The reaper is gone: the server is stopping.
                    return Err(ProcError::Aborted);
                },
                _ = scrubbed.changed() => {}
            }
        }
    }

    /// Waits until the process has ended, scrubbed or not (a scrubbed
    /// process runs on, detached); `None` if it never started or the server
    /// is stopping.
    pub async fn ended(&self) -> Option<ProcStat> {
        self.pid?;
        let mut status = self.status.clone();
        status.wait_for(|s| s.phase.is_final()).await.ok()?;
        Some(self.stat())
    }

    /// Resolves once the element has been scrubbed.
    pub async fn scrubbed(&self) {
        let mut rx = self.scrubbed.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sends a signal, given as `TERM`, `SIGTERM`, `term` or `15`.
    pub fn signal(&self, name: &str) -> Result<Signal, ProcError> {
        let sig = parse_signal(name)?;
        let pid = self.pid.ok_or(ProcError::NotRunning)?;
        self.reaper.kill(pid as i32, sig)?;
        Ok(sig)
    }

    /// Takes the stdin for writing.
    pub fn stdin(&self) -> Result<StdinLease, ProcError> {
        let guard = self
            .stdin
            .clone()
            .try_lock_owned()
            .map_err(|_| ProcError::Busy("stdin", "writer"))?;
        if guard.is_none() {
            return Err(ProcError::Closed("stdin"));
        }
        Ok(StdinLease(guard))
    }

    /// Takes the stdout for reading.
    pub fn stdout(&self) -> Result<OutLease, ProcError> {
        Self::out(&self.stdout, "stdout")
    }

    /// Takes the stderr for reading.
    pub fn stderr(&self) -> Result<OutLease, ProcError> {
        Self::out(&self.stderr, "stderr")
    }

    fn out(lock: &OutLock, name: &'static str) -> Result<OutLease, ProcError> {
        let guard = lock
            .clone()
            .try_lock_owned()
            .map_err(|_| ProcError::Busy(name, "reader"))?;
        if guard.is_none() {
            return Err(ProcError::Closed(name));
        }
        Ok(OutLease(guard))
    }

    /// Detaches the process (see the module docs): waiters and streams are
    /// aborted, stdin, stdout and stderr are closed on our side. Must run
    /// within the server's runtime.
    pub fn scrub(&self) {
        if self.scrubbed.send_replace(true) {
            return;
        }
        let tasks = &self.reaper.tasks;
        let stdin = self.stdin.clone();
        tasks.spawn(async move {
            stdin.lock().await.take();
        });
        // Our ends of stdout and stderr close: the process meets a closed
        // pipe at its next write (SIGPIPE or EPIPE), exactly as when the
        // server stops. Draining them instead would burn a core for as long
        // as a fast writer runs, with no element left to find it.
        for out in [self.stdout.clone(), self.stderr.clone()] {
            tasks.spawn(async move {
                out.lock().await.take();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn spec(path: &str, args: &[&str]) -> ProcSpec {
        ProcSpec::new(path, args.iter().copied())
    }

    async fn read_all(p: &Proc) -> String {
        let mut lease = p.stdout().unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), lease.reader().read_to_string(&mut out))
            .await
            .expect("stdout reaches EOF")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn runs_reads_and_reaps() {
        let reaper = Reaper::start();
        let p = Proc::spawn(&reaper, spec("/bin/sh", &["-c", "echo out; echo err >&2; exit 3"]));
        assert!(p.spawn_error().is_none());
        assert_eq!(read_all(&p).await, "out\n");
        let mut err = String::new();
        p.stderr().unwrap().reader().read_to_string(&mut err).await.unwrap();
        assert_eq!(err, "err\n");
        let st = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.phase, ProcPhase::Exited);
        assert_eq!(st.exit.unwrap().code, 3);
        assert_eq!(reaper.live(), 0);
        // Reading after EOF is EOF again, not an error.
        assert_eq!(read_all(&p).await, "");
        assert!(matches!(p.signal("TERM"), Err(ProcError::NotRunning)));
    }

    #[tokio::test]
    async fn stdin_env_dir_and_one_reader() {
        let reaper = Reaper::start();
        let mut s = spec("/bin/sh", &["-c", "pwd; echo $GREETING; cat"]);
        s.env = vec!["GREETING=hello".into()];
        s.dir = "/".into();
        let p = Proc::spawn(&reaper, s);
        let lease = p.stdout().unwrap();
        assert!(matches!(p.stdout(), Err(ProcError::Busy("stdout", "reader"))));
        drop(lease);
        let mut w = p.stdin().unwrap();
        assert!(matches!(p.stdin(), Err(ProcError::Busy(..))));
        w.writer().write_all(b"typed\n").await.unwrap();
        w.close();
        assert!(matches!(p.stdin(), Err(ProcError::Closed("stdin"))));
        assert_eq!(read_all(&p).await, "/\nhello\ntyped\n");
    }

    #[tokio::test]
    async fn signals_stop_continue_and_kill() {
        let reaper = Reaper::start();
        let p = Proc::spawn(&reaper, spec("/bin/sleep", &["30"]));
        let phase = |p: &Proc| p.stat().phase;
        async fn until(p: &Proc, want: ProcPhase) {
            let mut rx = p.status.clone();
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.phase == want))
                .await
                .unwrap_or_else(|_| panic!("never reached {want}"))
                .unwrap();
        }
        assert_eq!(phase(&p), ProcPhase::Running);
        assert!(matches!(p.signal("NOPE"), Err(ProcError::BadSignal(_))));
        assert!(matches!(p.signal("99"), Err(ProcError::BadSignal(_))));
        p.signal("stop").unwrap();
        until(&p, ProcPhase::Stopped).await;
        p.signal("SIGCONT").unwrap();
        until(&p, ProcPhase::Continued).await;
        assert_eq!(p.signal("15").unwrap(), Signal::SIGTERM);
        let st = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.phase, ProcPhase::Signaled);
        assert_eq!(st.exit.as_ref().unwrap().signal, Some(15));
        assert_eq!(st.exit.unwrap().code, -1);
    }

    #[tokio::test]
    async fn spawn_errors_and_scrub() {
        let reaper = Reaper::start();
        let p = Proc::spawn(&reaper, spec("/nonexistent/program", &[]));
        let e = p.spawn_error().unwrap();
        assert!(e.starts_with("exec error: /nonexistent/program: No such file"), "{e}");
        let st = p.wait().await.unwrap();
        assert_eq!((st.phase, st.pid), (ProcPhase::Unknown, None));
        assert!(matches!(p.stdout(), Err(ProcError::Closed("stdout"))));
        assert!(validate(&spec(" ", &[])).is_err());
        let mut bad_env = spec("/bin/true", &[]);
        bad_env.env = vec!["NOEQUALS".into()];
        assert!(validate(&bad_env).is_err());

        let p = Proc::spawn(&reaper, spec("/bin/sleep", &["30"]));
        let pid = p.pid().unwrap();
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await })
        };
        tokio::task::yield_now().await;
        p.scrub();
        let r = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(ProcError::Aborted)));
        // Detached, not killed; then killed by us, and still reaped.
        assert_eq!(p.stat().phase, ProcPhase::Running);
        assert_eq!(reaper.live(), 1);
        nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        let mut rx = p.status.clone();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.phase.is_final()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reaper.live(), 0);
    }

    #[test]
    fn signal_names() {
        for s in ["TERM", "SIGTERM", "term", "sigterm", "15", " TERM "] {
            assert_eq!(parse_signal(s).unwrap(), Signal::SIGTERM, "{s}");
        }
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        for s in ["", "SIG", "FOO", "0", "-15", "1000"] {
            assert!(parse_signal(s).is_err(), "{s}");
        }
    }
}
