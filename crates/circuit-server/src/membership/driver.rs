//! The membership driver: everything a member does, with no socket and no
//! clock of its own. It owns the foca (SWIM) instance, its timers, the
//! re-announce to seeds while alone, and the translation of foca's
//! notifications into the view of live members and [`MemberEvent`]s.
//!
//! Inputs are calls, each given the current time: a datagram received
//! ([`Driver::handle_data`]), the time passing ([`Driver::tick`], due at
//! [`Driver::next_deadline`]), a join, a pulled member list, a leave.
//! Outputs wait in a queue ([`Driver::poll_output`]): datagrams to send,
//! multicast announces, events; the view is read with [`Driver::view`].
//! The UDP task (`swim.rs`) feeds it real datagrams and real time; the
//! simulation (bench `membership_sim`) feeds many of them a simulated network
//! and a manual clock, so both run this same code.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use circuit_proto::ServerId;
use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::{debug, info, warn};

use super::node::Node;

/// While alone, re-announce to seeds (and by multicast) this often at first…
pub const ALONE_FIRST: Duration = Duration::from_millis(250);
/// …backing off to this.
pub const ALONE_MAX: Duration = Duration::from_secs(5);

/// The foca instance a driver runs.
pub type Swim = Foca<Node, PostcardCodec, SmallRng, foca::NoCustomBroadcast>;

/// A change in membership, in the order this server learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A server joined the cluster.
    Joined(ServerId),
    /// A server left the cluster or was declared dead.
    Left(ServerId),
}

/// What the driver asks its shell to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `data` (foca's bytes, not sealed) to `to.addr`.
    Send {
        /// The member it is for.
        to: Node,
        /// The datagram's payload.
        data: Vec<u8>,
    },
    /// This member is alone: announce it by multicast, if discovery is on.
    AnnounceGroup,
    /// The view changed (already applied to [`Driver::view`]).
    Event(MemberEvent),
}

/// A foca timer waiting for its time.
struct Pending {
    at: Instant,
    seq: u64,
    timer: Timer<Node>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest timer.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One member's membership, driven by calls (see the module doc).
pub struct Driver {
    me: Node,
    swim: Swim,
    rt: AccumulatingRuntime<Node>,
    /// Announced to while alone: the `-j` seeds and whoever we were told to join.
    seeds: Vec<Node>,
    view: BTreeMap<ServerId, Node>,
    view_changed: bool,
    timers: BinaryHeap<Pending>,
    seq: u64,
    /// Next check of "am I alone?", and the pause after it.
    alone_at: Instant,
    alone_every: Duration,
    out: VecDeque<Output>,
    errors: u64,
}

impl Driver {
    /// A member `me` with SWIM timing `config`, its randomness from `seed`.
    /// It checks at once (at `now`) whether it is alone, so its first
    /// [`Driver::tick`] announces it to `seeds`; then, while it stays alone,
    /// after 500 ms, 1 s, 2 s… backing off to [`ALONE_MAX`].
    pub fn new(me: Node, config: foca::Config, seed: u64, seeds: Vec<Node>, now: Instant) -> Driver {
        Driver {
            me,
            swim: Foca::new(me, config, SmallRng::seed_from_u64(seed), PostcardCodec),
            rt: AccumulatingRuntime::new(),
            seeds: seeds.into_iter().filter(|s| s.id != me.id).collect(),
            view: BTreeMap::new(),
            view_changed: false,
            timers: BinaryHeap::new(),
            seq: 0,
            alone_at: now,
            alone_every: ALONE_FIRST,
            out: VecDeque::new(),
            errors: 0,
        }
    }

    /// This member's current identity (its incarnation grows when it rejoins).
    pub fn me(&self) -> Node {
        self.me
    }

    /// The other live members (alive or suspect), by id.
    pub fn view(&self) -> &BTreeMap<ServerId, Node> {
        &self.view
    }

    /// True once after each change of [`Driver::view`]: the shell then
    /// publishes it.
    pub fn take_view_changed(&mut self) -> bool {
        std::mem::take(&mut self.view_changed)
    }

    /// The foca instance, to inspect (tests, simulation).
    pub fn foca(&self) -> &Swim {
        &self.swim
    }

    /// How many errors foca returned so far (bad datagrams, mostly).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Driver::tick`] has something to do next.
    pub fn next_deadline(&self) -> Instant {
        match self.timers.peek() {
            Some(p) => p.at.min(self.alone_at),
            None => self.alone_at,
        }
    }

    /// Handles a membership datagram (already opened: foca's bytes).
    pub fn handle_data(&mut self, now: Instant, data: &[u8]) {
        let r = self.swim.handle_data(data, &mut self.rt);
        self.check(r, "a datagram");
        self.flush(now);
    }

