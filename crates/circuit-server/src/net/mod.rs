//! Listener, sessions and request routing. A connection is secured, then
//! multiplexed; each inbound stream carries one request. `net` knows where a
//! request goes, not what elements do with it.

pub mod peers;
mod route;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::frame::{self, FrameError, MAX_REQUEST};
use circuit_proto::secure::server_handshake;
use circuit_proto::{ErrorKind, Request, WireError};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::State;

/// How long a client may take to send its whole request after opening a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of unfinished requests one connection may hold at once.
pub const CONN_BUDGET: usize = 1 << 20;

/// Bytes of unfinished requests the whole server may hold at once.
pub const SERVER_BUDGET: usize = 16 << 20;

/// The least time between two log lines about refusals from one source.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits a request can meet, each logged on its own.
#[derive(Clone, Copy)]
enum Limit {
    Size = 0,
    Connection = 1,
    Server = 2,
    Deadline = 3,
}

/// Logs the first refusal of each limit from one source, then at most one
/// line per limit and [`WARN_EVERY`] with how many were refused meanwhile: a
/// flood of refused streams never floods the log, and no limit hides another.
#[derive(Default)]
struct Warner {
    /// Per limit: when it was last logged, and refusals since.
    last: std::sync::Mutex<[(Option<std::time::Instant>, u64); 4]>,
}

impl Warner {
    fn warn(&self, peer: SocketAddr, limit: Limit, what: &str) {
        let mut all = self.last.lock().unwrap();
        let (last, quiet) = &mut all[limit as usize];
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            *quiet += 1;
            return;
        }
        *last = Some(now);
        let also = std::mem::take(quiet);
        warn!(%peer, refused_since_last_line = also, "{what}");
    }
}

/// The bytes that requests being read may hold: the server's, shared by
/// every connection, and one connection's.
#[derive(Clone)]
struct Budget {
    server: Arc<tokio::sync::Semaphore>,
    server_warn: Arc<Warner>,
    conn: Arc<tokio::sync::Semaphore>,
    conn_warn: Arc<Warner>,
}

impl Budget {
    fn for_server() -> Budget {
        Budget {
            server: Arc::new(tokio::sync::Semaphore::new(SERVER_BUDGET)),
            server_warn: Arc::default(),
            conn: Arc::new(tokio::sync::Semaphore::new(0)),
            conn_warn: Arc::default(),
        }
    }

    /// The same server budget, with a fresh one for a new connection.
    fn for_connection(&self) -> Budget {
        Budget {
            conn: Arc::new(tokio::sync::Semaphore::new(CONN_BUDGET)),
            conn_warn: Arc::default(),
            ..self.clone()
        }
    }
}

/// Accepts connections until the listener fails.
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    let budget = Budget::for_server();
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
        let budget = budget.for_connection();
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
                tokio::spawn(handle(state.clone(), peer, stream, budget.clone()));
            }
            debug!(%peer, "connection closed");
        });
    }
}

/// Why a request was not read.
enum Unread {
    /// The stream ended before a request began: nothing to say.
    Gone,
    /// A limit refused it: the error to answer, and who logs it.
    Limit(WireError, Arc<Warner>, Limit),
    /// Malformed bytes.
    Bad(FrameError),
}

/// Reads one request frame within the budgets: its length word is checked
/// against [`MAX_REQUEST`], and the bytes it announces are taken from the
/// connection's and the server's budgets until the request is decoded.
async fn read_request(stream: &mut StreamHandle, budget: &Budget) -> Result<Request, Unread> {
    let (n, more) = match frame::read_word(stream).await {
        Ok(w) => w,
        Err(FrameError::Eof) => return Err(Unread::Gone),
        Err(FrameError::TooLarge(n)) => (n, true),
        Err(e) => return Err(Unread::Bad(e)),
    };
    if more || n > MAX_REQUEST {
        let e = FrameError::RequestTooLarge(if more { n.max(MAX_REQUEST + 1) } else { n });
        let why = WireError::new(ErrorKind::Invalid, format!("request refused: {e}"));
        return Err(Unread::Limit(why, budget.conn_warn.clone(), Limit::Size));
    }
    let permits = n as u32;
    let _conn = budget.conn.try_acquire_many(permits).map_err(|_| {
        let why = format!(
            "request refused: this connection's unfinished requests would pass the per-connection limit of {} MiB",
            CONN_BUDGET >> 20
        );
        Unread::Limit(
            WireError::new(ErrorKind::Busy, why),
            budget.conn_warn.clone(),
            Limit::Connection,
        )
    })?;
    let _server = budget.server.try_acquire_many(permits).map_err(|_| {
        let why = format!(
            "request refused: unfinished requests would pass the per-server limit of {} MiB; try again",
            SERVER_BUDGET >> 20
        );
        Unread::Limit(
            WireError::new(ErrorKind::Busy, why),
            budget.server_warn.clone(),
            Limit::Server,
        )
    })?;
    let mut body = Vec::new();
    frame::read_body(stream, n, &mut body).await.map_err(|e| match e {
        FrameError::Eof => Unread::Gone,
        e => Unread::Bad(e),
    })?;
    frame::decode(&body).map_err(Unread::Bad)
}

/// Reads one request, logs it, and routes it.
async fn handle(state: Arc<State>, peer: SocketAddr, mut stream: StreamHandle, budget: Budget) {
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream, &budget)).await;
    let refused = |why: String| WireError::new(ErrorKind::Invalid, why);
    let req = match read {
        Ok(Ok(req)) => req,
        Ok(Err(Unread::Gone)) => return,
        Err(_) => {
            let why = format!(
                "request refused: not whole within {} s (the request deadline)",
                REQUEST_TIMEOUT.as_secs()
            );
            budget.conn_warn.warn(peer, Limit::Deadline, &why);
            let _ = conn::respond(&mut stream, &Err(refused(why))).await;
            return;
        }
        Ok(Err(Unread::Limit(err, warner, limit))) => {
            warner.warn(peer, limit, &err.message);
            let _ = conn::respond(&mut stream, &Err(err)).await;
            return;
        }
        Ok(Err(Unread::Bad(e))) => {
            warn!(%peer, error = %e, "bad request");
            let _ = conn::respond(&mut stream, &Err(refused(format!("bad request: {e}")))).await;
            return;
        }
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
