//! A UDP socket that wakes its task for datagrams only.
//!
//! tokio's `UdpSocket` is registered for writability too, and a UDP socket
//! becomes writable again whenever the kernel frees a datagram it sent: on a
//! LAN that is when the peer has read it, a moment after our send, so every
//! ping and ack woke the idle server a second time for nothing. Membership
//! datagrams are small and few; a send that would block (a full send
//! buffer) is dropped like a lost datagram, which SWIM tolerates.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

struct Sock(std::net::UdpSocket);

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A UDP socket watched for reading only (see the module doc).
pub struct Datagrams(AsyncFd<Sock>);

impl Datagrams {
    /// Takes over a tokio socket (it must be used on the runtime that made it).
    pub fn new(sock: tokio::net::UdpSocket) -> io::Result<Datagrams> {
        let sock = sock.into_std()?;
        sock.set_nonblocking(true)?;
        // SAFETY: `Sock` owns the socket, which stays open as long as the
        // `AsyncFd` holding it, and always gives the same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(Sock(sock), Interest::READABLE) };
        fd.map(Datagrams).map_err(|e| e.into_parts().1)
    }

    /// The next datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(r) = ready.try_io(|s| s.get_ref().0.recv_from(buf)) {
                return r;
            }
        }
    }

    /// Sends a datagram now, or fails (`WouldBlock` when the send buffer is full).
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().0.send_to(data, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sends_and_receives() {
        let a = Datagrams::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.0.get_ref().0.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(a.send_to(b"ping", b_addr).unwrap(), 4);
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a_addr));
        b.send_to(b"ack", a_addr).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"ack"[..], b_addr));
    }
}
