//! Who a member is, as SWIM (foca) sees it, and the timing of the protocol.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use circuit_proto::{CircuitUrl, ServerId};
use serde::{Deserialize, Serialize};

/// A member of the cluster: a server's id and where it listens. Membership
/// datagrams go to the same address (UDP) as requests (TCP).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// The server's id.
    pub id: ServerId,
    /// Its address, TCP for requests and UDP for membership.
    pub addr: SocketAddr,
    /// Its OS process id (part of its URL).
    pub pid: u32,
    /// When it started (ms since the epoch): a restarted server on the same
    /// address wins over its previous life.
    pub started: u64,
    /// Bumped when it rejoins after being declared down (a cut healed).
    pub incarnation: u16,
}

impl Node {
    /// The node a circuit URL names (for joining it). Its start time is
    /// unknown, so it loses address conflicts against what the member says itself.
    pub fn from_url(url: &CircuitUrl) -> Option<Node> {
        use std::net::ToSocketAddrs;
        let addr = url.addr.to_socket_addrs().ok()?.next()?;
        Some(Node {
            id: url.id,
            addr,
            pid: url.pid,
            started: 0,
            incarnation: 0,
        })
    }

    /// The member's circuit URL.
    pub fn url(&self) -> CircuitUrl {
        CircuitUrl {
            addr: self.addr.to_string(),
            pid: self.pid,
            id: self.id,
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.addr, self.incarnation)
    }
}

impl foca::Identity for Node {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Node {
            incarnation: self.incarnation.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        (self.started, self.incarnation) > (other.started, other.incarnation)
    }
}

/// How often a member probes another.
pub const PROBE_PERIOD: Duration = Duration::from_millis(800);
/// How long a suspect member has to refute the suspicion.
pub const SUSPICION: Duration = Duration::from_millis(500);

/// SWIM timing, for a cluster of up to about `cluster_size_hint` members.
///
/// Idle traffic does not depend on the cluster size: a member probes one
/// other member per period (800 ms), so it sends about 2.5 datagrams/s (its
/// pings, and acks to whoever probes it) whatever the size, plus one announce
/// every 30 s; gossip rounds send nothing while there is no news. Figures from
/// the simulation (bench `membership_sim`, running the driver): about 2.6–2.8
/// datagrams and 160–210 bytes per second per member at 3 and 100 members.
///
/// A dead member is suspected after one failed probe (direct, then through 3
/// others after 150 ms) and declared down 700 ms later; the news then spreads
/// by gossip. Simulated on a LAN with 1 % loss: gone from every view in about
/// 1.4 s with 3 members, under 2.5 s with 1,000.
///
/// Only the dissemination depends on the size hint. Each update (a member
/// joined, is suspect, is down) is passed on `max_transmissions` times by
/// every member that learns it; too few and some members never hear of some
/// others until a periodic announce happens to repair it (minutes in a large
/// cluster): the simulation shows such gaps with 8 transmissions at 100
/// members and 16 at 1,000. We take `3.5 · ln(n + 1)`, at least 8 (25 for
/// 1,000 members). It costs nothing while idle, only a few more datagrams
/// per membership change, so overestimating the size is cheap and
/// underestimating it is not: pass an upper bound. It is the one parameter
/// that may change on a running member (`Foca::set_config` with a new
/// `swim_config(n)` as the cluster grows).
///
/// Gossip rounds (only while there is news) go to 8 members every 50 ms, so
/// an update is passed on within about 150 ms by each member that learns it:
/// 1,000 members joining at once converge in about 2 s.
pub fn swim_config(cluster_size_hint: u32) -> foca::Config {
    let n = cluster_size_hint.max(1);
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(n).unwrap());
    c.probe_period = PROBE_PERIOD;
    c.probe_rtt = Duration::from_millis(150);
    c.num_indirect_probes = NonZeroUsize::new(3).unwrap();
    c.suspect_to_down_after = SUSPICION;
    c.max_transmissions = max_transmissions(n);
    // Forget dead members after a while, so announcing to them stays bounded.
    c.remove_down_after = Some(Duration::from_secs(120));
    c.max_packet_size = NonZeroUsize::new(1300).unwrap();
    c.notify_down_members = true;
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: NonZeroUsize::new(1).unwrap(),
    });
    // After a cut heals, both sides find each other again through this
    // (within 1.5 s, plus up to one probe period: it runs lax).
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(1500),
        num_members: NonZeroUsize::new(1).unwrap(),
    });
    // Gossip is the driver's: it runs only while there is news (foca's
    // periodic gossip wakes the member every 50 ms even when idle).
    c.periodic_gossip = None;
    c
}

/// How many times each member passes each update on: `3.5 · ln(n + 1)`,
/// between 8 and 64.
fn max_transmissions(cluster_size: u32) -> NonZeroU8 {
    let tx = (3.5 * f64::from(cluster_size).ln_1p()).ceil().clamp(8.0, 64.0);
    NonZeroU8::new(tx as u8).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_and_restarted_win() {
        let a = Node {
            id: ServerId(1),
            addr: "10.0.0.1:1".parse().unwrap(),
            pid: 1,
            started: 5,
            incarnation: 0,
        };
        let renewed = a.renew().unwrap();
        assert!(renewed.win_addr_conflict(&a) && !a.win_addr_conflict(&renewed));
        let restarted = Node {
            id: ServerId(2),
            started: 9,
            ..a
        };
        assert!(restarted.win_addr_conflict(&renewed));
        let url = a.url();
        assert_eq!(Node::from_url(&url).unwrap().addr, a.addr);
    }

    #[test]
    fn transmissions_grow_with_the_cluster_and_timing_does_not() {
        let tx = |n| swim_config(n).max_transmissions.get();
        assert_eq!((tx(0), tx(3), tx(8), tx(100), tx(1000)), (8, 8, 8, 17, 25));
        assert_eq!(tx(u32::MAX), 64);
        // What foca refuses to change on a running member stays the same.
        let (small, big) = (swim_config(3), swim_config(1000));
        assert_eq!((small.probe_period, small.probe_rtt), (big.probe_period, big.probe_rtt));
        assert_eq!(small.suspect_to_down_after, big.suspect_to_down_after);
    }
}
