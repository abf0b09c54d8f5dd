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

/// SWIM timing. A member probes one other member per period, so idle
/// traffic per server is constant whatever the cluster size; a dead member
/// is suspected after one failed probe round and declared down after the
/// suspicion timeout: under 2 s on a LAN.
pub fn swim_config(cluster_size_hint: u32) -> foca::Config {
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(cluster_size_hint.max(1)).unwrap());
    c.probe_period = Duration::from_millis(400);
    c.probe_rtt = Duration::from_millis(150);
    c.num_indirect_probes = NonZeroUsize::new(3).unwrap();
    c.suspect_to_down_after = Duration::from_millis(700);
    c.max_transmissions = NonZeroU8::new(8).unwrap();
    // Forget dead members after a while, so announcing to them stays bounded.
    c.remove_down_after = Some(Duration::from_secs(120));
    c.max_packet_size = NonZeroUsize::new(1300).unwrap();
    c.notify_down_members = true;
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: NonZeroUsize::new(1).unwrap(),
    });
    // After a cut heals, both sides find each other again through this.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(1).unwrap(),
    });
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::new(3).unwrap(),
    });
    c
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
}
