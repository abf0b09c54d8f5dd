//! The watcher's policy as plain data and functions: which slots to
//! (re)spawn and when, flapping windows and retries, graceful-stop deadlines,
//! recycling after MaxAge. No I/O and no clock: every call takes `now`, and
//! the answer is a list of [`Action`]s for the shell to carry out, plus
//! [`Policy::next_deadline`], the instant at which [`Policy::tick`] has
//! something to do. So it is tested with made-up instants, without sleeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A spawn that failed is retried no sooner than this, whatever the
/// WarmupDelay, so a command that cannot start does not spin.
pub const SPAWN_RETRY: Duration = Duration::from_millis(100);

/// Flapping detection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    /// Restarts tolerated within `window`; one more is a flap.
    pub attempts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// The pause after a flap.
    pub retry_in: Duration,
    /// Pauses allowed; the flap after the last one stops the watcher.
    pub max_retry: u32,
}

/// What the policy needs of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Copies to keep running.
    pub numprocs: u32,
    /// Replace a process that exits.
    pub respawn: bool,
    /// Delay before a respawn.
    pub warmup: Duration,
    /// Stop signal to SIGKILL.
    pub graceful: Duration,
    /// Recycle a process after this long.
    pub max_age: Option<Duration>,
    /// Flapping detection.
    pub flap: Flap,
}

/// Where the watcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keeping its processes running.
    Active,
    /// Stopped on request, or for good after flapping.
    Stopped,
    /// Paused after a flap, until `resume_at`.
    Flapping,
}

/// Something worth a log line (and, later, an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Slot `wid` will be respawned (its `restarts`-th time) at `at`.
    Respawn { wid: u32, restarts: u32, at: Instant },
    /// A flap: paused until `until`; `retries` pauses so far.
    Flapping { retries: u32, until: Instant },
    /// A flap with no retry left: stopped for good.
    GaveUp { retries: u32 },
    /// Active again after a pause.
    Resumed { retries: u32 },
    /// Process `pid` of slot `wid` reached MaxAge and is replaced.
    Recycled { wid: u32, pid: u32 },
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a process for slot `wid`; then call [`Policy::spawned`] or
    /// [`Policy::spawn_failed`].
    Spawn { wid: u32 },
    /// Send the stop signal to `pid` (its process group).
    Stop { pid: u32 },
    /// SIGKILL `pid` (its process group): its graceful timeout is over.
    Kill { pid: u32 },
    /// Log it.
    Note(Note),
}

/// A process the watcher started and that has not been reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its slot.
    pub wid: u32,
    /// Its pid.
    pub pid: u32,
    /// When it started.
    pub started: Instant,
    /// Respawns of its slot when it started.
    pub restarts: u32,
    /// When it is being stopped: the instant of its SIGKILL.
    pub kill_at: Option<Instant>,
    /// SIGKILL sent.
    pub killed: bool,
}

impl Running {
    fn stopping(&self) -> bool {
        self.kill_at.is_some()
    }
}

/// A slot waiting to be started.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    wid: u32,
    due: Instant,
    /// Start only once this (old) process has exited (restart).
    after: Option<u32>,
}

/// The policy of one watcher.
#[derive(Debug, Clone)]
pub struct Policy {
    params: Params,
    phase: Phase,
    retries: u32,
    resume_at: Option<Instant>,
    running: Vec<Running>,
    pending: Vec<Pending>,
    /// Recent unexpected exits, for flapping.
    exits: VecDeque<Instant>,
    /// Respawns per slot.
    restarts: BTreeMap<u32, u32>,
}

impl Policy {
    /// A stopped watcher; call [`Policy::start`].
    pub fn new(params: Params) -> Policy {
        Policy {
            params,
            phase: Phase::Stopped,
            retries: 0,
            resume_at: None,
            running: Vec::new(),
            pending: Vec::new(),
            exits: VecDeque::new(),
            restarts: BTreeMap::new(),
        }
    }

