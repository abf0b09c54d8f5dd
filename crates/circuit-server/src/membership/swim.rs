//! The membership task: a thin shell around the [`Driver`]. It feeds the
//! driver this server's UDP datagrams (opened with the cluster key), the
//! time (sleeping until the driver's next deadline) and the commands of the
//! [`Membership`] handle; it seals and sends the driver's datagrams, answers
//! discovery queries, publishes the view of live members that `ls /` shows
//! and routing uses, and broadcasts joins and leaves in order.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use circuit_proto::beacon::{self, Beacon, MAX_DATAGRAM};
use circuit_proto::{Key, ServerId};
use foca::Member;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::debug;

pub use super::driver::MemberEvent;
use super::driver::{Driver, Output};
use super::node::{Node, swim_config};

const MAGIC: &[u8; 4] = b"CRM1";
const PURPOSE: &str = "membership";

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
        // Sized for a large cluster: over-estimating costs a few more datagrams per
        // membership change, under-estimating leaves members unaware of each other.
        let driver = Driver::new(me, swim_config(1024), ServerId::random().0, seeds, now());
        let task = Task {
            sock,
            key,
            group,
            view,
            events,
        };
        tokio::spawn(task.run(driver, rx));
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
    sock: UdpSocket,
    key: Option<Key>,
    group: Option<(UdpSocket, SocketAddrV4)>,
    view: Arc<RwLock<BTreeMap<ServerId, Node>>>,
    events: broadcast::Sender<MemberEvent>,
}

/// The current time, from tokio's clock (so a paused test clock applies).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Task {
    async fn run(mut self, mut driver: Driver, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let mut gbuf = vec![0u8; MAX_DATAGRAM];
        let mut unsealed = Unsealed::default();
        loop {
            let deadline = tokio::time::Instant::from_std(driver.next_deadline());
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        match beacon::open_bytes(MAGIC, PURPOSE, &buf[..n], self.key.as_ref()) {
                            Some(body) => driver.handle_data(now(), &body),
                            None => unsealed.note(from),
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => driver.tick(now()),
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Join(node)) => driver.join(now(), node),
                    Some(Cmd::Snapshot(reply)) => { let _ = reply.send(driver.snapshot()); }
                    Some(Cmd::Apply(members)) => driver.apply(now(), members),
                    Some(Cmd::Leave(done)) => {
                        driver.leave(now());
                        self.carry_out(&mut driver).await;
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
                        let b = beacon::seal(&Beacon::Announce { nonce, url: driver.me().url().to_string() }, self.key.as_ref());
                        let _ = g.send_to(&b, from).await;
                    } else if let Some((n, from)) = r
                        && let Some(Beacon::Announce { url, .. }) = beacon::open(&gbuf[..n], self.key.as_ref())
                        && let Ok(url) = url.parse::<circuit_proto::CircuitUrl>()
                        && url.id != driver.me().id
                        && !driver.view().contains_key(&url.id)
                        && let Some(node) = Node::from_url(&url)
                    {
                        debug!(%from, peer = %url.id, "heard a server by multicast");
                        driver.announce(now(), node);
                    }
                }
            }
            self.carry_out(&mut driver).await;
        }
    }

    /// Carries out what the driver asked: publishes its view, sends its
    /// datagrams, then its events (so a subscriber finds a joined member).
    async fn carry_out(&mut self, driver: &mut Driver) {
        if driver.take_view_changed() {
            *self.view.write().unwrap() = driver.view().clone();
        }
        while let Some(out) = driver.poll_output() {
            match out {
                Output::Send { to, data } => {
                    let sealed = beacon::seal_bytes(MAGIC, PURPOSE, &data, self.key.as_ref());
                    if let Err(e) = self.sock.send_to(&sealed, to.addr).await {
                        debug!(peer = %to.id, error = %e, "membership send failed");
                    }
                }
                Output::AnnounceGroup => {
                    if let Some((g, group)) = &self.group {
                        let b = beacon::seal(
                            &Beacon::Announce {
                                nonce: 0,
                                url: driver.me().url().to_string(),
                            },
                            self.key.as_ref(),
                        );
                        let _ = g.send_to(&b, *group).await;
                    }
                }
                Output::Event(e) => {
                    let _ = self.events.send(e);
                }
            }
        }
    }
}

async fn recv_group(group: &Option<(UdpSocket, SocketAddrV4)>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match group {
        Some((s, _)) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// Datagrams that did not open (forged, corrupted, or not sealed with our
/// key), logged as a count: the first at once, then one line per
/// [`UNSEALED_EVERY`] at most, so a flood cannot flood the log.
#[derive(Default)]
struct Unsealed {
    last_line: Option<std::time::Instant>,
    since: u64,
}

/// The least time between two lines about unopened membership datagrams.
const UNSEALED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Unsealed {
    fn note(&mut self, from: std::net::SocketAddr) {
        self.since += 1;
        let now = now();
        if self.last_line.is_some_and(|t| now.duration_since(t) < UNSEALED_EVERY) {
            return;
        }
        self.last_line = Some(now);
        tracing::warn!(
            peer = %from,
            count = std::mem::take(&mut self.since),
            "ignored membership datagrams that did not open (forged, corrupted, or not sealed with our key)"
        );
    }
}
