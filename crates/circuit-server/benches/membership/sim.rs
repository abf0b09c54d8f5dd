//! An in-process simulation of cluster membership: many membership
//! [`Driver`]s, the very code each server runs (foca with our [`Node`]
//! identities and [`swim_config`], the re-announce while alone, the
//! translation into views and events), over a simulated network and a
//! manual clock.
//!
//! Nothing touches a real socket or clock. Time is virtual (nanoseconds from
//! the start of the simulation, given to the drivers as a fixed base
//! `Instant` plus that offset) and advances from one event to the next; the
//! events wait in a priority queue ordered by time, then by the order they
//! were scheduled in:
//!
//! - the delivery of a datagram, `delay ± jitter` (uniform) after it was
//!   sent, unless it was lost (each datagram is lost independently with the
//!   configured probability) or the sender and the receiver are on different
//!   sides of a partition;
//! - a member's wake-up at its driver's next deadline (foca's timers, the
//!   alone check), where the simulation calls [`Driver::tick`];
//! - optionally ([`Sim::start_pulling`]), a member's pull of another
//!   member's list, one round trip after it first met someone after being
//!   alone, or after its driver asked for one ([`Output::Pull`]: views
//!   that kept disagreeing): what a server does over TCP (`net::peers`).
//!
//! Multicast announces ([`Output::AnnounceGroup`]) are not simulated: the
//! members find each other through their seeds.
//!
//! Everything random (identities, delays, losses, foca's own choices) comes
//! from one seed, so a run is reproducible: the same configuration and the
//! same calls give the same figures. Addresses (`10.x.y.z:7373`) are labels.
//!
//! Each member's view (its driver's [`Driver::view`]) is mirrored from the
//! driver's [`MemberEvent`]s into a bit set, with running totals, so "every
//! live member sees exactly the live members" and "no live member lists the
//! victim" are O(1) questions asked after every event. [`Sim::check_views`]
//! compares the mirror with the drivers' views and foca's member lists.
//!
//! [`scenario`] runs the measurements the benchmark `membership_sim` prints:
//! join convergence (all at once, then a newcomer), death detection and idle
//! traffic per member.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use circuit_proto::ServerId;
use circuit_server::membership::driver::{Driver, MemberEvent, Output};
use circuit_server::membership::node::{Node, swim_config};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// The port every simulated member "listens" on.
pub const PORT: u16 = 7373;

/// The simulated network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Mean one-way delay of a datagram.
    pub delay: Duration,
    /// A datagram's delay is uniform in `delay ± jitter` (never negative).
    pub jitter: Duration,
    /// Probability that a datagram is lost, in `[0, 1]`.
    pub loss: f64,
    /// A killed member's host stays up and refuses connections (a killed
    /// server): a member's liveness check ([`Output::Check`]) learns it one
    /// round trip later. `false`: the host is gone, checks get no answer.
    pub hosts_refuse: bool,
}

impl NetConfig {
    /// A LAN: 1 ms ± 0.5 ms one-way, 1 % loss.
    pub fn lan() -> NetConfig {
        NetConfig {
            delay: Duration::from_millis(1),
            jitter: Duration::from_micros(500),
            loss: 0.01,
            hosts_refuse: false,
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many members (all start idle: see [`Sim::start`]).
    pub members: usize,
    /// The network between them.
    pub net: NetConfig,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// The SWIM timing every member uses.
    pub swim: foca::Config,
}

impl SimConfig {
    /// `members` members on [`NetConfig::lan`], with `swim_config(members)`.
    pub fn lan(members: usize, seed: u64) -> SimConfig {
        SimConfig {
            members,
            net: NetConfig::lan(),
            seed,
            swim: swim_config(u32::try_from(members).unwrap_or(u32::MAX)),
        }
    }
}

/// How members join in [`Sim::start_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// Every member announces itself to member 0.
    Seed,
    /// Member `i` announces itself to a random member among `0..i`.
    Random,
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not started yet: it neither sends nor receives.
    Idle,
    /// Running.
    Live,
    /// Killed: it stopped processing anything, for good.
    Dead,
}

/// Datagrams counted by the simulated network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams sent (lost ones included).
    pub sent: u64,
    /// Payload bytes sent: the drivers' datagrams (a view digest, then
    /// foca's bytes), without UDP/IP headers nor the seal `swim.rs` adds (5
    /// bytes plain, 45 bytes sealed).
    pub bytes: u64,
    /// Datagrams lost (at random or across a partition).
    pub lost: u64,
    /// Datagrams that reached a member not running (idle or dead).
    pub undelivered: u64,
    /// Multicast announces the drivers asked for (not delivered).
    pub group_announces: u64,
    /// Times a member declared down a member that was running.
    pub false_downs: u64,
    /// Member records copied by state pulls (see [`Sim::start_pulling`]).
    pub pulled: u64,
    /// State pulls carried out: on meeting a cluster, and when a driver
    /// asked for one ([`Output::Pull`]).
    pub pulls: u64,
}