    /// Where the watcher is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Flapping pauses so far (reset by `start` and `restart`).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The process count asked for.
    pub fn numprocs(&self) -> u32 {
        self.params.numprocs
    }

    /// Every process not yet reaped, stopping ones included.
    pub fn running(&self) -> &[Running] {
        &self.running
    }

    /// True when no process of the watcher is left.
    pub fn idle(&self) -> bool {
        self.running.is_empty()
    }

    fn occupied(&self, wid: u32) -> bool {
        self.running.iter().any(|r| r.wid == wid && !r.stopping()) || self.pending.iter().any(|p| p.wid == wid)
    }

    fn fill(&mut self, out: &mut Vec<Action>) {
        for wid in 1..=self.params.numprocs {
            if !self.occupied(wid) {
                out.push(Action::Spawn { wid });
            }
        }
    }

    fn stop_one(&mut self, i: usize, now: Instant, out: &mut Vec<Action>) {
        let r = &mut self.running[i];
        if r.stopping() {
            return;
        }
        r.kill_at = Some(now + self.params.graceful);
        out.push(Action::Stop { pid: r.pid });
    }

    fn stop_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.pending.clear();
        for i in 0..self.running.len() {
            self.stop_one(i, now, out);
        }
    }

    /// Starts every missing slot; clears flapping retries.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.phase = Phase::Active;
        self.retries = 0;
        self.resume_at = None;
        self.exits.clear();
        let mut out = Vec::new();
        self.fill(&mut out);
        out.extend(self.tick(now));
        out
    }

    /// Stops every process gracefully; nothing is respawned.
    pub fn stop(&mut self, now: Instant) -> Vec<Action> {
        self.phase = Phase::Stopped;
        self.resume_at = None;
        let mut out = Vec::new();
        self.stop_all(now, &mut out);
        out.extend(self.tick(now));
        out
    }

    /// Stops every process gracefully and starts each slot again once its
    /// old process has exited.
    pub fn restart(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.stop_all(now, &mut out);
        for r in &self.running {
            if r.wid <= self.params.numprocs && !self.pending.iter().any(|p| p.wid == r.wid) {
                self.pending.push(Pending {
                    wid: r.wid,
                    due: now,
                    after: Some(r.pid),
                });
            }
        }
        out.extend(self.start(now));
        out
    }

    /// Starts a new process for every slot first, then stops the old ones
    /// gracefully.
    pub fn reload(&mut self, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Active {
            return self.start(now);
        }
        // Every slot gets a new process now: waiting respawns are done at once.
        self.pending.clear();
        let mut stops = Vec::new();
        for i in 0..self.running.len() {
            self.stop_one(i, now, &mut stops);
        }
        let mut out = Vec::new();
        self.fill(&mut out);
        out.extend(stops);
        out.extend(self.tick(now));
        out
    }

    /// Sets the process count: new slots start at once (when active),
    /// slots above the count are stopped gracefully.
    pub fn set_numprocs(&mut self, n: u32, now: Instant) -> Vec<Action> {
        self.params.numprocs = n;
        let mut out = Vec::new();
        self.pending.retain(|p| p.wid <= n);
        self.restarts.retain(|&wid, _| wid <= n);
        for i in 0..self.running.len() {
            if self.running[i].wid > n {
                self.stop_one(i, now, &mut out);
            }
        }
        if self.phase == Phase::Active {
            self.fill(&mut out);
        }
        out.extend(self.tick(now));
        out
    }

    /// Slot `wid` got process `pid`.
    pub fn spawned(&mut self, wid: u32, pid: u32, now: Instant) {
        let restarts = self.restarts.get(&wid).copied().unwrap_or(0);
        self.running.push(Running {
            wid,
            pid,
            started: now,
            restarts,
            kill_at: None,
            killed: false,
        });
    }

    /// Slot `wid` could not be started: like a process that exited at once,
    /// retried no sooner than [`SPAWN_RETRY`].
    pub fn spawn_failed(&mut self, wid: u32, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.unexpected_end(wid, now, SPAWN_RETRY, &mut out);
        out.extend(self.tick(now));
        out
    }

    /// Process `pid` has ended (it was reaped).
    pub fn exited(&mut self, pid: u32, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for p in &mut self.pending {
            if p.after == Some(pid) {
                p.after = None;
            }
        }
        if let Some(i) = self.running.iter().position(|r| r.pid == pid) {
            let r = self.running.remove(i);
            if !r.stopping() {
                self.unexpected_end(r.wid, now, Duration::ZERO, &mut out);
            }
        }
        out.extend(self.tick(now));
        out
    }

    fn unexpected_end(&mut self, wid: u32, now: Instant, min_delay: Duration, out: &mut Vec<Action>) {
        if self.phase != Phase::Active || !self.params.respawn || wid > self.params.numprocs || self.occupied(wid) {
            return;
        }
        let window = self.params.flap.window;
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > window)
        {
            self.exits.pop_front();
        }
        if self.exits.len() > self.params.flap.attempts as usize {
            self.flap(now, out);
            return;
        }
        let restarts = self.restarts.entry(wid).or_insert(0);
        *restarts += 1;
        let at = now + self.params.warmup.max(min_delay);
        out.push(Action::Note(Note::Respawn {
            wid,
            restarts: *restarts,
            at,
        }));
        self.pending.push(Pending {
            wid,
            due: at,
            after: None,
        });
    }

    fn flap(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.exits.clear();
        self.stop_all(now, out);
        if self.retries < self.params.flap.max_retry {
            self.retries += 1;
            self.phase = Phase::Flapping;
            let until = now + self.params.flap.retry_in;
            self.resume_at = Some(until);
            out.push(Action::Note(Note::Flapping {
                retries: self.retries,
                until,
            }));
        } else {
            self.phase = Phase::Stopped;
            self.resume_at = None;
            out.push(Action::Note(Note::GaveUp { retries: self.retries }));
        }
    }

    /// Does what is due at `now`: SIGKILLs after graceful timeouts, the end
    /// of a flapping pause, recycling after MaxAge, delayed respawns.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for r in &mut self.running {
            if !r.killed && r.kill_at.is_some_and(|t| t <= now) {
                r.killed = true;
                out.push(Action::Kill { pid: r.pid });
            }
        }
        if self.phase == Phase::Flapping && self.resume_at.is_some_and(|t| t <= now) {
            self.phase = Phase::Active;
            self.resume_at = None;
            out.push(Action::Note(Note::Resumed { retries: self.retries }));
            self.fill(&mut out);
        }
        if self.phase != Phase::Active {
            return out;
        }
        if let Some(age) = self.params.max_age {
            for i in 0..self.running.len() {
                let r = &self.running[i];
                if !r.stopping() && r.started + age <= now {
                    let (wid, pid) = (r.wid, r.pid);
                    let mut stop = Vec::new();
                    self.stop_one(i, now, &mut stop);
                    out.push(Action::Note(Note::Recycled { wid, pid }));
                    if !self.occupied(wid) {
                        out.push(Action::Spawn { wid });
                    }
                    out.extend(stop);
                }
            }
        }
        let mut due = Vec::new();
        self.pending.retain(|p| {
            let ready = p.after.is_none() && p.due <= now;
            if ready {
                due.push(p.wid);
            }
            !ready
        });
        for wid in due {
            if !self.occupied(wid) {
                out.push(Action::Spawn { wid });
            }
        }
        out
    }

    /// When [`Policy::tick`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kills = self.running.iter().filter(|r| !r.killed).filter_map(|r| r.kill_at);
        let resume = self.resume_at.filter(|_| self.phase == Phase::Flapping);
        let active = self.phase == Phase::Active;
        let spawns = self
            .pending
            .iter()
            .filter(|p| active && p.after.is_none())
            .map(|p| p.due);
        let ages = self
            .running
            .iter()
            .filter(|r| active && !r.stopping())
            .filter_map(|r| self.params.max_age.map(|a| r.started + a));
        kills.chain(resume).chain(spawns).chain(ages).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u32) -> Params {
        Params {
            numprocs: n,
            respawn: true,
            warmup: Duration::ZERO,
            graceful: Duration::from_secs(30),
            max_age: None,
            flap: Flap {
                attempts: 2,
                window: Duration::from_secs(1),
                retry_in: Duration::from_secs(7),
                max_retry: 5,
            },
        }
    }

    /// A fake clock: an instant plus milliseconds.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    /// Carries out spawns with made-up pids, like the shell; returns the
    /// other actions.
    fn run(p: &mut Policy, actions: Vec<Action>, now: Instant, next_pid: &mut u32) -> Vec<Action> {
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::Spawn { wid } => {
                    *next_pid += 1;
                    p.spawned(wid, *next_pid, now);
                }
                other => rest.push(other),
            }
        }
        rest
    }

    fn spawns(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { wid } => Some(*wid),
                _ => None,
            })
            .collect()
    }

    fn pids(p: &Policy) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = p
            .running()
            .iter()
            .filter(|r| r.kill_at.is_none())
            .map(|r| (r.wid, r.pid))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn starts_slots_and_respawns_after_warmup() {
        let c = Clock(Instant::now());
        let mut pid = 100;
        let mut p = Policy::new(Params {
            warmup: Duration::from_millis(500),
            ..params(3)
        });
        assert_eq!(p.phase(), Phase::Stopped);
        let a = p.start(c.at(0));
        assert_eq!(spawns(&a), [1, 2, 3]);
        run(&mut p, a, c.at(0), &mut pid);
        assert_eq!(pids(&p), [(1, 101), (2, 102), (3, 103)]);
        assert_eq!(p.next_deadline(), None);

        // Slot 2's process dies: respawned after the warmup, not before.
        let a = p.exited(102, c.at(1000));
        assert!(spawns(&a).is_empty());
        assert!(matches!(
            a[..],
            [Action::Note(Note::Respawn {
                wid: 2,
                restarts: 1,
                ..
            })]
        ));
        assert_eq!(p.next_deadline(), Some(c.at(1500)));
        assert!(p.tick(c.at(1499)).is_empty());
        let a = p.tick(c.at(1500));
        assert_eq!(spawns(&a), [2]);
        run(&mut p, a, c.at(1500), &mut pid);
        assert_eq!(pids(&p), [(1, 101), (2, 104), (3, 103)]);
        assert_eq!(p.running().iter().find(|r| r.pid == 104).unwrap().restarts, 1);
        // An unknown pid changes nothing.
        assert!(p.exited(999, c.at(1600)).is_empty());
    }

    #[test]
    fn no_respawn_when_disabled_or_stopped() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(Params {
            respawn: false,
            ..params(2)
        });
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        assert!(p.exited(1, c.at(10)).is_empty());
        assert_eq!(pids(&p), [(2, 2)]);
        // `start` fills the empty slot again.
        let a = p.start(c.at(20));
        assert_eq!(spawns(&a), [1]);
    }

    #[test]
    fn graceful_stop_then_kill_at_the_deadline() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(Params {
            graceful: Duration::from_secs(2),
            ..params(2)
        });
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let a = p.stop(c.at(100));
        assert_eq!(a, [Action::Stop { pid: 1 }, Action::Stop { pid: 2 }]);
        assert_eq!(p.phase(), Phase::Stopped);
        // Process 1 obeys; process 2 ignores the stop signal.
        assert!(p.exited(1, c.at(200)).is_empty(), "a stopped process is not respawned");
        assert_eq!(p.next_deadline(), Some(c.at(2100)));
        assert!(p.tick(c.at(2099)).is_empty());
        assert_eq!(p.tick(c.at(2100)), [Action::Kill { pid: 2 }]);
        assert_eq!(p.next_deadline(), None, "killed once");
        assert!(p.tick(c.at(5000)).is_empty());
        assert!(!p.idle());
        assert!(p.exited(2, c.at(2101)).is_empty());
        assert!(p.idle());
        // Zero timeout: killed at once.
        let mut p = Policy::new(Params {
            graceful: Duration::ZERO,
            ..params(1)
        });
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        assert_eq!(p.stop(c.at(1)), [Action::Stop { pid: 3 }, Action::Kill { pid: 3 }]);
    }

    #[test]
    fn flapping_pauses_then_gives_up() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(Params {
            flap: Flap {
                attempts: 2,
                window: Duration::from_secs(1),
                retry_in: Duration::from_secs(7),
                max_retry: 2,
            },
            ..params(1)
        });
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let mut t = 0;
        let flap = |p: &mut Policy, pid: &mut u32, t: &mut u64| {
            // Two quick exits are tolerated, the third within the window flaps.
            for _ in 0..2 {
                *t += 100;
                let a = p.exited(*pid, c.at(*t));
                assert_eq!(spawns(&a), [1]);
                run(p, a, c.at(*t), pid);
            }
            *t += 100;
            p.exited(*pid, c.at(*t))
        };
        let a = flap(&mut p, &mut pid, &mut t);
        assert_eq!(
            a,
            [Action::Note(Note::Flapping {
                retries: 1,
                until: c.at(t + 7000)
            })]
        );
        assert_eq!((p.phase(), p.retries()), (Phase::Flapping, 1));
        assert_eq!(p.next_deadline(), Some(c.at(t + 7000)));
        assert!(p.tick(c.at(t + 6999)).is_empty());
        t += 7000;
        let a = p.tick(c.at(t));
        assert_eq!(
            a,
            [Action::Note(Note::Resumed { retries: 1 }), Action::Spawn { wid: 1 }]
        );
        run(&mut p, a, c.at(t), &mut pid);
        assert_eq!(p.phase(), Phase::Active);

        let a = flap(&mut p, &mut pid, &mut t);
        assert!(matches!(a[..], [Action::Note(Note::Flapping { retries: 2, .. })]));
        t += 7000;
        let a = p.tick(c.at(t));
        run(&mut p, a, c.at(t), &mut pid);
        let a = flap(&mut p, &mut pid, &mut t);
        assert_eq!(a, [Action::Note(Note::GaveUp { retries: 2 })]);
        assert_eq!(p.phase(), Phase::Stopped);
        assert_eq!(p.next_deadline(), None);
        // `start` clears the retries.
        let a = p.start(c.at(t + 1));
        assert_eq!(spawns(&a), [1]);
        assert_eq!(p.retries(), 0);
    }

    #[test]
    fn slow_exits_do_not_flap() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(params(1));
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        for i in 1..=20 {
            let now = c.at(i * 600);
            let a = p.exited(pid, now);
            assert_eq!(spawns(&a), [1], "exit {i}");
            run(&mut p, a, now, &mut pid);
        }
        assert_eq!(p.phase(), Phase::Active);
        assert_eq!(p.running()[0].restarts, 20);
    }

    #[test]
    fn flapping_stops_the_other_processes() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(params(2));
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let slot1 = |p: &Policy| pids(p)[0].1;
        for t in [10, 20] {
            let a = p.exited(slot1(&p), c.at(t));
            run(&mut p, a, c.at(t), &mut pid);
        }
        assert_eq!(pids(&p), [(1, 4), (2, 2)]);
        let a = p.exited(4, c.at(30));
        assert!(
            matches!(a[..], [Action::Stop { pid: 2 }, Action::Note(Note::Flapping { .. })]),
            "{a:?}"
        );
        assert_eq!(p.phase(), Phase::Flapping);
        // The stopped process ending is expected, and nothing is respawned while paused.
        assert!(p.exited(2, c.at(40)).is_empty());
        assert!(p.idle());
    }

    #[test]
    fn scale_up_and_down() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(params(2));
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let a = p.set_numprocs(4, c.at(1));
        assert_eq!(spawns(&a), [3, 4]);
        run(&mut p, a, c.at(1), &mut pid);
        let a = p.set_numprocs(1, c.at(2));
        assert_eq!(
            a,
            [
                Action::Stop { pid: 2 },
                Action::Stop { pid: 3 },
                Action::Stop { pid: 4 }
            ]
        );
        assert_eq!(pids(&p), [(1, 1)]);
        // A slot above the count is not respawned when its process exits.
        assert!(p.exited(3, c.at(3)).is_empty());
        // While stopped, scaling up starts nothing.
        p.stop(c.at(4));
        assert!(spawns(&p.set_numprocs(3, c.at(5))).is_empty());
        assert_eq!(p.numprocs(), 3);
    }

    #[test]
    fn reload_starts_new_before_stopping_old() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(params(2));
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let a = p.reload(c.at(5));
        assert_eq!(
            a,
            [
                Action::Spawn { wid: 1 },
                Action::Spawn { wid: 2 },
                Action::Stop { pid: 1 },
                Action::Stop { pid: 2 }
            ]
        );
        run(&mut p, a, c.at(5), &mut pid);
        assert_eq!(pids(&p), [(1, 3), (2, 4)]);
        // The old ones exiting is expected: no respawn, no flap count.
        assert!(p.exited(1, c.at(6)).is_empty());
        assert!(p.exited(2, c.at(6)).is_empty());
        assert_eq!(pids(&p), [(1, 3), (2, 4)]);
    }

    #[test]
    fn restart_waits_for_the_old_process() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(params(2));
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        let a = p.restart(c.at(5));
        assert_eq!(a, [Action::Stop { pid: 1 }, Action::Stop { pid: 2 }]);
        assert_eq!(p.next_deadline(), Some(c.at(30_005)), "only the kill deadlines");
        let a = p.exited(2, c.at(6));
        assert_eq!(a, [Action::Spawn { wid: 2 }]);
        run(&mut p, a, c.at(6), &mut pid);
        let a = p.tick(c.at(30_005));
        assert_eq!(a, [Action::Kill { pid: 1 }]);
        let a = p.exited(1, c.at(30_006));
        assert_eq!(a, [Action::Spawn { wid: 1 }]);
        run(&mut p, a, c.at(30_006), &mut pid);
        assert_eq!(pids(&p), [(1, 4), (2, 3)]);
    }

    #[test]
    fn max_age_recycles() {
        let c = Clock(Instant::now());
        let mut pid = 0;
        let mut p = Policy::new(Params {
            max_age: Some(Duration::from_secs(10)),
            ..params(1)
        });
        let a = p.start(c.at(0));
        run(&mut p, a, c.at(0), &mut pid);
        assert_eq!(p.next_deadline(), Some(c.at(10_000)));
        let a = p.tick(c.at(10_000));
        assert_eq!(
            a,
            [
                Action::Note(Note::Recycled { wid: 1, pid: 1 }),
                Action::Spawn { wid: 1 },
                Action::Stop { pid: 1 }
            ]
        );
        run(&mut p, a, c.at(10_000), &mut pid);
        assert_eq!(pids(&p), [(1, 2)]);
        assert_eq!(p.next_deadline(), Some(c.at(20_000)));
    }

    #[test]
    fn failed_spawns_are_retried_later() {
        let c = Clock(Instant::now());
        let mut p = Policy::new(Params {
            flap: Flap {
                attempts: 1000,
                ..params(1).flap
            },
            ..params(1)
        });
        let a = p.start(c.at(0));
        assert_eq!(spawns(&a), [1]);
        let a = p.spawn_failed(1, c.at(0));
        assert!(spawns(&a).is_empty());
        assert_eq!(p.next_deadline(), Some(c.at(0) + SPAWN_RETRY));
        assert_eq!(spawns(&p.tick(c.at(0) + SPAWN_RETRY)), [1]);
    }
}
