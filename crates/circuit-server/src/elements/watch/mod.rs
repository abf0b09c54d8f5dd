//! The watch element: keeps NumProcesses copies of a command running on this
//! server (Circus's watcher).
//!
//! - **Policy and shell.** What to do and when — respawns, flapping, graceful
//!   stop deadlines, MaxAge recycling, scaling — is decided by the pure
//!   [`policy::Policy`], given the time at each call. This module is the
//!   shell: one task per watcher owns its policy, spawns and signals the
//!   processes through the server's [`Reaper`](super::proc::Reaper) (no second
//!   SIGCHLD handler), sleeps until the policy's next deadline, and answers
//!   the element's requests by message.
//! - **Processes** are spawned in their own process group, with stdin on
//!   `/dev/null` and stdout and stderr where the spec says ([`output`]), as
//!   Uid/Gid with Rlimits ([`identity`]), with the server's environment plus
//!   Env (only Env when InheritEnv is false); `$(WID)` in Args and Env
//!   becomes the slot number. [`hooks`] run around starts and stops. The stop signal and SIGKILL go to the whole process group, so a
//!   shell's children go too; `signal` goes to each process alone.
//! - **Sockets** (the [`sockets`] module) are bound once when the watcher is
//!   made and inherited by every process; `$(socket.NAME.fd)` in Args and
//!   Env becomes their descriptor number. They close when the task ends.
//! - **Scrub** stops every process gracefully (stop signal, GracefulTimeout,
//!   SIGKILL); the task ends once all of them have been reaped, and
//!   [`Watch::scrub`]'s future resolves then. Dropping the last handle does
//!   the same. The task and the output readers run on the server's task
//!   tracker (stopping the server waits for them) and on the watcher's own.
//! - **Time** is the server's [`Clock`]: the policy's instants come from it
//!   and the task sleeps on it, so the tests below run on a paused clock.

pub(crate) mod ops;

pub mod hooks;
pub mod identity;
pub mod output;
pub mod policy;
pub mod sockets;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use circuit_proto::{
    ErrorKind, EventKind, ProcExit, ProcPhase, ScaleOp, WatchAction, WatchEvent, WatchProcStat, WatchSpec, WatchStat,
    WatchState,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use self::policy::{Action, Flap, Note, Params, Phase, Policy};
use super::proc::{ReaperHandle, parse_signal};
use super::{Runtime, Scrubbed};
use crate::clock::Clock;

/// The most processes one watcher may keep running.
pub const MAX_PROCESSES: u32 = 10_000;

/// What can go wrong with a watch element.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The spec cannot be run.
    #[error("{0}")]
    Spec(String),
    /// The first processes could not be started.
    #[error("{0}")]
    Spawn(String),
    /// Not a signal this server knows.
    #[error("signal {0:?} not recognized; give a name like TERM or SIGTERM, or a number like 15")]
    BadSignal(String),
    /// The watcher has no process to signal.
    #[error("the watcher has no running process to signal")]
    NotRunning,
    /// The watcher was scrubbed.
    #[error("aborted: the watcher was scrubbed")]
    Aborted,
}

impl WatchError {
    /// The wire class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            WatchError::Spec(_) | WatchError::BadSignal(_) => ErrorKind::Invalid,
            WatchError::Spawn(_) => ErrorKind::Io,
            WatchError::NotRunning => ErrorKind::Closed,
            WatchError::Aborted => ErrorKind::Aborted,
        }
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, WatchError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| WatchError::Spec(format!("{name} must be a number of seconds ≥ 0, not {v}")))
}

/// Checks a spec and turns it into the policy's parameters and the stop signal.
pub fn validate(spec: &WatchSpec) -> Result<(Params, Signal), WatchError> {
    if spec.path.trim().is_empty() {
        return Err(WatchError::Spec("the watch spec has no Path".into()));
    }
    if let Some(bad) = spec.env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        return Err(WatchError::Spec(format!("Env entry {bad:?} is not NAME=VALUE")));
    }
    if spec.num_processes > MAX_PROCESSES {
        return Err(WatchError::Spec(format!(
            "NumProcesses is {}; a watcher keeps at most {MAX_PROCESSES}",
            spec.num_processes
        )));
    }
    sockets::validate(spec)?;
    let stop = parse_signal(&spec.stop_signal).map_err(|_| WatchError::BadSignal(spec.stop_signal.clone()))?;
    let max_age = seconds("MaxAge", spec.max_age)?;
    let f = &spec.flapping;
    Ok((
        Params {
            numprocs: spec.num_processes,
            respawn: spec.respawn,
            warmup: seconds("WarmupDelay", spec.warmup_delay)?,
            graceful: seconds("GracefulTimeout", spec.graceful_timeout)?,
            max_age: (!max_age.is_zero()).then_some(max_age),
            flap: Flap {
                attempts: f.attempts,
                window: seconds("Flapping.Window", f.window)?,
                retry_in: seconds("Flapping.RetryIn", f.retry_in)?,
                max_retry: f.max_retry,
            },
        },
        stop,
    ))
}