/// Idle traffic per member, measured by [`Sim::measure_traffic`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// Datagrams sent per member per second (mean over live members).
    pub packets_per_s: f64,
    /// Payload bytes sent per member per second (mean over live members).
    pub bytes_per_s: f64,
    /// Datagrams per second of the busiest member.
    pub max_packets_per_s: f64,
    /// Bytes per second of the busiest member.
    pub max_bytes_per_s: f64,
    /// Wakeups per member per second (mean over live members): instants at
    /// which its driver had something to do.
    pub wakeups_per_s: f64,
    /// Wakeups per second of the member that woke most.
    pub max_wakeups_per_s: f64,
}

enum Event {
    Deliver { to: usize, from: SocketAddr, data: Vec<u8> },
    Wake { member: usize },
    Refused { member: usize, node: Node },
    Pull { member: usize, from: usize },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest event.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Member {
    /// Its identity at the start (the driver's may be renewed since).
    node: Node,
    /// Seed of its driver's randomness.
    seed: u64,
    /// Created when it starts.
    driver: Option<Driver>,
    status: Status,
    /// Pulls a member list when it meets a cluster (as a server does).
    pull: bool,
    /// Pulled since it was last alone.
    pulled: bool,
    /// Partition side: datagrams only flow between members of the same side.
    side: u32,
    /// The time of its earliest wake-up in the queue, if any.
    wake: Option<u64>,
    /// Datagrams and bytes this member sent.
    sent: (u64, u64),
    /// Distinct instants its driver was called at (a server's wakeups: calls
    /// at one instant stand for datagrams read in one wakeup), and the last.
    wakeups: u64,
    last_call: Option<u64>,
    /// Its last datagram delivered: when it was sent, to whom, when it arrives.
    last_sent: Option<(u64, usize, u64)>,
    /// The members its driver lists as live, by index.
    sees: Vec<u64>,
}

/// The simulation: members, network, virtual clock and event queue.
pub struct Sim {
    net: NetConfig,
    swim: foca::Config,
    rng: SmallRng,
    /// The instant virtual time zero stands for.
    base: Instant,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    members: Vec<Member>,
    index: HashMap<SocketAddr, usize>,
    ids: HashMap<ServerId, usize>,
    counters: Counters,
    live: usize,
    /// Over live members: live members (other than itself) it does not list.
    missing: u64,
    /// Over live members: members not running that it lists.
    stale: u64,
    /// For each member, how many live members list it.
    holders: Vec<u32>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn bit(set: &[u64], j: usize) -> bool {
    set[j / 64] & (1 << (j % 64)) != 0
}

/// The address of member `i`: `10.x.y.z:7373` with `x.y.z` = `i + 1`.
pub fn addr_of(i: usize) -> SocketAddr {
    let k = u32::try_from(i + 1).expect("fewer than 2^24 members");
    assert!(k < 1 << 24, "fewer than 2^24 members");
    let [_, x, y, z] = k.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, x, y, z), PORT))
}

impl Sim {
    /// A simulation of `cfg.members` idle members at virtual time zero.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let n = cfg.members;
        let words = n.div_ceil(64);
        let mut members = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for i in 0..n {
            let node = Node {
                id: ServerId(rng.random()),
                addr: addr_of(i),
                pid: rng.random_range(100..4_000_000),
                started: 1_750_000_000_000 + rng.random_range(0..86_400_000),
                incarnation: 0,
            };
            index.insert(node.addr, i);
            ids.insert(node.id, i);
            members.push(Member {
                node,
                seed: rng.random(),
                driver: None,
                status: Status::Idle,
                pull: false,
                pulled: false,
                side: 0,
                wake: None,
                sent: (0, 0),
                wakeups: 0,
                last_call: None,
                last_sent: None,
                sees: vec![0; words],
            });
        }
        Sim {
            net: cfg.net,
            swim: cfg.swim,
            rng,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            members,
            index,
            ids,
            counters: Counters::default(),
            live: 0,
            missing: 0,
            stale: 0,
            holders: vec![0; n],
        }
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// The instant the drivers are told it is.
    fn instant(&self) -> Instant {
        self.base + self.now()
    }

    /// How many members the simulation holds (whatever their status).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when it holds no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many members are running.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Member `i`'s current identity.
    pub fn node(&self, i: usize) -> Node {
        self.members[i].driver.as_ref().map_or(self.members[i].node, Driver::me)
    }

    /// Member `i`'s status.
    pub fn status(&self, i: usize) -> Status {
        self.members[i].status
    }

    /// Member `i`'s driver, once started.
    pub fn driver(&self, i: usize) -> Option<&Driver> {
        self.members[i].driver.as_ref()
    }

    /// How many members member `i`'s driver lists as live.
    pub fn view_len(&self, i: usize) -> usize {
        self.driver(i).map_or(0, |d| d.view().len())
    }

