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

use circuit_proto::beacon::{self, Beacon, MAX_DATAGRAM, Unopened};
use circuit_proto::{Key, ServerId};
use foca::Member;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::alarm::Alarm;
pub use super::driver::MemberEvent;
use super::driver::{Driver, Output, Refusal};
use super::node::{Node, swim_config};
use super::udp::Datagrams;

/// `CRM2`: each datagram starts with its sender's view digest (`CRM1` had none).
const MAGIC: &[u8; 4] = b"CRM2";
const PURPOSE: &str = "membership";

/// How long a liveness check (a TCP connect to a member) may take; a member
/// that does not answer in time is left to SWIM's own probes.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Dropped datagrams are logged at most this often, as a count.
const DROPPED_LOG_EVERY: Duration = Duration::from_secs(10);

enum Cmd {
    Join(Node),
    Announce(Node),
    Hint(ServerId),
    Refused(Node),
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
    pulls: Arc<std::sync::Mutex<Option<mpsc::Receiver<Node>>>>,
}

impl Membership {
    /// Starts the task. `seeds` are announced to at start and whenever this
    /// server finds itself alone; with `group`, it also announces itself by
    /// multicast while alone and joins servers it hears there.
    pub fn spawn(
        me: Node,
        sock: Datagrams,
        key: Option<Key>,
        seeds: Vec<Node>,
        group: Option<(Datagrams, SocketAddrV4)>,
    ) -> Membership {
        if key.is_none() && !me.addr.ip().is_loopback() {
            warn!(
                addr = %me.addr,
                "NO CLUSTER KEY on a non-loopback address: anyone who can reach {} (TCP and UDP) can join this cluster, \
                 forge its membership and run processes as this server's user; give every server a key file (-hmac FILE)",
                me.addr
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Arc::new(RwLock::new(BTreeMap::new()));
        let (events, _) = broadcast::channel(1024);
        // The driver asks for a pull at most every 15 s: a short queue is plenty.
        let (pulls, pulls_rx) = mpsc::channel(4);
        let m = Membership {
            me,
            cmd: tx,
            view: view.clone(),
            events: events.clone(),
            pulls: Arc::new(std::sync::Mutex::new(Some(pulls_rx))),
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
            pulls,
            cmd: m.cmd.clone(),
            dropped: Dropped::default(),
            dropped_logged: None,
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

    /// Announces this server to `node` once (it does not list us).
    pub fn announce(&self, node: Node) {
        let _ = self.cmd.send(Cmd::Announce(node));
    }

    /// A hint that member `id` may be gone (a connection to it broke): it is
    /// checked at once, and declared down if nothing listens at its address.
    pub fn hint(&self, id: ServerId) {
        let _ = self.cmd.send(Cmd::Hint(id));
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

    /// The members whose view disagreed with ours for a while: pull each
    /// one's member list and [`Membership::apply`] it. Given once; `None` after.
    pub fn take_pulls(&self) -> Option<mpsc::Receiver<Node>> {
        self.pulls.lock().unwrap().take()
    }
}

struct Task {
    sock: Datagrams,
    key: Option<Key>,
    group: Option<(Datagrams, SocketAddrV4)>,
    view: Arc<RwLock<BTreeMap<ServerId, Node>>>,
    events: broadcast::Sender<MemberEvent>,
    /// Where the driver's pulls go (see [`Membership::take_pulls`]).
    pulls: mpsc::Sender<Node>,
    /// The task's own inbox, for the answers of liveness checks.
    cmd: mpsc::UnboundedSender<Cmd>,
    /// Datagrams dropped since the last log line.
    dropped: Dropped,
    /// When a dropped datagram was last logged (the first is logged at once).
    dropped_logged: Option<tokio::time::Instant>,
}

/// The current time, from tokio's clock (so a paused test clock applies).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Task {
    async fn run(mut self, mut driver: Driver, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let mut gbuf = vec![0u8; MAX_DATAGRAM];
        let mut alarm = Alarm::new();
        loop {
            let deadline = driver.next_deadline();
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let why = match beacon::open_bytes(MAGIC, PURPOSE, &buf[..n], self.key.as_ref()) {
                            Some(body) => driver.handle_data(now(), from, &body).err().map(Why::Refused),
                            None => {
                                let why = beacon::why_unopened(MAGIC, &buf[..n], self.key.as_ref());
                                debug!(%from, ?why, "ignored a membership datagram that did not open");
                                Some(Why::Unopened(why))
                            }
                        };
                        if let Some(why) = why {
                            self.count_dropped(from, why);
                        }
                    }
                }
                _ = alarm.until(deadline) => driver.tick(now()),
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Join(node)) => driver.join(now(), node),
                    Some(Cmd::Announce(node)) => driver.announce(now(), node),
                    Some(Cmd::Hint(id)) => driver.hint(id),
                    Some(Cmd::Refused(node)) => driver.refused(now(), node),
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
                        let _ = g.send_to(&b, from);
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

    /// Counts a dropped datagram; logs the count at most every 10 s.
    fn count_dropped(&mut self, from: SocketAddr, why: Why) {
        self.dropped.count(why);
        let t = tokio::time::Instant::now();
        if self.dropped_logged.is_none_or(|last| t >= last + DROPPED_LOG_EVERY) {
            let d = std::mem::take(&mut self.dropped);
            warn!(last_from = %from, count = d.total(), "ignored membership datagrams: {}", d.summary());
            self.dropped_logged = Some(t);
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
                    if let Err(e) = self.sock.send_to(&sealed, to.addr) {
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
                        let _ = g.send_to(&b, (*group).into());
                    }
                }
                Output::Event(e) => {
                    let _ = self.events.send(e);
                }
                Output::Pull(node) => {
                    let _ = self.pulls.try_send(node);
                }
                Output::Check(node) => {
                    let cmd = self.cmd.clone();
                    tokio::spawn(async move {
                        if listens(&node).await == Some(false) {
                            let _ = cmd.send(Cmd::Refused(node));
                        }
                    });
                }
            }
        }
    }
}

async fn recv_group(group: &Option<(Datagrams, SocketAddrV4)>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match group {
        Some((s, _)) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// Whether something listens at `node`'s address: `Some(false)` when its host
/// refused the connection (the server is dead, its host alive), `Some(true)`
/// when it accepted, `None` when it could not tell (no answer in time).
async fn listens(node: &Node) -> Option<bool> {
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(node.addr)).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            info!(peer = %node.id, addr = %node.addr, "member check: connection refused");
            Some(false)
        }
        Ok(Err(e)) => {
            debug!(peer = %node.id, error = %e, "member check failed");
            None
        }
        Err(_) => None,
    }
}

