//! The multicast socket of discovery; the membership task answers queries
//! on it and announces itself there while alone.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::UdpSocket;

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