    /// The network's counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Errors foca returned to the drivers, over all members.
    pub fn errors(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.driver.as_ref())
            .map(Driver::errors)
            .sum()
    }

    /// True when every running member lists exactly the other running members.
    pub fn converged(&self) -> bool {
        self.missing == 0 && self.stale == 0
    }

    /// How many running members list member `i` as live.
    pub fn holders(&self, i: usize) -> usize {
        self.holders[i] as usize
    }

    /// Starts member `i`: its driver announces it to `seeds` now, and again
    /// whenever it finds itself alone.
    pub fn start(&mut self, i: usize, seeds: &[usize]) {
        self.start_as(i, seeds, false);
    }

    /// Starts member `i` as [`Sim::start`] does; when it meets a cluster
    /// (its first `Joined` since it was alone) it also pulls that member's
    /// list, one round trip later, as a server does over TCP
    /// ([`Driver::snapshot`] there, [`Driver::apply`] here): foca alone
    /// teaches a newcomer only what fits in one datagram and what it hears
    /// afterwards.
    pub fn start_pulling(&mut self, i: usize, seeds: &[usize]) {
        self.start_as(i, seeds, true);
    }

    fn start_as(&mut self, i: usize, seeds: &[usize], pull: bool) {
        assert_eq!(self.members[i].status, Status::Idle, "member {i} already started");
        debug_assert_eq!(self.holders[i], 0);
        // Every other live member misses it; it misses every other live member.
        self.missing += 2 * self.live as u64;
        self.live += 1;
        let seeds: Vec<Node> = seeds.iter().filter(|&&s| s != i).map(|&s| self.node(s)).collect();
        let now = self.instant();
        let m = &mut self.members[i];
        m.driver = Some(Driver::new(m.node, self.swim.clone(), m.seed, seeds, now));
        m.status = Status::Live;
        m.pull = pull;
        // Its first tick, due now, announces it to its seeds.
        self.drain(i);
    }

    /// Starts every idle member now, member 0 first, each announcing itself as
    /// `mode` says.
    pub fn start_all(&mut self, mode: JoinMode) {
        for i in 0..self.members.len() {
            if self.members[i].status != Status::Idle {
                continue;
            }
            let seed = match mode {
                JoinMode::Seed => 0,
                JoinMode::Random if i == 0 => 0,
                JoinMode::Random => self.rng.random_range(0..i),
            };
            self.start(i, &[seed]);
        }
    }

    /// Kills member `i`: it stops processing anything, for good.
    pub fn kill(&mut self, i: usize) {
        assert_eq!(self.members[i].status, Status::Live, "member {i} is not running");
        self.members[i].status = Status::Dead;
        self.live -= 1;
        // Its own view no longer counts.
        let sees = std::mem::take(&mut self.members[i].sees);
        let mut listed_live = 0;
        for (w, &word) in sees.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let j = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                self.holders[j] -= 1;
                if self.members[j].status == Status::Live {
                    listed_live += 1;
                } else {
                    self.stale -= 1;
                }
            }
        }
        self.missing -= (self.live - listed_live) as u64;
        self.members[i].sees = vec![0; sees.len()];
        // Others listing it now hold a stale entry; others not listing it no
        // longer miss it.
        let h = u64::from(self.holders[i]);
        self.stale += h;
        self.missing -= self.live as u64 - h;
    }

    /// Splits the network: datagrams only flow between members `side` puts
    /// on the same side.
    pub fn partition(&mut self, side: impl Fn(usize) -> u32) {
        for (i, m) in self.members.iter_mut().enumerate() {
            m.side = side(i);
        }
    }

    /// Heals any partition.
    pub fn heal(&mut self) {
        self.partition(|_| 0);
    }

    /// Processes every event up to virtual time `t` (then the clock reads `t`).
    pub fn run_until(&mut self, t: Duration) {
        let t = nanos(t);
        while self.queue.peek().is_some_and(|e| e.at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Processes events for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now() + d);
    }

    /// Processes events until `cond` holds (checked now, then after each
    /// event) and returns the virtual time it first held; `None`, with the
    /// clock at `deadline`, if it did not hold by then.
    pub fn run_until_cond(&mut self, deadline: Duration, cond: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let deadline = nanos(deadline);
        loop {
            if cond(self) {
                return Some(self.now());
            }
            if self.queue.peek().is_none_or(|e| e.at > deadline) {
                self.now = self.now.max(deadline);
                return None;
            }
            self.step();
        }
    }

    /// Runs for `window` and returns what live members sent per second.
    pub fn measure_traffic(&mut self, window: Duration) -> Traffic {
        let before: Vec<(u64, u64)> = self.members.iter().map(|m| m.sent).collect();
        let woke: Vec<u64> = self.members.iter().map(|m| m.wakeups).collect();
        self.run_for(window);
        let secs = window.as_secs_f64();
        let (mut packets, mut bytes, mut max_p, mut max_b, mut n) = (0.0, 0.0, 0.0f64, 0.0f64, 0usize);
        let (mut wakeups, mut max_w) = (0.0, 0.0f64);
        for ((m, b), w) in self.members.iter().zip(before).zip(woke) {
            if m.status != Status::Live {
                continue;
            }
            let woke = (m.wakeups - w) as f64 / secs;
            wakeups += woke;
            max_w = max_w.max(woke);
            let p = (m.sent.0 - b.0) as f64 / secs;
            let by = (m.sent.1 - b.1) as f64 / secs;
            packets += p;
            bytes += by;
            max_p = max_p.max(p);
            max_b = max_b.max(by);
            n += 1;
        }
        let n = n.max(1) as f64;
        Traffic {
            packets_per_s: packets / n,
            bytes_per_s: bytes / n,
            max_packets_per_s: max_p,
            max_bytes_per_s: max_b,
            wakeups_per_s: wakeups / n,
            max_wakeups_per_s: max_w,
        }
    }

    /// The pairs `(i, j)` of running members where `i` does not list `j`
    /// (for diagnosis: O(n²)).
    pub fn missing_pairs(&self) -> Vec<(usize, usize)> {
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].status == Status::Live)
            .collect();
        let mut pairs = Vec::new();
        for &i in &live {
            for &j in &live {
                if i != j && !bit(&self.members[i].sees, j) {
                    pairs.push((i, j));
                }
            }
        }
        pairs
    }

    /// What member `i`'s foca knows of member `j`: its identity, incarnation
    /// and state, active or down (`None` if it never heard of it or forgot).
    pub fn knowledge(&self, i: usize, j: usize) -> Option<foca::Member<Node>> {
        let addr = self.members[j].node.addr;
        self.driver(i)?
            .foca()
            .iter_membership_state()
            .find(|m| m.id().addr == addr)
            .cloned()
    }

    /// Checks the mirrored views against the drivers' views, and those
    /// against foca's own member lists; returns the first running member
    /// whose view differs, with a description.
    pub fn check_views(&self) -> Result<(), String> {
        for (i, m) in self.members.iter().enumerate() {
            let Some(d) = m.driver.as_ref().filter(|_| m.status == Status::Live) else {
                continue;
            };
            let mut mine = vec![0u64; m.sees.len()];
            for id in d.view().keys() {
                let Some(&j) = self.ids.get(id) else {
                    return Err(format!("member {i} lists an unknown id {id}"));
                };
                mine[j / 64] |= 1 << (j % 64);
            }
            if mine != m.sees {
                return Err(format!(
                    "member {i}: its view lists {mine:x?}, the mirror {:x?}",
                    m.sees
                ));
            }
            let mut active: Vec<Node> = d.foca().iter_members().map(|m| *m.id()).collect();
            active.sort_by_key(|n| n.id);
            let view: Vec<Node> = d.view().values().copied().collect();
            if active != view {
                return Err(format!("member {i}: foca lists {active:?}, its view {view:?}"));
            }
        }
        let mut missing = 0;
        let mut stale = 0;
        let mut holders = vec![0u32; self.members.len()];
        for (i, m) in self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.status == Status::Live)
        {
            for (j, other) in self.members.iter().enumerate() {
                let listed = bit(&m.sees, j);
                holders[j] += u32::from(listed);
                match (listed, other.status == Status::Live && j != i) {
                    (false, true) => missing += 1,
                    (true, false) => stale += 1,
                    _ => {}
                }
            }
        }
        if (missing, stale, &holders) != (self.missing, self.stale, &self.holders) {
            return Err(format!(
                "running totals: missing {} stale {}, recomputed: missing {missing} stale {stale}",
                self.missing, self.stale
            ));
        }
        Ok(())
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn step(&mut self) {
        let Some(Scheduled { at, event, .. }) = self.queue.pop() else {
            return;
        };
        debug_assert!(at >= self.now);
        self.now = at;
        let now = self.instant();
        match event {
            Event::Refused { member, node } => {
                let m = &mut self.members[member];
                if let Some(d) = m.driver.as_mut().filter(|_| m.status == Status::Live) {
                    d.refused(now, node);
                    self.called(member);
                    self.drain(member);
                }
            }
            Event::Deliver { to, from, data } => {
                let m = &mut self.members[to];
                let Some(d) = m.driver.as_mut().filter(|_| m.status == Status::Live) else {
                    self.counters.undelivered += 1;
                    return;
                };
                let _ = d.handle_data(now, from, &data);
                self.called(to);
                self.drain(to);
            }
            Event::Wake { member } => {
                let m = &mut self.members[member];
                if m.wake != Some(at) {
                    return; // superseded by an earlier wake-up
                }
                m.wake = None;
                let Some(d) = m.driver.as_mut().filter(|_| m.status == Status::Live) else {
                    return;
                };
                // Its deadline moved later since (a timer was dropped): a
                // server sets its alarm anew each time, so it sleeps on.
                let next = nanos(d.next_deadline().saturating_duration_since(self.base));
                if next > at {
                    m.wake = Some(next);
                    self.push(next, Event::Wake { member });
                    return;
                }
                d.tick(now);
                self.called(member);
                self.drain(member);
            }
            Event::Pull { member, from } => {
                let (m, f) = (&self.members[member], &self.members[from]);
                if m.status != Status::Live || f.status != Status::Live || m.side != f.side {
                    return;
                }
                let Some(state) = self.driver(from).map(Driver::snapshot) else {
                    return;
                };
                self.counters.pulled += state.len() as u64;
                self.counters.pulls += 1;
                if let Some(d) = self.members[member].driver.as_mut() {
                    d.apply(now, state);
                }
                // The member asked woke to answer, too.
                self.called(from);
                self.called(member);
                self.drain(member);
            }
        }
    }

    /// Counts a wakeup of member `i` unless its driver was already called now.
    fn called(&mut self, i: usize) {
        let m = &mut self.members[i];
        if m.last_call != Some(self.now) {
            m.last_call = Some(self.now);
            m.wakeups += 1;
        }
    }

    /// Carries out what member `i`'s driver asked for, and wakes it up at
    /// its next deadline.
    fn drain(&mut self, i: usize) {
        while let Some(out) = self.members[i].driver.as_mut().and_then(Driver::poll_output) {
            match out {
                Output::Send { to, data } => self.send(i, to.addr, data),
                Output::AnnounceGroup => self.counters.group_announces += 1,
                Output::Check(node) => {
                    if self.net.hosts_refuse
                        && let Some(&j) = self.index.get(&node.addr)
                        && self.members[j].status == Status::Dead
                        && self.members[j].side == self.members[i].side
                    {
                        let rtt = 2 * nanos(self.net.delay);
                        self.push(self.now + rtt, Event::Refused { member: i, node });
                    }
                }
                Output::Pull(node) => {
                    if self.members[i].pull
                        && let Some(&j) = self.index.get(&node.addr)
                    {
                        let rtt = 2 * nanos(self.net.delay);
                        self.push(self.now + rtt, Event::Pull { member: i, from: j });
                    }
                }
                Output::Event(MemberEvent::Joined(id)) => {
                    let Some(&j) = self.ids.get(&id) else { continue };
                    self.listed(i, j, true);
                    let m = &mut self.members[i];
                    if m.pull && !m.pulled {
                        m.pulled = true;
                        let rtt = 2 * nanos(self.net.delay);
                        self.push(self.now + rtt, Event::Pull { member: i, from: j });
                    }
                }
                Output::Event(MemberEvent::Left(id)) => {
                    let Some(&j) = self.ids.get(&id) else { continue };
                    self.listed(i, j, false);
                    if self.view_len(i) == 0 {
                        self.members[i].pulled = false;
                    }
                }
            }
        }
        let Some(next) = self.driver(i).map(Driver::next_deadline) else {
            return;
        };
        let at = nanos(next.saturating_duration_since(self.base)).max(self.now);
        if self.members[i].wake.is_none_or(|w| at < w) {
            self.members[i].wake = Some(at);
            self.push(at, Event::Wake { member: i });
        }
    }

    fn send(&mut self, from: usize, to: SocketAddr, data: Vec<u8>) {
        let m = &mut self.members[from];
        m.sent.0 += 1;
        m.sent.1 += data.len() as u64;
        let side = m.side;
        self.counters.sent += 1;
        self.counters.bytes += data.len() as u64;
        let Some(&j) = self.index.get(&to) else {
            self.counters.undelivered += 1;
            return;
        };
        if self.members[j].side != side || self.rng.random_bool(self.net.loss) {
            self.counters.lost += 1;
            return;
        }
        let at = match self.members[from].last_sent {
            // Sent together (an ack, then a ping): they arrive together.
            Some((sent, to, at)) if sent == self.now && to == j => at,
            _ => {
                let jitter = nanos(self.net.jitter);
                let delay = nanos(self.net.delay);
                let delay = if jitter == 0 {
                    delay
                } else {
                    (delay + self.rng.random_range(0..=2 * jitter)).saturating_sub(jitter)
                };
                self.now + delay
            }
        };
        let m = &mut self.members[from];
        m.last_sent = Some((self.now, j, at));
        let from = m.node.addr;
        self.push(at, Event::Deliver { to: j, from, data });
    }

    /// Member `i`'s driver started (`up`) or stopped listing member `j`.
    fn listed(&mut self, i: usize, j: usize, up: bool) {
        let m = &mut self.members[i];
        if bit(&m.sees, j) == up {
            return;
        }
        m.sees[j / 64] ^= 1 << (j % 64);
        let running = self.members[j].status == Status::Live;
        if up {
            self.holders[j] += 1;
            if running {
                self.missing -= 1;
            } else {
                self.stale += 1;
            }
        } else {
            self.holders[j] -= 1;
            if running {
                self.missing += 1;
                self.counters.false_downs += 1;
            } else {
                self.stale -= 1;
            }
        }
    }
}

