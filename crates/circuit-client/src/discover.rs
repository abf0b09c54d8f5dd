use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use circuit_proto::beacon::{self, Beacon, MAX_DATAGRAM};
use circuit_proto::{CircuitUrl, Key};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::error::Error;

/// How long discovery waits for an answer in all.
const DISCOVER_FOR: Duration = Duration::from_secs(3);
/// How often the query is repeated while waiting.
const RESEND_EVERY: Duration = Duration::from_millis(250);

/// Asks multicast group `group` (through interface address `iface`) for a
/// server and returns the URL of the first that answers.
pub async fn discover_url(group: SocketAddrV4, iface: Ipv4Addr, key: Option<&Key>) -> Result<CircuitUrl, Error> {
    let fail = |e: std::io::Error| Error::Discover(format!("multicast discovery on {group}: {e}"));
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(iface, 0)).into())
        .map_err(fail)?;
    s.set_multicast_if_v4(&iface).map_err(fail)?;
    s.set_multicast_loop_v4(true).map_err(fail)?;
    s.set_multicast_ttl_v4(if iface.is_loopback() { 0 } else { 1 })
        .map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    let sock = UdpSocket::from_std(s.into()).map_err(fail)?;
    let nonce = circuit_proto::ServerId::random().0;
    let query = beacon::seal(&Beacon::Query { nonce }, key);
    let deadline = tokio::time::Instant::now() + DISCOVER_FOR;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while tokio::time::Instant::now() < deadline {
        sock.send_to(&query, group).await.map_err(fail)?;
        let wait = tokio::time::sleep(RESEND_EVERY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { break };
                    if let Some(Beacon::Announce { nonce: got, url }) = beacon::open(&buf[..n], key)
                        && got == nonce
                        && let Ok(url) = url.parse()
                    {
                        return Ok(url);
                    }
                }
            }
        }
    }
    Err(Error::Discover(format!(
        "no circuit server answered on multicast group {group} via {iface} within {}s: are servers started with -discover {group} on this network, with the same key?",
        DISCOVER_FOR.as_secs()
    )))
}