/// Why a membership datagram was ignored.
#[derive(Clone, Copy, Debug)]
enum Why {
    Unopened(Unopened),
    Refused(Refusal),
}

/// Ignored datagrams since the last log line, counted by what an operator
/// would do about them.
#[derive(Default)]
struct Dropped {
    /// Another circuit version's wire format, and the last one seen.
    version: u64,
    theirs: Option<[u8; 4]>,
    /// Sealed while we have no key.
    sealed: u64,
    /// Plain while we have a key.
    unsealed: u64,
    /// Sealed under another key, or corrupted.
    other_key: u64,
    /// Not membership's, or not a message of foca's.
    garbled: u64,
    /// Opened, but claiming what contradicts a known member.
    contradicts: u64,
}

impl Dropped {
    fn count(&mut self, why: Why) {
        match why {
            Why::Unopened(Unopened::OtherVersion { theirs }) => {
                self.version += 1;
                self.theirs = Some(theirs);
            }
            Why::Unopened(Unopened::Sealed) => self.sealed += 1,
            Why::Unopened(Unopened::Unsealed) => self.unsealed += 1,
            Why::Unopened(Unopened::OtherKey) => self.other_key += 1,
            Why::Unopened(Unopened::Foreign) | Why::Refused(Refusal::Garbled) => self.garbled += 1,
            Why::Refused(Refusal::WrongSource | Refusal::Rewrites | Refusal::Usurps) => self.contradicts += 1,
        }
    }

    fn total(&self) -> u64 {
        self.version + self.sealed + self.unsealed + self.other_key + self.garbled + self.contradicts
    }