enum Cmd {
    Ctl(WatchAction, oneshot::Sender<()>),
    Scale(ScaleOp, oneshot::Sender<Result<u32, WatchError>>),
    Signal(Signal, oneshot::Sender<Result<usize, WatchError>>),
    Peek(oneshot::Sender<WatchStat>),
    Release,
    Scrub,
}

/// Where a watcher's tasks run: on the server's tracker, so that stopping
/// the server waits for them, and on the watcher's own, so that its scrub
/// does.
#[derive(Clone)]
pub struct Tasks {
    server: TaskTracker,
    own: TaskTracker,
    /// Cancelled when the watcher's task ends: its helpers end too.
    over: CancellationToken,
}

impl Tasks {
    fn new(server: &TaskTracker) -> Tasks {
        Tasks {
            server: server.clone(),
            own: TaskTracker::new(),
            over: CancellationToken::new(),
        }
    }

    /// Runs `f` as one of the watcher's tasks.
    pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.server.spawn(self.own.track_future(f));
    }

    /// Resolves once every task of the watcher has ended.
    async fn ended(self) {
        self.own.close();
        self.own.wait().await;
    }
}

/// A watch element: a handle on its task. [`Watch::scrub`], or dropping the
/// last handle, stops every process gracefully; the task ends once all of
/// them have been reaped.
pub struct Watch {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Its task and helpers.
    tasks: Tasks,
    /// Its GracefulTimeout, for the server's stop deadline.
    graceful: Duration,
    /// (WID, pid) of the running processes, as the task last published them.
    live: Arc<Mutex<Vec<(u32, u32)>>>,
    /// The processes' kept output (rings, log files).
    outputs: Arc<output::Outputs>,
    /// Releases the sockets for a hand-over as soon as the handle goes
    /// (the watcher is scrubbed), before its processes are gone.
    _sockets: sockets::Released,
}

/// A running process, as the shell knows it beyond the policy.
struct Proc {
    started: SystemTime,
    /// Last CPU sample: when, and the process's ticks then.
    cpu: Option<(Instant, u64)>,
}

type Ended = Pin<Box<dyn Future<Output = (u32, Option<ProcExit>)> + Send>>;

/// Where a watcher reports its events (spawned, exited, respawned,
/// flapping, …); the server's event bus, in practice.
pub type Emit = Box<dyn Fn(EventKind) + Send + Sync>;

/// The watcher's task state.
struct Shell {
    name: String,
    spec: WatchSpec,
    stop: Signal,
    policy: Policy,
    reaper: ReaperHandle,
    clock: Clock,
    tasks: Tasks,
    procs: HashMap<u32, Proc>,
    ended: FuturesUnordered<Ended>,
    live: Arc<Mutex<Vec<(u32, u32)>>>,
    emit: Emit,
    /// Events held back until [`Watch::release`] (the element is in place).
    held: Option<Vec<EventKind>>,
    /// The listening sockets its processes inherit; closed when the task ends.
    sockets: sockets::Sockets,
    /// Uid, Gid and Rlimits of the processes.
    identity: identity::Identity,
    /// Where their stdout and stderr go.
    outputs: Arc<output::Outputs>,
}

