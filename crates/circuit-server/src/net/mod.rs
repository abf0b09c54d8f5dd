//! Listener, sessions and request routing. A connection is secured, then
//! multiplexed; each inbound stream carries one request. `net` knows where a
//! request goes, not what elements do with it.

pub mod peers;
mod route;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::frame::{FrameError, read_frame};
use circuit_proto::secure::server_handshake;
use circuit_proto::{ErrorKind, Request, WireError};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::State;

/// How long a client may take to send its request after opening a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the listener fails.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let io = match server_handshake(tcp, state.config.key.as_ref()).await {
                Ok(io) => io,
                Err(e) => {
                    warn!(%peer, error = %e, "refused connection");
                    return;
                }
            };
            debug!(%peer, "connection open");
            let mut incoming = conn::server(io);
            while let Some(stream) = incoming.next().await {
                tokio::spawn(handle(state.clone(), peer, stream));
            }
            debug!(%peer, "connection closed");
        });
    }
}

/// Reads one request, logs it, and routes it.
async fn handle(state: Arc<State>, peer: SocketAddr, mut stream: StreamHandle) {
    let req: Request = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream)).await {
        Err(_) => return,
        Ok(Err(FrameError::Eof)) => return,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "bad request");
            let err = WireError::new(ErrorKind::Invalid, format!("bad request: {e}"));
            let _ = conn::respond(&mut stream, &Err(err)).await;
            return;
        }
        Ok(Ok(req)) => req,
    };
    info!(%peer, op = req.verb(), path = %req.path(), "request");
    if req.op.may_wait() {
        // Acknowledge the stream now: its answer may be long in coming.
        let _ = stream.ack().await;
    }
    route::route(state, req, stream).await;
}

/// The address to put in our URL when listening on 0.0.0.0: the first
/// non-loopback IPv4 address of this host, else loopback.
pub fn advertised_ip() -> IpAddr {
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|addrs| {
            addrs
                .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
                .find(|ip| !ip.is_loopback())
        })
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The first IPv4 address of interface `name`.
pub fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        (a.interface_name == name)
            .then(|| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
            .flatten()
    })
}
