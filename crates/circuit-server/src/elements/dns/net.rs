//! The DNS element's sockets: binding one port for UDP and TCP, the UDP
//! receive loop and the TCP connections. Nothing here is logged per query.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Receives, answers, sends, with one buffer each way, for good.
async fn udp_loop(sock: &UdpSocket, records: &Records) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(answer::MAX_UDP);
    let mut pause = Pause::default();
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => {
                pause.wait().await;
                continue;
            }
        };
        pause.reset();
        let reply = answer::answer(&records.read(), &buf[..n], Transport::Udp, &mut out);
        if reply {
            // A send that fails (the peer's buffer is full, it is gone) loses
            // one answer; the client asks again.
            let _ = sock.send_to(&out, peer).await;
        }
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