    /// One line: each kind seen, and what to do about it.
    fn summary(&self) -> String {
        let theirs = self
            .theirs
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .unwrap_or_default();
        let ours = String::from_utf8_lossy(MAGIC);
        [
            (
                self.version,
                format!(
                    "from a server of another circuit version (wire format {theirs}, ours {ours}): run one version on every server"
                ),
            ),
            (
                self.sealed,
                "sealed with a cluster key, and this server has none: give every server the same key file (-hmac FILE)".into(),
            ),
            (
                self.unsealed,
                "not sealed, and this server has a cluster key: give every server the same key file (-hmac FILE)".into(),
            ),
            (
                self.other_key,
                "sealed with another cluster key or corrupted: check that every server has the same key file".into(),
            ),
            (self.garbled, "not membership's, or corrupted".into()),
            (
                self.contradicts,
                "contradicting a known server (sent from another address, rewriting its address, or claiming it): forged or corrupted".into(),
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn ignored_datagrams_are_summed_up_by_what_to_do() {
        let mut d = Dropped::default();
        assert_eq!(d.total(), 0);
        d.count(Why::Unopened(Unopened::OtherVersion { theirs: *b"CRM1" }));
        assert_eq!(
            d.summary(),
            "1 from a server of another circuit version (wire format CRM1, ours CRM2): run one version on every server"
        );
        for _ in 0..3 {
            d.count(Why::Unopened(Unopened::Foreign));
        }
        d.count(Why::Refused(Refusal::Garbled));
        d.count(Why::Refused(Refusal::Rewrites));
        d.count(Why::Unopened(Unopened::Sealed));
        assert_eq!(d.total(), 7);
        let s = d.summary();
        assert!(s.contains("; 1 sealed with a cluster key, and this server has none: give every server the same key file (-hmac FILE); 4 not membership's, or corrupted; 1 contradicting a known server"), "{s}");
        assert!(!s.contains('\n') && !s.contains("not sealed"), "{s}");
    }

    fn node_at(addr: SocketAddr, id: u64) -> Node {
        Node {
            id: ServerId(id),
            addr,
            pid: 1,
            started: 1,
            incarnation: 0,
        }
    }

    /// A member whose datagrams keep carrying a digest other than ours is
    /// handed to whoever took [`Membership::take_pulls`]: the real task,
    /// over real UDP on loopback, against a driver run by hand whose
    /// datagrams get their digest spoiled on the way.
    #[tokio::test]
    async fn a_member_that_keeps_disagreeing_is_handed_over_for_a_pull() {
        let sa = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sb = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = (
            node_at(sa.local_addr().unwrap(), 1),
            node_at(sb.local_addr().unwrap(), 2),
        );
        let m = Membership::spawn(a, Datagrams::new(sa).unwrap(), None, Vec::new(), None);
        let mut pulls = m.take_pulls().expect("the pulls, once");
        assert!(m.take_pulls().is_none());
        let mut d = Driver::new(b, swim_config(8), 5, vec![a], Instant::now());
        let mut buf = vec![0u8; MAX_DATAGRAM + 64];
        let end = Instant::now() + Duration::from_secs(10);
        let pulled = loop {
            assert!(Instant::now() < end, "no pull asked for within 10 s");
            while let Some(out) = d.poll_output() {
                if let Output::Send { to, mut data } = out {
                    data[0] ^= 0xff; // another view than the one it holds
                    sb.send_to(&beacon::seal_bytes(MAGIC, PURPOSE, &data, None), to.addr)
                        .await
                        .unwrap();
                }
            }
            let wait = d.next_deadline().saturating_duration_since(Instant::now());
            tokio::select! {
                r = sb.recv_from(&mut buf) => {
                    let (n, from) = r.unwrap();
                    let body = beacon::open_bytes(MAGIC, PURPOSE, &buf[..n], None).expect("sealed");
                    let _ = d.handle_data(Instant::now(), from, &body);
                }
                _ = tokio::time::sleep(wait.min(Duration::from_millis(50))) => d.tick(Instant::now()),
                p = pulls.recv() => break p.expect("a member to pull"),
            }
        };
        assert_eq!(pulled.id, b.id);
        assert_eq!(m.get(b.id).map(|n| n.addr), Some(b.addr), "a member all along");
    }
}