/// Figures of one [`scenario`] run, in virtual time.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Members of the cluster (a newcomer may join it later).
    pub members: usize,
    /// Whether members pulled their seed's member list on joining.
    pub pull: bool,
    /// From the moment every member announced itself until every member
    /// listed every other; `None` if that did not happen within the limit.
    pub join: Option<Duration>,
    /// Idle traffic per member, after convergence.
    pub idle: Traffic,
    /// A newcomer joining the cluster after it settled: until every view is
    /// complete again (`None`: not within the limit, or no newcomer).
    pub newcomer: Option<Duration>,
    /// How many members the newcomer listed then (or at the limit).
    pub newcomer_view: usize,
    /// For each victim killed: from the kill until no running member listed
    /// it; `None` if that did not happen within the limit.
    pub detections: Vec<Option<Duration>>,
    /// The network's counters at the end.
    pub counters: Counters,
}

impl Figures {
    /// Median of the detection times (`None` counts as longest).
    pub fn median_detection(&self) -> Option<Duration> {
        let mut d = self.detections.clone();
        d.sort_by_key(|x| x.unwrap_or(Duration::MAX));
        d.get(d.len() / 2).copied().flatten()
    }

    /// Longest detection time (`None` if one was not detected).
    pub fn max_detection(&self) -> Option<Duration> {
        self.detections
            .iter()
            .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)))
    }
}