impl Watch {
    /// Checks `spec`, starts its processes and the watcher's task (on
    /// `ctx`'s tracker, spawning through its reaper). `name` (the path) is
    /// for logs; events go to `emit`, held back until [`Watch::release`] (so
    /// that they follow the element's own `created`). Fails, leaving nothing
    /// behind, if the spec is invalid or a first process cannot be started
    /// (with start hooks, the first starts are the task's: see [`hooks`]).
    /// Must run within the server's runtime.
    pub fn start(ctx: &Runtime, name: String, spec: WatchSpec, emit: Emit) -> Result<Watch, WatchError> {
        let (params, stop) = validate(&spec)?;
        let graceful = params.graceful;
        let sockets = sockets::Sockets::bind(&spec.sockets)?;
        output::check(&spec)?;
        let identity = identity::Identity::resolve(&spec.uid, &spec.gid, &spec.rlimits)?;
        let outputs = output::Outputs::new(&spec);
        let mut shell = Shell {
            name,
            spec,
            stop,
            policy: Policy::new(params),
            reaper: ctx.reaper.clone(),
            clock: ctx.clock,
            tasks: Tasks::new(&ctx.tasks),
            procs: HashMap::new(),
            ended: FuturesUnordered::new(),
            live: Arc::default(),
            emit,
            held: Some(Vec::new()),
            sockets,
            identity,
            outputs: outputs.clone(),
        };
        let now = shell.clock.now();
        let actions = shell.policy.start(now);
        let hooked = !shell.spec.hooks.before_start.is_empty() || !shell.spec.hooks.after_start.is_empty();
        let first = if hooked {
            // Hooks are awaited: the task runs them, then starts.
            actions
        } else {
            // Without a hook to wait for, starting never awaits.
            let started = futures::FutureExt::now_or_never(shell.carry_out(actions, true));
            if let Some(Err(e)) = started {
                // Nothing stays: whatever did start is killed, and reaped by the reaper.
                for pid in shell.procs.keys() {
                    let _ = shell.reaper.signal(*pid, Signal::SIGKILL, true);
                }
                return Err(e);
            }
            Vec::new()
        };
        info!(op = "mkwatch", watch = %shell.name, cmd = %shell.spec.path, n = shell.spec.num_processes, "watching");
        shell.publish();
        let live = shell.live.clone();
        let released = shell.sockets.released_on_drop();
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = shell.tasks.clone();
        tasks.spawn(shell.run(first, rx));
        Ok(Watch {
            tx,
            tasks,
            graceful,
            live,
            outputs,
            _sockets: released,
        })
    }

    /// Stops every process gracefully (stop signal, GracefulTimeout,
    /// SIGKILL) and ends the watcher; the future resolves once every
    /// process has been reaped and every task of the watcher has ended.
    /// Requests still waiting on it fail as aborted.
    pub fn scrub(&self) -> Scrubbed {
        let _ = self.tx.send(Cmd::Scrub);
        Scrubbed::when(self.tasks.clone().ended())
    }

    /// Its GracefulTimeout.
    pub fn graceful_timeout(&self) -> Duration {
        self.graceful
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, WatchError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(cmd(tx)).map_err(|_| WatchError::Aborted)?;
        rx.await.map_err(|_| WatchError::Aborted)
    }

    /// Start, stop, restart or reload.
    pub async fn control(&self, action: WatchAction) -> Result<(), WatchError> {
        self.ask(|tx| Cmd::Ctl(action, tx)).await
    }

    /// Reads or changes the process count; returns the count after.
    pub async fn scale(&self, op: ScaleOp) -> Result<u32, WatchError> {
        self.ask(|tx| Cmd::Scale(op, tx)).await?
    }

    /// Sends a signal (`TERM`, `SIGHUP`, `15`, …) to every running process;
    /// returns how many got it.
    pub async fn signal(&self, name: &str) -> Result<usize, WatchError> {
        let sig = parse_signal(name).map_err(|_| WatchError::BadSignal(name.to_string()))?;
        self.ask(|tx| Cmd::Signal(sig, tx)).await?
    }

    /// The watcher's status, with CPU and memory of each process.
    pub async fn stat(&self) -> Result<WatchStat, WatchError> {
        self.ask(Cmd::Peek).await
    }

    /// Lets the events held since [`Watch::start`] go, then every later one.
    pub fn release(&self) {
        let _ = self.tx.send(Cmd::Release);
    }

    /// (WID, pid) of each running process (not those being stopped), by WID.
    pub fn processes(&self) -> Vec<(u32, u32)> {
        self.live.lock().unwrap().clone()
    }

    /// The rings of the processes' stdout (or stderr), each line prefixed
    /// by `[WID] `; fails unless the spec keeps that stream in rings.
    pub fn output(&self, stderr: bool) -> Result<Vec<u8>, WatchError> {
        let name = if stderr { "Stderr" } else { "Stdout" };
        if !self.outputs.has_ring(stderr) {
            return Err(WatchError::Spec(format!(
                "the watcher does not keep its processes' {} (its spec needs \"{name}\": {{\"Ring\": BYTES}})",
                name.to_ascii_lowercase()
            )));
        }
        Ok(self.outputs.dump(stderr))
    }
}