    /// Runs every timer due at `now`, and the alone check if due.
    pub fn tick(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.timers.pop() else { break };
            let r = self.swim.handle_timer(p.timer, &mut self.rt);
            self.check(r, "a timer");
            self.flush(now);
        }
        if self.alone_at <= now {
            if self.swim.num_members() == 0 {
                for s in self.seeds.clone() {
                    let r = self.swim.announce(s, &mut self.rt);
                    self.check(r, "an announce");
                }
                self.out.push_back(Output::AnnounceGroup);
                self.alone_every = (self.alone_every * 2).min(ALONE_MAX);
            } else {
                self.alone_every = ALONE_FIRST;
            }
            self.alone_at = now + self.alone_every;
            self.flush(now);
        }
    }

    /// Merges our cluster with the one `node` is in; `node` is also
    /// announced to from now on whenever this member is alone.
    pub fn join(&mut self, now: Instant, node: Node) {
        if node.id != self.me.id && !self.seeds.iter().any(|s| s.addr == node.addr) {
            self.seeds.push(node);
        }
        info!(peer = %node.id, addr = %node.addr, "joining the cluster of {}", node.id);
        self.announce(now, node);
    }

    /// Announces this member to `node` once (a server heard by multicast).
    pub fn announce(&mut self, now: Instant, node: Node) {
        let r = self.swim.announce(node, &mut self.rt);
        self.check(r, "an announce");
        self.flush(now);
    }

    /// What this member knows of every member (alive, suspect or down), itself
    /// included, to hand to a member that just joined.
    pub fn snapshot(&self) -> Vec<Member<Node>> {
        let mut all: Vec<Member<Node>> = self.swim.iter_membership_state().cloned().collect();
        all.push(Member::alive(self.me));
        all
    }

    /// Learns members from another member's [`Driver::snapshot`].
    pub fn apply(&mut self, now: Instant, members: Vec<Member<Node>>) {
        let n = members.len();
        let r = self.swim.apply_many(members.into_iter(), false, &mut self.rt);
        self.check(r, "a member list");
        debug!(members = n, "applied a member list pulled from a peer");
        self.flush(now);
    }

    /// Tells the cluster this member leaves; send what [`Driver::poll_output`]
    /// then gives, and stop driving it.
    pub fn leave(&mut self, now: Instant) {
        let r = self.swim.leave_cluster(&mut self.rt);
        self.check(r, "leaving");
        self.flush(now);
    }

    fn check(&mut self, r: Result<(), foca::Error>, what: &str) {
        if let Err(e) = r {
            self.errors += 1;
            debug!(error = %e, "membership: foca refused {what}");
        }
    }

    /// Takes in what foca asked for.
    fn flush(&mut self, now: Instant) {
        while let Some((to, data)) = self.rt.to_send() {
            self.out.push_back(Output::Send {
                to,
                data: data.to_vec(),
            });
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.seq += 1;
            self.timers.push(Pending {
                at: now + after,
                seq: self.seq,
                timer,
            });
        }
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(node) => self.up(node),
                OwnedNotification::MemberDown(node) => self.down(node),
                OwnedNotification::Rename(old, new) if old.id == new.id => {
                    // The same server, renewed (it rejoined after a cut).
                    if self.view.contains_key(&old.id) {
                        self.view.insert(new.id, new);
                        self.view_changed = true;
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    // Another server now lives at that address: the old one
                    // (restarted, with a new id) is gone.
                    self.down(old);
                    if self.swim.iter_members().any(|m| m.id() == &new) {
                        self.up(new);
                    }
                }
                OwnedNotification::Idle => {
                    info!("no other member is reachable; announcing again to seeds");
                    self.alone_every = ALONE_FIRST;
                    self.alone_at = now + ALONE_FIRST;
                }
                OwnedNotification::Active => debug!("known by the cluster"),
                OwnedNotification::Rejoin(me) => {
                    info!(
                        incarnation = me.incarnation,
                        "was declared down by the cluster; rejoined"
                    );
                    self.me = me;
                }
                OwnedNotification::Defunct => warn!("declared down by the cluster and cannot rejoin"),
            }
        }
    }

    fn up(&mut self, node: Node) {
        if node.id == self.me.id {
            return;
        }
        if self.view.insert(node.id, node).is_none() {
            info!(peer = %node.id, addr = %node.addr, "member joined: /{}", node.id);
            self.out.push_back(Output::Event(MemberEvent::Joined(node.id)));
        }
        self.view_changed = true;
    }

    fn down(&mut self, node: Node) {
        // A renewed identity of the same server may already have replaced it.
        if self
            .view
            .get(&node.id)
            .is_some_and(|n| n.incarnation == node.incarnation)
        {
            self.view.remove(&node.id);
            self.view_changed = true;
            info!(peer = %node.id, addr = %node.addr, "member left: /{}", node.id);
            self.out.push_back(Output::Event(MemberEvent::Left(node.id)));
        }
    }
}