/// What [`scenario`] measures and how long it waits.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// How members join.
    pub join: JoinMode,
    /// Members join with [`Sim::start_pulling`] rather than [`Sim::start`].
    pub pull: bool,
    /// Give up waiting for convergence (or a detection) after this long.
    pub limit: Duration,
    /// Time left after convergence for the updates backlog to drain.
    pub settle: Duration,
    /// Window over which idle traffic is measured.
    pub idle_window: Duration,
    /// Whether a newcomer joins the settled cluster.
    pub newcomer: bool,
    /// How many members to kill, one after the other.
    pub victims: usize,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario {
            join: JoinMode::Seed,
            pull: false,
            limit: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            idle_window: Duration::from_secs(60),
            newcomer: true,
            victims: 5,
        }
    }
}

/// Runs the measurements of the benchmark on `cfg.members` members:
///
/// 1. they all join at once (`s.join`, `s.pull`): time until every view is
///    complete;
/// 2. after `s.settle`, idle traffic over `s.idle_window`;
/// 3. with `s.newcomer`, one more member joins through member 0: time until
///    every view is complete again;
/// 4. `s.victims` random members (never member 0) are killed one at a time,
///    each after the previous one was detected and its news had a second to
///    spread: time until no running member lists it.
pub fn scenario(mut cfg: SimConfig, s: &Scenario) -> Figures {
    let members = cfg.members;
    cfg.members += usize::from(s.newcomer);
    let mut sim = Sim::new(cfg);
    let t0 = sim.now();
    for i in 0..members {
        let seed = match s.join {
            JoinMode::Seed => 0,
            JoinMode::Random => sim.rng.random_range(0..i.max(1)),
        };
        sim.start_as(i, &[seed], s.pull);
    }
    let join = sim.run_until_cond(t0 + s.limit, Sim::converged).map(|t| t - t0);
    sim.run_for(s.settle);
    let idle = sim.measure_traffic(s.idle_window);
    let (mut newcomer, mut newcomer_view) = (None, 0);
    if s.newcomer {
        let t = sim.now();
        sim.start_as(members, &[0], s.pull);
        newcomer = sim.run_until_cond(t + s.limit, Sim::converged).map(|d| d - t);
        newcomer_view = sim.view_len(members);
        sim.run_for(s.settle);
    }
    let mut detections = Vec::new();
    for _ in 0..s.victims.min(members.saturating_sub(2)) {
        let victim = loop {
            let v = sim.rng.random_range(1..sim.len());
            if sim.status(v) == Status::Live {
                break v;
            }
        };
        sim.kill(victim);
        let t = sim.now();
        let d = sim.run_until_cond(t + s.limit, |sim| sim.holders(victim) == 0);
        detections.push(d.map(|d| d - t));
        sim.run_for(Duration::from_secs(1));
    }
    Figures {
        members,
        pull: s.pull,
        join,
        idle,
        newcomer,
        newcomer_view,
        detections,
        counters: sim.counters(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn addresses_are_distinct_labels() {
        assert_eq!(addr_of(0).to_string(), "10.0.0.1:7373");
        assert_eq!(addr_of(255).to_string(), "10.0.1.0:7373");
        assert_eq!(addr_of(70_000).to_string(), "10.1.17.113:7373");
    }

    #[test]
    fn ten_members_converge_then_detect_a_death() {
        let mut sim = Sim::new(SimConfig::lan(10, 1));
        sim.start_all(JoinMode::Seed);
        assert!(!sim.converged());
        let join = sim
            .run_until_cond(5 * SECOND, Sim::converged)
            .expect("10 members converge within 5 s");
        assert!(join < 2 * SECOND, "join took {join:?}");
        sim.check_views().unwrap();
        for i in 0..10 {
            assert_eq!(sim.view_len(i), 9);
            assert_eq!(sim.holders(i), 9);
        }
        sim.run_for(5 * SECOND);
        sim.check_views().unwrap();
        assert!(sim.converged());

        sim.kill(4);
        assert!(!sim.converged());
        assert_eq!(sim.holders(4), 9);
        let t = sim.now();
        let gone = sim
            .run_until_cond(t + 10 * SECOND, |s| s.holders(4) == 0)
            .expect("death detected")
            - t;
        // Its host gone (no check answers): SWIM alone, a probe period of
        // 800 ms and 500 ms of suspicion after the first missed probe (issue 9
        // doubled the period to halve idle traffic; the bound was 2 s).
        assert!(gone <= 3 * SECOND, "detection took {gone:?}");
        assert!(sim.converged());
        sim.check_views().unwrap();
        for i in (0..10).filter(|&i| i != 4) {
            assert_eq!(sim.view_len(i), 8);
        }
    }

    #[test]
    fn thirty_members_random_seeds_converge_and_detect_deaths() {
        // Several runs, as one seed says little. Thirty members started at
        // once, each announcing to a random earlier one: most runs converge
        // within 1 s; in some, a few members learn of each other only when
        // one probes the other (pure SWIM, no pull here: at worst after 29
        // probe periods, 23 s). With 1 % loss the slowest of three
        // detections varies with the seed too (over 159 seeds: half within
        // 2.2 s, a quarter over 3 s, none over 5.5 s).
        let (mut joins, mut worst) = (Vec::new(), Vec::new());
        for seed in 1..=8 {
            let f = scenario(
                SimConfig::lan(30, seed),
                &Scenario {
                    join: JoinMode::Random,
                    limit: 25 * SECOND,
                    settle: 2 * SECOND,
                    idle_window: 10 * SECOND,
                    victims: 3,
                    ..Scenario::default()
                },
            );
            joins.push(
                f.join
                    .unwrap_or_else(|| panic!("seed {seed}: 30 members converge within 25 s")),
            );
            assert_eq!(f.detections.len(), 3);
            worst.push(f.max_detection().expect("every death detected"));
            // One probe (ping + ack) per period (800 ms) each way, and a little
            // more (issue 9 halved it: the range was 4 to 8).
            assert!(f.idle.packets_per_s > 2.0 && f.idle.packets_per_s < 4.0, "{:?}", f.idle);
            assert!(f.counters.lost > 0, "1 % of datagrams are lost");
        }
        assert!(
            joins.iter().filter(|&&j| j <= 5 * SECOND).count() >= 6,
            "joins: {joins:?}"
        );
        worst.sort();
        assert!(worst[3] <= 3 * SECOND, "median of the slowest detections: {worst:?}");
        assert!(worst[7] <= 6 * SECOND, "slowest detections: {worst:?}");
    }

    #[test]
    fn idle_members_fall_into_step_and_share_wakeups() {
        // Each member probes one other per period (a timer, then the ack)
        // and is probed about once (a ping): three wakeups a period, 3.75/s.
        // A ping that arrives just before a member's own probe starts it at
        // once, and a member that probed early falls back a little so that
        // the next ping finds it due again (`driver::EARLY`, `driver::LAG`).
        // The member whose own timer started its probe leads; it falls back
        // further (`driver::LEAD_LAG`), so the lead, and the wakeup of the
        // one ping a period that finds no probe to start, go round instead
        // of always costing the same member. Many seeds: one run's figures
        // move with where the 1 % losses fall.
        let mut seen = Vec::new();
        for (n, seeds) in [(3, 100..120), (5, 100..110), (10, 100..105)] {
            for seed in seeds {
                let f = scenario(
                    SimConfig::lan(n, seed),
                    &Scenario {
                        settle: 5 * SECOND,
                        idle_window: 60 * SECOND,
                        newcomer: false,
                        victims: 0,
                        ..Scenario::default()
                    },
                );
                assert!(f.join.is_some(), "{n} members converge");
                assert_eq!(f.counters.false_downs, 0);
                // Probes start at most EARLY sooner, LEAD_LAG later: traffic stays put.
                assert!(
                    f.idle.packets_per_s > 2.0 && f.idle.packets_per_s < 3.5,
                    "{n} members, seed {seed}: {:?}",
                    f.idle
                );
                seen.push((n, f.idle));
            }
        }
        let mean = |n: Option<usize>, of: fn(&Traffic) -> f64| {
            let v: Vec<f64> = seen
                .iter()
                .filter(|s| n.is_none_or(|n| s.0 == n))
                .map(|s| of(&s.1))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (all, max3) = (mean(None, |t| t.wakeups_per_s), mean(Some(3), |t| t.max_wakeups_per_s));
        eprintln!("wakeups/s per member: mean {all:.3}; 3 members, the busiest: {max3:.3}");
        // Without EARLY and LAG: 3.89 over these runs; with them, 3.24.
        assert!(all < 3.5, "mean {all:.2}");
        // Without LEAD_LAG the busiest of 3 wakes 3.44 times/s; with it 3.14.
        assert!(max3 < 3.25, "the busiest of 3 members: {max3:.2}");
    }

    #[test]
    fn a_newcomer_pulling_the_member_list_converges_at_once() {
        let s = Scenario {
            limit: 10 * SECOND,
            settle: 2 * SECOND,
            idle_window: SECOND,
            victims: 0,
            pull: true,
            ..Scenario::default()
        };
        let f = scenario(SimConfig::lan(60, 3), &s);
        assert!(f.join.expect("converged") <= 2 * SECOND, "{f:?}");
        let newcomer = f.newcomer.expect("the newcomer converged");
        assert!(newcomer <= SECOND, "{f:?}");
        assert_eq!(f.newcomer_view, 60);
        // The newcomer alone pulled 60 records (59 members, and itself).
        assert!(f.counters.pulled >= 60, "{f:?}");
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let run = |seed| {
            let mut sim = Sim::new(SimConfig::lan(12, seed));
            sim.start_all(JoinMode::Random);
            let join = sim.run_until_cond(10 * SECOND, Sim::converged);
            sim.run_for(3 * SECOND);
            (join, sim.counters())
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).1, run(4).1);
    }

    #[test]
    fn lossy_network_loses_and_a_lone_member_announces_again() {
        let mut cfg = SimConfig::lan(2, 5);
        cfg.net.loss = 1.0;
        let mut sim = Sim::new(cfg);
        sim.start(0, &[]);
        sim.start(1, &[0]);
        sim.run_for(3 * SECOND);
        // The servers' schedule, now that the simulation runs their driver:
        // announces at 0, then after 500 ms, 1 s, 2 s backing off: 0.5, 1.5,
        // 3.5 s. (The former re-implementation announced at 0.25, 0.75 and
        // 1.75 s too, which no server did.) Both members, alone, also ask for
        // a multicast announce each time.
        let c = sim.counters();
        assert_eq!((c.sent, c.lost), (3, 3));
        assert_eq!(c.group_announces, 6);
        assert_eq!(sim.view_len(1), 0);
        assert!(!sim.converged());
    }

    #[test]
    fn partition_splits_views_and_healing_joins_them_again() {
        let mut sim = Sim::new(SimConfig::lan(10, 11));
        sim.start_all(JoinMode::Seed);
        sim.run_until_cond(5 * SECOND, Sim::converged).expect("converged");
        sim.partition(|i| u32::from(i >= 5));
        let t = sim.now();
        let split = |s: &Sim| (0..10).all(|i| s.view_len(i) == 4);
        sim.run_until_cond(t + 20 * SECOND, split)
            .expect("each side sees only itself");
        sim.check_views().unwrap();
        sim.heal();
        let t = sim.now();
        // Members declared down renew their identity; announces to down
        // members (every 2 s) bring the sides together.
        let healed = |s: &Sim| s.converged() && (0..10).all(|i| s.view_len(i) == 9);
        let back = sim.run_until_cond(t + 30 * SECOND, healed).expect("healed") - t;
        assert!(back <= 10 * SECOND, "healing took {back:?}");
        sim.check_views().unwrap();
    }

    /// A killed server whose host is up: the first member whose probe it
    /// misses checks it, is refused, and declares it down at once.
    #[test]
    fn a_killed_server_on_a_live_host_is_gone_at_its_first_missed_probe() {
        let mut cfg = SimConfig::lan(10, 3);
        cfg.net.hosts_refuse = true;
        let mut sim = Sim::new(cfg);
        sim.start_all(JoinMode::Seed);
        let t = sim.now();
        sim.run_until_cond(t + 5 * SECOND, Sim::converged).expect("joined");
        sim.run_for(5 * SECOND);
        let mut worst = Duration::ZERO;
        for victim in [4, 7] {
            sim.kill(victim);
            let t = sim.now();
            let gone = sim
                .run_until_cond(t + 10 * SECOND, |s| s.holders(victim) == 0)
                .expect("death detected")
                - t;
            worst = worst.max(gone);
            sim.run_for(3 * SECOND);
        }
        // A probe comes within about a period; then its round trip time
        // (150 ms), a connect, and gossip: no suspicion to wait for.
        assert!(worst <= 1500 * MS, "detection took {worst:?}");
        sim.check_views().unwrap();
    }
}
