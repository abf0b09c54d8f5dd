//! The membership task: a foca SWIM instance fed by this server's UDP
//! socket and its timers. It keeps the view of live members that `ls /`
//! shows and routing uses, and publishes joins and leaves in order.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use circuit_proto::beacon::{self, Beacon, MAX_DATAGRAM};
use circuit_proto::{Key, ServerId};
use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::node::{Node, swim_config};

const MAGIC: &[u8; 4] = b"CRM1";
const PURPOSE: &str = "membership";
/// While alone, re-announce to seeds (and by multicast) this often at first…
const ALONE_FIRST: Duration = Duration::from_millis(250);
/// …backing off to this.
const ALONE_MAX: Duration = Duration::from_secs(5);

/// A change in membership, in the order this server learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A server joined the cluster.
    Joined(ServerId),
    /// A server left the cluster or was declared dead.
    Left(ServerId),
}

enum Cmd {
    Join(Node),
    Leave(oneshot::Sender<()>),
    Snapshot(oneshot::Sender<Vec<Member<Node>>>),
    Apply(Vec<Member<Node>>),
}

/// Handle on the membership task.
#[derive(Clone)]
pub struct Membership {
    me: Node,
    cmd: mpsc::UnboundedSender<Cmd>,
    view: Arc<RwLock<BTreeMap<ServerId, Node>>>,
    events: broadcast::Sender<MemberEvent>,
}

impl Membership {
    /// Starts the task. `seeds` are announced to at start and whenever this
    /// server finds itself alone; with `group`, it also announces itself by
    /// multicast while alone and joins servers it hears there.
    pub fn spawn(
        me: Node,
        sock: UdpSocket,
        key: Option<Key>,
        seeds: Vec<Node>,
        group: Option<(UdpSocket, SocketAddrV4)>,
    ) -> Membership {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Arc::new(RwLock::new(BTreeMap::new()));
        let (events, _) = broadcast::channel(1024);
        let m = Membership {
            me,
            cmd: tx,
            view: view.clone(),
            events: events.clone(),
        };
        let task = Task {
            me,
            sock,
            key,
            seeds,
            group,
            view,
            events,
        };
        tokio::spawn(task.run(rx));
        m
    }

    /// This server as a member.
    pub fn me(&self) -> Node {
        self.me
    }

    /// The other live members.
    pub fn members(&self) -> Vec<Node> {
        self.view.read().unwrap().values().copied().collect()
    }

    /// A live member by id.
    pub fn get(&self, id: ServerId) -> Option<Node> {
        self.view.read().unwrap().get(&id).copied()
    }

    /// Number of members, this server included.
    pub fn len(&self) -> usize {
        self.view.read().unwrap().len() + 1
    }

    /// Always false: a server is a member of its own cluster.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Merges our cluster with the one `node` is in.
    pub fn join(&self, node: Node) {
        let _ = self.cmd.send(Cmd::Join(node));
    }

    /// Leaves the cluster: tells the others, so they see us go at once.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), rx).await;
        }
    }

    /// What this server knows of every member (alive, suspect or down), to
    /// hand to a server that just joined.
    pub async fn snapshot(&self) -> Vec<Member<Node>> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Snapshot(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Learns members from another server's snapshot.
    pub fn apply(&self, members: Vec<Member<Node>>) {
        let _ = self.cmd.send(Cmd::Apply(members));
    }

    /// Joins and leaves from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }
}

struct Task {
    me: Node,
    sock: UdpSocket,
    key: Option<Key>,
    seeds: Vec<Node>,
    group: Option<(UdpSocket, SocketAddrV4)>,
    view: Arc<RwLock<BTreeMap<ServerId, Node>>>,
    events: broadcast::Sender<MemberEvent>,
}

type Swim = Foca<Node, PostcardCodec, SmallRng, foca::NoCustomBroadcast>;

