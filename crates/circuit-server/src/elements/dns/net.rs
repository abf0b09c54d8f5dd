//! The DNS element's sockets: binding one port for UDP and TCP, the UDP
//! receive loop and the TCP connections. Nothing here is logged per query.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Records;
use super::answer::{self, Transport};

/// TCP connections one DNS element serves at once; more are closed at once.
pub const MAX_TCP: usize = 128;
/// A TCP connection with no query for this long is closed (RFC 7766 §6.2.3
/// asks for seconds, not minutes), and so is one whose query takes longer
/// than this to arrive.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Datagrams taken (and answers sent) by one system call.
const BATCH: usize = 32;
/// Longest query taken over UDP; a longer datagram is dropped.
const MAX_UDP_QUERY: usize = 2048;
/// Tries at finding a port free for both UDP and TCP.
const BIND_TRIES: usize = 32;

fn bind_error(e: io::Error, addr: SocketAddr, proto: &str) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("{addr} is in use ({proto})"),
        io::ErrorKind::AddrNotAvailable => format!("{} is not an address of this host", addr.ip()),
        io::ErrorKind::PermissionDenied => format!("binding {addr} ({proto}) is not permitted: {e}"),
        _ => format!("cannot bind {addr} ({proto}): {e}"),
    }
}

/// Binds UDP and TCP on one port at `addr`; port 0 picks one free for
/// both (a free UDP port may be taken for TCP: then another is tried).
pub fn bind(addr: SocketAddr) -> Result<(StdUdpSocket, StdTcpListener), String> {
    if addr.port() != 0 {
        let udp = StdUdpSocket::bind(addr).map_err(|e| bind_error(e, addr, "UDP"))?;
        let tcp = StdTcpListener::bind(addr).map_err(|e| bind_error(e, addr, "TCP"))?;
        return Ok((udp, tcp));
    }
    for _ in 0..BIND_TRIES {
        let udp = StdUdpSocket::bind(addr).map_err(|e| bind_error(e, addr, "UDP"))?;
        let port = udp.local_addr().map_err(|e| bind_error(e, addr, "UDP"))?.port();
        let at = SocketAddr::new(addr.ip(), port);
        match StdTcpListener::bind(at) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_error(e, at, "TCP")),
        }
    }
    Err(format!(
        "found no port free for both UDP and TCP on {} in {BIND_TRIES} tries",
        addr.ip()
    ))
}

/// Starts serving on the sockets: their tasks run on `tasks` until `stop`.
pub fn spawn(
    tasks: &TaskTracker,
    udp: StdUdpSocket,
    tcp: StdTcpListener,
    records: Arc<Records>,
    stop: CancellationToken,
) -> io::Result<()> {
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(udp)?;
    let tcp = TcpListener::from_std(tcp)?;
    let (r, s) = (records.clone(), stop.clone());
    tasks.spawn(async move {
        tokio::select! {
            _ = s.cancelled() => {}
            _ = udp_loop(&udp, &r) => {}
        }
    });
    let conns = tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = accept_loop(&tcp, &records, &conns, &stop) => {}
        }
    });
    Ok(())
}

/// Receives, answers, sends, for good: up to [`BATCH`] datagrams per
/// `recvmmsg` and their answers per `sendmmsg` (two system calls for a
/// batch instead of two per query), into buffers allocated once. nix's
/// `MultiHeaders` holds raw pointers (not `Send`), so each call makes its
/// own: two small allocations per batch, not per query.
async fn udp_loop(sock: &UdpSocket, records: &Records) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_UDP_QUERY]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(answer::MAX_UDP)).collect();
    let mut got: Vec<(usize, usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    let mut peers: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut pause = Pause::default();
    loop {
        got.clear();
        let received = sock
            .async_io(Interest::READABLE, || {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                    bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
                let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                let msgs = recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    .map_err(io::Error::from)?;
                for (i, m) in msgs.enumerate() {
                    if !m.flags.contains(MsgFlags::MSG_TRUNC) {
                        got.push((i, m.bytes, m.address));
                    }
                }
                Ok(())
            })
            .await;
        if received.is_err() {
            pause.wait().await;
            continue;
        }
        pause.reset();
        peers.clear();
        {
            let zone = records.read();
            for &(i, len, peer) in &got {
                let n = peers.len();
                if peer.is_some() && answer::answer(&zone, &bufs[i][..len], Transport::Udp, &mut outs[n]) {
                    peers.push(peer);
                }
            }
        }
        if peers.is_empty() {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = outs[..peers.len()].iter().map(|o| [IoSlice::new(o)]).collect();
        // An answer that cannot be sent (the peer is gone, a full buffer)
        // is lost, as a datagram may be: the client asks again.
        let _ = sock
            .async_io(Interest::WRITABLE, || {
                let no_cmsg: [ControlMessage<'_>; 0] = [];
                let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(peers.len(), None);
                sendmmsg(
                    fd,
                    &mut headers,
                    slices.iter(),
                    &peers[..],
                    no_cmsg,
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|_| ())
                .map_err(io::Error::from)
            })
            .await;
    }
}

/// Accepts connections, up to [`MAX_TCP`] at once.
async fn accept_loop(listener: &TcpListener, records: &Arc<Records>, tasks: &TaskTracker, stop: &CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    let mut pause = Pause::default();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of file descriptors, most likely: wait, then go on.
                pause.wait().await;
                continue;
            }
        };
        pause.reset();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (records, stop) = (records.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(stream, &records) => {}
            }
            drop(slot);
        });
    }
}

/// One TCP connection: length-prefixed queries, answered in order.
async fn connection(mut stream: TcpStream, records: &Records) {
    let _ = stream.set_nodelay(true);
    let mut query = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = u16::from_be_bytes(len) as usize;
        query.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if !answer::answer(&records.read(), &query, Transport::Tcp, &mut out) {
            continue;
        }
        out.splice(0..0, (out.len() as u16).to_be_bytes());
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(TCP_IDLE, write).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// A pause after a failed socket call: 5 ms, doubling to 1 s, reset on
/// the next success; so a lasting error cannot spin.
#[derive(Default)]
struct Pause(u32);

impl Pause {
    async fn wait(&mut self) {
        let ms = 5u64 << self.0.min(8);
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis(ms.min(1000))).await;
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}