impl Shell {
    /// Carries out the policy's actions, feeding spawn results back to it.
    /// With `strict`, the first spawn error stops and is returned.
    async fn carry_out(&mut self, actions: Vec<Action>, strict: bool) -> Result<(), WatchError> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Spawn { wid } => {
                    if !self.hook(hooks::Hook::BeforeStart, wid).await {
                        let now = self.clock.now();
                        queue.extend(self.policy.spawn_failed(wid, now));
                        continue;
                    }
                    let mut cmd = self.command(wid);
                    let spawned = self
                        .outputs
                        .pipe(&mut cmd)
                        .and_then(|pipes| Ok((self.reaper.spawn(&mut cmd)?, pipes)));
                    drop(cmd);
                    let now = self.clock.now();
                    match spawned {
                        Ok((child, pipes)) => {
                            self.outputs.attach(wid, pipes, &self.tasks);
                            let pid = child.pid();
                            info!(op = "spawn", watch = %self.name, wid, pid, "started");
                            self.report(EventKind::Spawned { pid });
                            self.policy.spawned(wid, pid, now);
                            self.procs.insert(
                                pid,
                                Proc {
                                    started: SystemTime::now(),
                                    cpu: None,
                                },
                            );
                            self.ended.push(Box::pin(child.ended()));
                            self.hook(hooks::Hook::AfterStart, wid).await;
                        }
                        Err(e) => {
                            let error = match self.spec.dir.is_empty() {
                                true => format!("exec error: {}: {e}", self.spec.path.trim()),
                                false => format!("exec error: {} in {}: {e}", self.spec.path.trim(), self.spec.dir),
                            };
                            if strict {
                                return Err(WatchError::Spawn(error));
                            }
                            warn!(op = "spawn", watch = %self.name, wid, %error, "cannot start");
                            self.report(EventKind::Watch(WatchEvent::SpawnFailed { wid, error }));
                            queue.extend(self.policy.spawn_failed(wid, now));
                        }
                    }
                }
                Action::Stop { pid } => {
                    if let Some(wid) = self.policy.running().iter().find(|r| r.pid == pid).map(|r| r.wid) {
                        self.hook(hooks::Hook::BeforeStop, wid).await;
                    }
                    info!(op = "stop", watch = %self.name, pid, signal = %self.stop, "stopping gracefully");
                    let _ = self.reaper.signal(pid, self.stop, true);
                }
                Action::Kill { pid } => {
                    warn!(op = "kill", watch = %self.name, pid, "graceful timeout over; SIGKILL");
                    self.report(EventKind::Watch(WatchEvent::Killed {
                        pid,
                        reason: "graceful timeout".into(),
                    }));
                    let _ = self.reaper.signal(pid, Signal::SIGKILL, true);
                }
                Action::Note(note) => self.log(note),
            }
        }
        Ok(())
    }

    fn report(&mut self, event: EventKind) {
        match &mut self.held {
            Some(held) => held.push(event),
            None => (self.emit)(event),
        }
    }

    /// Logs a step of the policy and reports it as an event.
    fn log(&mut self, note: Note) {
        let name = self.name.clone();
        let event = match note {
            Note::Respawn { wid, restarts, at } => {
                let delay = at.saturating_duration_since(self.clock.now());
                info!(op = "respawn", watch = %name, wid, restarts, ?delay, "respawning");
                EventKind::Watch(WatchEvent::Respawned {
                    wid,
                    restarts,
                    in_secs: delay.as_secs_f64(),
                })
            }
            Note::Flapping { retries, until } => {
                let pause = until.saturating_duration_since(self.clock.now());
                warn!(op = "flapping", watch = %name, retries, ?pause, "flapping: paused");
                EventKind::Watch(WatchEvent::Flapping {
                    retries,
                    retry_in: Some(pause.as_secs_f64()),
                })
            }
            Note::GaveUp { retries } => {
                warn!(op = "flapping", watch = %name, retries, "flapping: no retry left, stopped");
                EventKind::Watch(WatchEvent::Flapping {
                    retries,
                    retry_in: None,
                })
            }
            Note::Resumed { retries } => {
                info!(op = "resume", watch = %name, retries, "flapping pause over");
                EventKind::Watch(WatchEvent::Resumed { retries })
            }
            Note::Recycled { wid, pid } => {
                info!(op = "recycle", watch = %name, wid, pid, "MaxAge reached");
                EventKind::Watch(WatchEvent::Recycled { wid, pid })
            }
        };
        self.report(event);
    }

    fn command(&self, wid: u32) -> Command {
        let w = wid.to_string();
        let sub = |s: &String| self.sockets.substitute(&s.replace("$(WID)", &w));
        let mut cmd = Command::new(self.spec.path.trim());
        cmd.args(self.spec.args.iter().map(sub))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if !self.spec.inherit_env {
            cmd.env_clear();
        }
        for e in self.spec.env.iter().map(sub) {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        if !self.spec.dir.is_empty() {
            cmd.current_dir(&self.spec.dir);
        }
        self.identity.apply(&mut cmd);
        self.sockets.inherit(&mut cmd);
        cmd
    }

    /// The watcher's task: carries out `first` (the first starts, when they
    /// wait for hooks), then serves `rx` until scrubbed (or the last handle
    /// is gone) and every process has been reaped.
    async fn run(mut self, first: Vec<Action>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let _ = self.carry_out(first, false).await;
        self.publish();
        let mut scrubbed = false;
        loop {
            if scrubbed && self.policy.idle() {
                info!(op = "scrub", watch = %self.name, "every process is gone");
                self.tasks.over.cancel();
                return;
            }
            let deadline = self.policy.next_deadline();
            let clock = self.clock;
            let sleep = async {
                match deadline {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let actions = tokio::select! {
                cmd = rx.recv(), if !scrubbed => match cmd {
                    Some(Cmd::Scrub) | None => {
                        scrubbed = true;
                        // Requests sent from now on, or queued, fail as aborted.
                        rx.close();
                        while rx.try_recv().is_ok() {}
                        self.sockets.release();
                        info!(op = "scrub", watch = %self.name, "stopping every process");
                        self.policy.stop(self.clock.now())
                    }
                    Some(cmd) => self.serve(cmd),
                },
                Some((pid, exit)) = self.ended.next(), if !self.ended.is_empty() => {
                    self.procs.remove(&pid);
                    let stopped = self.policy.running().iter().find(|r| r.pid == pid && r.kill_at.is_some()).map(|r| r.wid);
                    info!(op = "exit", watch = %self.name, pid, exit = ?exit, "process ended");
                    self.report(exited(pid, exit.as_ref()));
                    if let Some(wid) = stopped {
                        self.hook(hooks::Hook::AfterStop, wid).await;
                    }
                    self.policy.exited(pid, self.clock.now())
                }
                _ = sleep => self.policy.tick(self.clock.now()),
            };
            let _ = self.carry_out(actions, false).await;
            self.publish();
        }
    }

    fn publish(&self) {
        let mut live: Vec<(u32, u32)> = self
            .policy
            .running()
            .iter()
            .filter(|r| r.kill_at.is_none())
            .map(|r| (r.wid, r.pid))
            .collect();
        live.sort();
        *self.live.lock().unwrap() = live;
    }

    fn serve(&mut self, cmd: Cmd) -> Vec<Action> {
        let now = self.clock.now();
        match cmd {
            Cmd::Ctl(action, tx) => {
                info!(op = "watch", watch = %self.name, action = action.name(), "control");
                self.report(EventKind::Watch(WatchEvent::Control {
                    action: action.name().into(),
                }));
                let actions = match action {
                    WatchAction::Start => self.policy.start(now),
                    WatchAction::Stop => self.policy.stop(now),
                    WatchAction::Restart => self.policy.restart(now),
                    WatchAction::Reload => self.policy.reload(now),
                };
                let _ = tx.send(());
                actions
            }
            Cmd::Scale(op, tx) => {
                let n = self.policy.numprocs();
                let want = match op {
                    ScaleOp::Get => n,
                    ScaleOp::Set(m) => m,
                    ScaleOp::Incr(d) => n.saturating_add(d),
                    ScaleOp::Decr(d) => n.saturating_sub(d),
                };
                if want > MAX_PROCESSES {
                    let _ = tx.send(Err(WatchError::Spec(format!(
                        "cannot keep {want} processes; a watcher keeps at most {MAX_PROCESSES}"
                    ))));
                    return Vec::new();
                }
                let actions = if want != n {
                    info!(op = "numprocs", watch = %self.name, from = n, to = want, "scaling");
                    self.report(EventKind::Watch(WatchEvent::NumProcs { from: n, to: want }));
                    self.spec.num_processes = want;
                    self.policy.set_numprocs(want, now)
                } else {
                    Vec::new()
                };
                let _ = tx.send(Ok(want));
                actions
            }
            Cmd::Signal(sig, tx) => {
                let mut sent = 0;
                for r in self.policy.running().iter().filter(|r| r.kill_at.is_none()) {
                    if self.reaper.signal(r.pid, sig, false).is_ok() {
                        sent += 1;
                    }
                }
                info!(op = "signal", watch = %self.name, signal = %sig, processes = sent, "signalled");
                let _ = tx.send(if sent == 0 {
                    Err(WatchError::NotRunning)
                } else {
                    Ok(sent)
                });
                Vec::new()
            }
            Cmd::Peek(tx) => {
                let _ = tx.send(self.stat(now));
                Vec::new()
            }
            Cmd::Release => {
                for event in self.held.take().unwrap_or_default() {
                    (self.emit)(event);
                }
                Vec::new()
            }
            // Handled by the task's loop.
            Cmd::Scrub => Vec::new(),
        }
    }

    fn stat(&mut self, now: Instant) -> WatchStat {
        let mut processes = Vec::new();
        for r in self.policy.running().iter().filter(|r| r.kill_at.is_none()) {
            let (cpu_percent, rss_bytes) = match (self.procs.get_mut(&r.pid), sample(r.pid)) {
                (Some(p), Some(s)) => {
                    let (since, before) = p.cpu.unwrap_or((r.started, 0));
                    let secs = now.saturating_duration_since(since).as_secs_f64();
                    let used = s.cpu_ticks.saturating_sub(before) as f64 / s.ticks_per_sec;
                    p.cpu = Some((now, s.cpu_ticks));
                    let pct = if secs > 0.0 { used / secs * 100.0 } else { 0.0 };
                    ((pct * 10.0).round() / 10.0, s.rss_bytes)
                }
                _ => (0.0, 0),
            };
            let started = self
                .procs
                .get(&r.pid)
                .map(|p| p.started)
                .unwrap_or_else(SystemTime::now);
            processes.push(WatchProcStat {
                wid: r.wid,
                pid: r.pid,
                started_at: rfc3339(started),
                restarts: r.restarts,
                cpu_percent,
                rss_bytes,
            });
        }
        processes.sort_by_key(|p| (p.wid, p.pid));
        WatchStat {
            spec: self.spec.clone(),
            state: match self.policy.phase() {
                Phase::Active => WatchState::Active,
                Phase::Stopped => WatchState::Stopped,
                Phase::Flapping => WatchState::Flapping,
            },
            retries: self.policy.retries(),
            processes,
            sockets: self.sockets.stat(),
        }
    }
}

impl Drop for Shell {
    /// The task is dropped with processes left only when the server's
    /// runtime shuts down before they are gone (the server waits for its
    /// watchers' graceful stops, but no longer than its deadline): there is
    /// no time left to wait, so each gets the stop signal now.
    fn drop(&mut self) {
        for r in self.policy.running() {
            let _ = self.reaper.signal(r.pid, self.stop, true);
        }
    }
}

/// The `exited` event of a reaped process.
fn exited(pid: u32, exit: Option<&ProcExit>) -> EventKind {
    let phase = match exit {
        None => ProcPhase::Unknown,
        Some(e) if e.signal.is_some() => ProcPhase::Signaled,
        Some(_) => ProcPhase::Exited,
    };
    EventKind::Exited {
        pid: Some(pid),
        phase,
        code: exit.map_or(-1, |e| e.code),
        signal: exit.and_then(|e| e.signal),
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// CPU time and resident memory of a process, from /proc.
struct Sample {
    cpu_ticks: u64,
    ticks_per_sec: f64,
    rss_bytes: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let sc = |v| nix::unistd::sysconf(v).ok().flatten().filter(|&n| n > 0);
    let ticks_per_sec = sc(nix::unistd::SysconfVar::CLK_TCK).unwrap_or(100) as f64;
    let page = sc(nix::unistd::SysconfVar::PAGE_SIZE).unwrap_or(4096) as u64;
    Some(Sample {
        cpu_ticks: utime + stime,
        ticks_per_sec,
        rss_bytes: resident * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        assert!(validate(&WatchSpec::new("/bin/true", Vec::<String>::new())).is_ok());
        assert!(matches!(
            validate(&WatchSpec::new(" ", Vec::<String>::new())),
            Err(WatchError::Spec(_))
        ));
        let mut s = WatchSpec::new("/bin/true", Vec::<String>::new());
        s.stop_signal = "NOPE".into();
        assert!(matches!(validate(&s), Err(WatchError::BadSignal(_))));
        let mut s = WatchSpec::new("/bin/true", Vec::<String>::new());
        s.graceful_timeout = -1.0;
        assert!(validate(&s).unwrap_err().to_string().contains("GracefulTimeout"));
        let mut s = WatchSpec::new("/bin/true", Vec::<String>::new());
        s.max_age = 2.5;
        assert_eq!(validate(&s).unwrap().0.max_age, Some(Duration::from_millis(2500)));
        s.num_processes = MAX_PROCESSES + 1;
        assert!(validate(&s).unwrap_err().to_string().contains("at most"));
    }

    /// A watcher of `sh -c script` on its own reaper and tracker, its
    /// events collected with the (paused) clock's time of each.
    struct Harness {
        watch: Option<Watch>,
        ctx: Runtime,
        events: mpsc::UnboundedReceiver<(Instant, EventKind)>,
        _reaper: super::super::proc::Reaper,
    }

    impl Harness {
        fn start(script: &str, tune: impl FnOnce(&mut WatchSpec)) -> Harness {
            let reaper = super::super::proc::Reaper::start();
            let ctx = Runtime::new(reaper.handle());
            let (tx, events) = mpsc::unbounded_channel();
            let clock = ctx.clock;
            let emit: Emit = Box::new(move |e| {
                let _ = tx.send((clock.now(), e));
            });
            let mut spec = WatchSpec::new("/bin/sh", ["-c", script]);
            tune(&mut spec);
            let watch = Watch::start(&ctx, "/X1/w".into(), spec, emit).expect("the watcher starts");
            watch.release();
            Harness {
                watch: Some(watch),
                ctx,
                events,
                _reaper: reaper,
            }
        }

        fn watch(&self) -> &Watch {
            self.watch.as_ref().expect("not dropped")
        }

        /// The next event named `name` (skipping others), and when it came.
        async fn next(&mut self, name: &str) -> (Instant, EventKind) {
            for _ in 0..10_000 {
                let (at, e) = self.events.recv().await.expect("the watcher reports events");
                if e.name() == name {
                    return (at, e);
                }
            }
            panic!("no {name} event in 10000");
        }
    }

    /// A field of an event, as its JSON line shows it.
    fn field(e: &EventKind, key: &str) -> serde_json::Value {
        let ev = circuit_proto::Event {
            time: String::new(),
            server: circuit_proto::ServerId(0),
            path: circuit_proto::Path::root(),
            kind: e.clone(),
        };
        ev.to_json()[key].clone()
    }

    fn ignores_term(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
                .is_some_and(|m| m & (1 << 14) != 0)
        })
    }

    /// Waits (a few ms at a time, bounded) until the watcher's process has
    /// set SIGTERM aside, and returns its pid. A real wait: the clock is
    /// paused, and the shell's trap runs in real time.
    fn stubborn_pid(w: &Watch) -> u32 {
        for _ in 0..2_500 {
            if let Some(&(_, pid)) = w.processes().first()
                && ignores_term(pid)
            {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the process never ignored SIGTERM");
    }

    fn gone(pid: u32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    /// Runs `body` on a current-thread runtime whose clock starts paused
    /// (as `#[tokio::test(start_paused = true)]` does), in a thread of its
    /// own, and fails the test past 30 real seconds: a paused clock cannot
    /// bound the test itself, since it jumps past any timeout as soon as
    /// every task waits on a real process. Real processes on a paused
    /// clock: deterministic only where no deadline races a process (a
    /// process that exits on SIGTERM would race its SIGKILL), hence the
    /// processes here exit at once or ignore SIGTERM.
    fn on_paused_clock<F: Future<Output = ()> + 'static>(body: impl FnOnce() -> F + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body())));
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the test ran more than 30 real seconds"),
        }
    }

    #[test]
    fn respawn_delay_on_a_paused_clock() {
        on_paused_clock(|| async {
            let real = std::time::Instant::now();
            let mut h = Harness::start("exit 1", |s| {
                s.warmup_delay = 3.0;
                s.flapping.attempts = 1000;
            });
            let (t0, _) = h.next("spawned").await;
            let mut last = t0;
            for restarts in 1..=3u64 {
                let (exited, e) = h.next("exited").await;
                assert!(matches!(e, EventKind::Exited { code: 1, .. }), "{e:?}");
                let (_, note) = h.next("respawned").await;
                assert_eq!(field(&note, "Restarts"), restarts);
                assert_eq!(field(&note, "In"), 3.0);
                let (spawned, _) = h.next("spawned").await;
                let delay = spawned - exited;
                assert!(
                    delay >= Duration::from_secs(3) && delay < Duration::from_millis(3100),
                    "respawned after {delay:?}"
                );
                last = spawned;
            }
            let covered = last - t0;
            assert!(covered >= Duration::from_secs(9), "{covered:?}");
            // The delays were the clock's, not real sleeps.
            assert!(real.elapsed() < covered, "{:?} real for {covered:?}", real.elapsed());
            h.watch().scrub().await;
        });
    }

    #[test]
    fn flapping_pauses_resumes_and_gives_up_on_a_paused_clock() {
        on_paused_clock(|| async {
            let mut h = Harness::start("exit 1", |s| {
                s.flapping.attempts = 2;
                s.flapping.window = 5.0;
                s.flapping.retry_in = 60.0;
                s.flapping.max_retry = 1;
            });
            let (paused_at, flap) = h.next("flapping").await;
            assert_eq!(field(&flap, "State"), "paused");
            assert_eq!(field(&flap, "Retries"), 1);
            assert_eq!(field(&flap, "RetryIn"), 60.0);
            let stat = h.watch().stat().await.unwrap();
            assert_eq!((stat.state, stat.retries), (WatchState::Flapping, 1));
            let (resumed_at, _) = h.next("resumed").await;
            assert_eq!(resumed_at - paused_at, Duration::from_secs(60));
            let (_, flap) = h.next("flapping").await;
            assert_eq!(field(&flap, "State"), "stopped");
            let stat = h.watch().stat().await.unwrap();
            assert_eq!((stat.state, stat.retries), (WatchState::Stopped, 1));
            assert!(stat.processes.is_empty());
            h.watch().scrub().await;
        });
    }

    #[test]
    fn graceful_timeout_then_sigkill_on_a_paused_clock() {
        on_paused_clock(|| async {
            let mut h = Harness::start("trap '' TERM; exec sleep 1000", |s| s.graceful_timeout = 5.0);
            let pid = stubborn_pid(h.watch());
            let t0 = h.ctx.clock.now();
            h.watch().control(WatchAction::Stop).await.unwrap();
            let (killed_at, killed) = h.next("killed").await;
            assert_eq!(field(&killed, "Pid"), pid);
            assert_eq!(killed_at - t0, Duration::from_secs(5));
            let (_, e) = h.next("exited").await;
            assert!(
                matches!(e, EventKind::Exited { pid: Some(p), signal: Some(9), .. } if p == pid),
                "{e:?}"
            );
            assert!(gone(pid), "reaped");
            assert_eq!(h.watch().stat().await.unwrap().state, WatchState::Stopped);

            // Scrub is graceful the same way, and its future ends with the processes.
            h.watch().control(WatchAction::Start).await.unwrap();
            let pid = stubborn_pid(h.watch());
            let t0 = h.ctx.clock.now();
            h.watch().scrub().await;
            assert_eq!(h.ctx.clock.now() - t0, Duration::from_secs(5));
            assert!(gone(pid), "reaped before the scrub was over");
            let (_, killed) = h.next("killed").await;
            assert_eq!(field(&killed, "Pid"), pid);
            assert!(matches!(h.watch().stat().await, Err(WatchError::Aborted)));
        });
    }

    #[test]
    fn a_dropped_watcher_still_stops_gracefully() {
        on_paused_clock(|| async {
            let mut h = Harness::start("trap '' TERM; exec sleep 1000", |s| {
                s.graceful_timeout = 5.0;
                s.num_processes = 1;
            });
            let pid = stubborn_pid(h.watch());
            let t0 = h.ctx.clock.now();
            drop(h.watch.take());
            // Its task runs on the tracker until every process is reaped.
            h.ctx.tasks.close();
            h.ctx.tasks.wait().await;
            assert_eq!(h.ctx.clock.now() - t0, Duration::from_secs(5));
            assert!(gone(pid));
            let (_, killed) = h.next("killed").await;
            assert_eq!(field(&killed, "Pid"), pid);
            let (_, e) = h.next("exited").await;
            assert!(matches!(e, EventKind::Exited { signal: Some(9), .. }), "{e:?}");
        });
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("/proc of ourselves");
        assert!(s.rss_bytes > 0);
        assert!(s.ticks_per_sec > 0.0);
        assert!(sample(u32::MAX).is_none());
    }
}