impl Task {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let rng = SmallRng::seed_from_u64(ServerId::random().0);
        // Sized for a large cluster: over-estimating costs a few more datagrams per
        // membership change, under-estimating leaves members unaware of each other.
        let mut swim: Swim = Foca::new(self.me, swim_config(1024), rng, PostcardCodec);
        let mut rt = AccumulatingRuntime::new();
        let (timer_tx, mut timers) = mpsc::unbounded_channel::<Timer<Node>>();
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let mut gbuf = vec![0u8; MAX_DATAGRAM];
        let mut alone_every = ALONE_FIRST;
        let alone = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(alone);
        loop {
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        match beacon::open_bytes(MAGIC, PURPOSE, &buf[..n], self.key.as_ref()) {
                            Some(body) => { let _ = swim.handle_data(&body, &mut rt); }
                            None => debug!(%from, "ignored a membership datagram not sealed with our key"),
                        }
                    }
                }
                Some(t) = timers.recv() => { let _ = swim.handle_timer(t, &mut rt); }
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Join(node)) => {
                        if node.id != self.me.id && !self.seeds.iter().any(|s| s.addr == node.addr) {
                            self.seeds.push(node);
                        }
                        info!(peer = %node.id, addr = %node.addr, "joining the cluster of {}", node.id);
                        let _ = swim.announce(node, &mut rt);
                    }
                    Some(Cmd::Snapshot(reply)) => {
                        let mut all: Vec<Member<Node>> = swim.iter_membership_state().cloned().collect();
                        all.push(Member::alive(self.me));
                        let _ = reply.send(all);
                    }
                    Some(Cmd::Apply(members)) => {
                        let n = members.len();
                        let _ = swim.apply_many(members.into_iter(), false, &mut rt);
                        debug!(members = n, "applied a member list pulled from a peer");
                    }
                    Some(Cmd::Leave(done)) => {
                        let _ = swim.leave_cluster(&mut rt);
                        self.flush(&swim, &mut rt, &timer_tx).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                r = recv_group(&self.group, &mut gbuf) => {
                    if let Some((n, from)) = r
                        && let Some(Beacon::Query { nonce }) = beacon::open(&gbuf[..n], self.key.as_ref())
                        && let Some((g, _)) = &self.group
                    {
                        debug!(%from, "discovery query");
                        let b = beacon::seal(&Beacon::Announce { nonce, url: self.me.url().to_string() }, self.key.as_ref());
                        let _ = g.send_to(&b, from).await;
                    } else if let Some((n, from)) = r
                        && let Some(Beacon::Announce { url, .. }) = beacon::open(&gbuf[..n], self.key.as_ref())
                        && let Ok(url) = url.parse::<circuit_proto::CircuitUrl>()
                        && url.id != self.me.id
                        && self.view.read().unwrap().get(&url.id).is_none()
                        && let Some(node) = Node::from_url(&url)
                    {
                        debug!(%from, peer = %url.id, "heard a server by multicast");
                        let _ = swim.announce(node, &mut rt);
                    }
                }
                _ = &mut alone => {
                    if swim.num_members() == 0 {
                        for s in &self.seeds {
                            let _ = swim.announce(*s, &mut rt);
                        }
                        if let Some((g, group)) = &self.group {
                            let b = beacon::seal(&Beacon::Announce { nonce: 0, url: self.me.url().to_string() }, self.key.as_ref());
                            let _ = g.send_to(&b, *group).await;
                        }
                        alone_every = (alone_every * 2).min(ALONE_MAX);
                    } else {
                        alone_every = ALONE_FIRST;
                    }
                    alone.as_mut().reset(tokio::time::Instant::now() + alone_every);
                }
            }
            if self.flush(&swim, &mut rt, &timer_tx).await {
                alone_every = ALONE_FIRST;
                alone.as_mut().reset(tokio::time::Instant::now() + alone_every);
            }
        }
    }

    /// Carries out what foca asked; true when this server became alone.
    async fn flush(
        &mut self,
        swim: &Swim,
        rt: &mut AccumulatingRuntime<Node>,
        timers: &mpsc::UnboundedSender<Timer<Node>>,
    ) -> bool {
        while let Some((dst, data)) = rt.to_send() {
            let out = beacon::seal_bytes(MAGIC, PURPOSE, &data, self.key.as_ref());
            if let Err(e) = self.sock.send_to(&out, dst.addr).await {
                debug!(peer = %dst.id, error = %e, "membership send failed");
            }
        }
        while let Some((after, timer)) = rt.to_schedule() {
            let tx = timers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
        }
        let mut became_alone = false;
        while let Some(n) = rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(node) => self.up(node),
                OwnedNotification::MemberDown(node) => self.down(node),
                OwnedNotification::Rename(old, new) if old.id == new.id => {
                    // The same server, renewed (it rejoined after a cut).
                    let mut view = self.view.write().unwrap();
                    if view.contains_key(&old.id) {
                        view.insert(new.id, new);
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    // Another server now lives at that address: the old one
                    // (restarted, with a new id) is gone.
                    self.down(old);
                    if swim.iter_members().any(|m| m.id() == &new) {
                        self.up(new);
                    }
                }
                OwnedNotification::Idle => {
                    info!("no other member is reachable; announcing again to seeds");
                    became_alone = true;
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
        became_alone
    }

    fn up(&mut self, node: Node) {
        if node.id == self.me.id {
            return;
        }
        let fresh = self.view.write().unwrap().insert(node.id, node).is_none();
        if fresh {
            info!(peer = %node.id, addr = %node.addr, "member joined: /{}", node.id);
            let _ = self.events.send(MemberEvent::Joined(node.id));
        }
    }

    fn down(&mut self, node: Node) {
        let mut view = self.view.write().unwrap();
        // A renewed identity of the same server may already have replaced it.
        if view.get(&node.id).is_some_and(|n| n.incarnation == node.incarnation) {
            view.remove(&node.id);
            drop(view);
            info!(peer = %node.id, addr = %node.addr, "member left: /{}", node.id);
            let _ = self.events.send(MemberEvent::Left(node.id));
        }
    }
}

async fn recv_group(group: &Option<(UdpSocket, SocketAddrV4)>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match group {
        Some((s, _)) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}
