//! Answering multicast discovery queries with our URL.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use circuit_proto::beacon::{self, Beacon, MAX_DATAGRAM};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::State;

/// A UDP socket joined to `group` through interface `iface`, shared with
/// other servers on this host (SO_REUSEPORT). Loopback traffic gets TTL 0 so
/// it never leaves the host.
pub fn group_socket(group: SocketAddrV4, iface: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port())).into())?;
    s.join_multicast_v4(group.ip(), &iface)?;
    s.set_multicast_if_v4(&iface)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(if iface.is_loopback() { 0 } else { 1 })?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Starts answering queries on `group`.
pub fn spawn(state: Arc<State>, group: SocketAddrV4) -> std::io::Result<()> {
    let sock = group_socket(group, state.config.multicast_if)?;
    info!(%group, iface = %state.config.multicast_if, "answering multicast discovery");
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let key = state.config.key.clone();
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            match beacon::open(&buf[..n], key.as_ref()) {
                Some(Beacon::Query { nonce }) => {
                    debug!(%from, "discovery query");
                    let reply = beacon::seal(
                        &Beacon::Announce {
                            nonce,
                            url: state.url.to_string(),
                        },
                        key.as_ref(),
                    );
                    let _ = sock.send_to(&reply, from).await;
                }
                Some(Beacon::Announce { .. }) => {}
                None => debug!(%from, "ignored a datagram that is not ours or not sealed with our key"),
            }
        }
    });
    Ok(())
}
