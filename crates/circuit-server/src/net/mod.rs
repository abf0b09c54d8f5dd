//! Listener, sessions and request routing. A connection is secured, then
//! multiplexed; each inbound stream carries one request. `net` knows where a
//! request goes, not what elements do with it.

pub mod peers;
mod route;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::frame::{self, FrameError, MAX_REQUEST};
use circuit_proto::secure::{HandshakeError, server_handshake};
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

/// What a server refuses, each kind logged on its own.
#[derive(Clone, Copy)]
pub(crate) enum Limit {
    /// A request over [`MAX_REQUEST`].
    Size = 0,
    /// A request over the connection's budget.
    Connection = 1,
    /// A request over the server's budget.
    Server = 2,
    /// A request not whole within [`REQUEST_TIMEOUT`].
    Deadline = 3,
    /// A handshake refused (see [`Refused::of`]).
    Greeting = 4,
    KeyRequired = 5,
    NoKeyExpected = 6,
    WrongKey = 7,
    HandshakeTimeout = 8,
    HandshakeOther = 9,
    /// A sealed record that did not open (a replayed handshake, forged bytes).
    Sealed = 10,
    /// A multiplexer protocol error.
    Mux = 11,
    /// A connection over the per-address cap.
    PerAddr = 12,
    /// `accept` failed (out of descriptors and the like).
    Accept = 13,
}

const LIMITS: usize = 14;

impl Limit {
    /// The log limiter of a handshake refusal.
    fn of(e: &HandshakeError) -> Limit {
        match e {
            HandshakeError::Protocol | HandshakeError::Greeting(_) => Limit::Greeting,
            HandshakeError::KeyRequired => Limit::KeyRequired,
            HandshakeError::NoKeyExpected => Limit::NoKeyExpected,
            HandshakeError::WrongKey => Limit::WrongKey,
            HandshakeError::Timeout(_) => Limit::HandshakeTimeout,
            _ => Limit::HandshakeOther,
        }
    }
}

/// Logs the first refusal of each kind, then at most one line per kind and
/// [`WARN_EVERY`] with how many were refused meanwhile: a flood of refusals
/// never floods the log, and no kind hides another.
#[derive(Default)]
pub(crate) struct Warner {
    /// Per kind: when it was last logged, and refusals since.
    last: std::sync::Mutex<[(Option<std::time::Instant>, u64); LIMITS]>,
}

impl Warner {
    /// True if a line is due now; else counts one more quiet refusal.
    fn due(&self, limit: Limit) -> Option<u64> {
        let mut all = self.last.lock().unwrap();
        let (last, quiet) = &mut all[limit as usize];
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            *quiet += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(quiet))
    }

    pub(crate) fn warn(&self, peer: SocketAddr, limit: Limit, what: &str) {
        if let Some(also) = self.due(limit) {
            warn!(%peer, refused_since_last_line = also, "{what}");
        }
    }
}

/// Open connections per client address, capped.
pub(crate) struct PerAddr {
    pub(crate) max: usize,
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted on drop.
pub(crate) struct Counted {
    table: Arc<PerAddr>,
    ip: IpAddr,
}

impl PerAddr {
    /// At most `max` connections per address.
    pub(crate) fn new(max: usize) -> PerAddr {
        PerAddr {
            max,
            open: Default::default(),
        }
    }

    /// Counts a connection from `ip`, or `None` if it has `max` already.
    pub(crate) fn admit(table: &Arc<PerAddr>, ip: IpAddr) -> Option<Counted> {
        let mut open = table.open.lock().unwrap();
        let n = open.entry(ip).or_default();
        if *n >= table.max {
            return None;
        }
        *n += 1;
        Some(Counted {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Streams being served on one connection; the connection is idle at 0.
/// Requests only count and stamp (two atomics); the connection's one timer
/// is re-armed when it fires, never per request.
struct Active {
    n: AtomicUsize,
    /// When `n` last fell to 0, in ms since `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Default for Active {
    fn default() -> Active {
        Active {
            n: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Active {
    /// When the connection may be closed if it stays idle, or `None` if it
    /// is idle longer than `timeout` already.
    fn close_at(&self, timeout: Duration) -> Option<Instant> {
        let busy = self.n.load(Ordering::SeqCst) > 0;
        let since = self.epoch + Duration::from_millis(self.idle_since.load(Ordering::SeqCst));
        let from = if busy { Instant::now() } else { since };
        let at = from + timeout;
        (busy || at > Instant::now()).then_some(at)
    }
}

/// One stream being served; uncounted on drop.
struct Busy(Arc<Active>);

impl Busy {
    fn new(active: &Arc<Active>) -> Busy {
        active.n.fetch_add(1, Ordering::SeqCst);
        Busy(active.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since.store(ms, Ordering::SeqCst);
        self.0.n.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The first pause after a failed `accept`; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between two `accept` attempts after failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

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

/// How long the server must be quiet (no connection closed, no request
/// served) before it gives freed memory back to the system.
const TRIM_AFTER: Duration = Duration::from_millis(500);
/// Fewer activities than this since the last trim leave too little to give
/// back to be worth it: a lone request (a member pulling our member list)
/// would otherwise cost the server two timer wakeups and a blocking-pool
/// thread started and ended.
const TRIM_MIN: u64 = 32;

/// Gives the memory freed after a burst back to the system. glibc's malloc
/// keeps freed memory in its arenas (one per thread that allocated) and only
/// returns the top of each heap; after 2,000 connections closed the server
/// kept 30–100 MiB it no longer used. `malloc_trim(0)` releases every free
/// page of every arena. It runs once per burst of at least [`TRIM_MIN`]
/// activities, [`TRIM_AFTER`] after the last, so an idle server never wakes
/// for it and a busy one never pays for it mid-burst.
struct Trimmer {
    /// Told when the activities since the last trim reach [`TRIM_MIN`]
    /// (a stored permit).
    woken: tokio::sync::Notify,
    /// Activities since the last trim.
    count: AtomicU64,
    /// The last activity, in ms since `epoch`.
    last: AtomicU64,
    epoch: Instant,
}

impl Default for Trimmer {
    fn default() -> Trimmer {
        Trimmer {
            woken: tokio::sync::Notify::new(),
            count: AtomicU64::new(0),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Trimmer {
    /// Something was freed (a connection closed, a request was answered):
    /// a stamp, and a wake-up only when a burst is big enough to trim after.
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == TRIM_MIN {
            self.woken.notify_one();
        }
    }

    /// When the quiet period after the last activity ends.
    fn quiet_at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::SeqCst)) + TRIM_AFTER
    }

    /// Trims after each burst, until the server's shutdown.
    fn spawn(self: &Arc<Trimmer>, state: &State) {
        let (me, rt) = (self.clone(), state.ctx.rt.clone());
        rt.tasks.clone().spawn(async move {
            let quiet_then_trim = async {
                loop {
                    me.woken.notified().await;
                    // Sleep to the end of the quiet period; activity meanwhile moves it.
                    loop {
                        let at = me.quiet_at();
                        if Instant::now() >= at {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    me.count.store(0, Ordering::SeqCst);
                    let _ = tokio::task::spawn_blocking(give_back).await;
                }
            };
            tokio::select! {
                _ = quiet_then_trim => {}
                _ = rt.shutdown.cancelled() => {}
            }
        });
    }
}

/// Touches the trimmer when dropped (a connection's end, however it ends).
struct Touch(Arc<Trimmer>);

impl Drop for Touch {
    fn drop(&mut self) {
        self.0.touch();
    }
}

/// Returns free heap pages to the system (glibc); elsewhere nothing.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Accepts connections until the listener fails. A failed `accept` (out of
/// descriptors, say) pauses the loop, longer each time up to
/// [`ACCEPT_BACKOFF_MAX`], and is logged at most once per [`WARN_EVERY`].
pub async fn serve(state: Arc<State>, listener: TcpListener) {
    let budget = Budget::for_server();
    let warner = Arc::new(Warner::default());
    let per_addr = Arc::new(PerAddr::new(state.config.max_conns_per_addr));
    let trimmer = Arc::new(Trimmer::default());
    trimmer.spawn(&state);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = ACCEPT_BACKOFF_MIN;
                c
            }
            Err(e) => {
                if let Some(also) = warner.due(Limit::Accept) {
                    warn!(error = %e, failed_since_last_line = also, pause = ?backoff, "accept failed; pausing accepts, longer while it lasts");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some(counted) = PerAddr::admit(&per_addr, peer.ip()) else {
            let why = format!(
                "refused connection: {} connections from this address are open already (--max-conns-per-addr)",
                per_addr.max
            );
            warner.warn(peer, Limit::PerAddr, &why);
            drop(tcp);
            continue;
        };
        let state = state.clone();
        let budget = budget.for_connection();
        let warner = warner.clone();
        let trimmer = trimmer.clone();
        tokio::spawn(async move {
            let _counted = counted;
            let _trim = Touch(trimmer.clone());
            let (io, report) = match server_handshake(tcp, state.config.key.as_ref()).await {
                Ok(io) => io,
                // A member checking that we listen: nothing went wrong.
                Err(HandshakeError::Silent) => {
                    debug!(%peer, "connection closed before its greeting");
                    return;
                }
                Err(e) => {
                    warner.warn(peer, Limit::of(&e), &format!("refused connection: {}", e.seen()));
                    return;
                }
            };
            debug!(%peer, "connection open");
            let mut incoming = conn::server(io);
            let active = Arc::new(Active::default());
            let idle_timeout = state.config.idle_timeout;
            // One timer for the connection, re-armed only when it fires.
            let close = tokio::time::sleep(idle_timeout);
            tokio::pin!(close);
            loop {
                tokio::select! {
                    stream = incoming.next() => match stream {
                        Some(stream) => {
                            let busy = Busy::new(&active);
                            let (state, budget) = (state.clone(), budget.clone());
                            let trimmer = trimmer.clone();
                            tokio::spawn(async move {
                                handle(state, peer, stream, budget).await;
                                drop(busy);
                                trimmer.touch();
                            });
                        }
                        None => break,
                    },
                    _ = &mut close => match active.close_at(idle_timeout) {
                        Some(later) => close.as_mut().reset(later.into()),
                        None => {
                            debug!(%peer, ?idle_timeout, "closing a connection idle too long");
                            drop(incoming);
                            return;
                        }
                    },
                }
            }
            if let Some(e) = incoming.protocol_error() {
                warner.warn(
                    peer,
                    Limit::Mux,
                    &format!("closed connection: multiplexer protocol error: {e}"),
                );
            }
            if let Some(why) = report.failure() {
                warner.warn(peer, Limit::Sealed, &format!("closed connection: {why}"));
            }
            debug!(%peer, "connection closed");
        });
    }
}

/// An in-process connection to this server, for the web console: its
/// streams are served by the same [`handle`] as a client's (the same limits,
/// log lines and routing, local or forwarded to the owner), so the console
/// is one more client, never a second dispatch path. `peer` names it in the
/// log. The connection ends when the returned control and its streams are
/// gone, or at the server's shutdown.
pub fn local_connection(state: &Arc<State>, peer: SocketAddr) -> conn::Control {
    let (near, far) = tokio::io::duplex(256 * 1024);
    let control = conn::client(Box::new(near));
    let mut incoming = conn::server(Box::new(far));
    let budget = Budget::for_server().for_connection();
    let state = state.clone();
    let shutdown = state.ctx.rt.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                s = incoming.next() => s,
                _ = shutdown.cancelled() => None,
            };
            let Some(stream) = stream else { break };
            let (state, budget) = (state.clone(), budget.clone());
            tokio::spawn(handle(state, peer, stream, budget));
        }
    });
    control
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the trimmer was told to wake (takes the stored permit).
    async fn woken(t: &Trimmer) -> bool {
        tokio::time::timeout(Duration::ZERO, t.woken.notified()).await.is_ok()
    }

    #[tokio::test]
    async fn a_trim_waits_for_a_burst_worth_trimming_after() {
        let t = Trimmer::default();
        for _ in 1..TRIM_MIN {
            t.touch();
        }
        assert!(!woken(&t).await, "a few requests do not wake the trimmer");
        t.touch();
        assert!(woken(&t).await, "a burst does");
        t.touch();
        assert!(!woken(&t).await, "once per burst");
        assert_eq!(t.count.load(Ordering::SeqCst), TRIM_MIN + 1);
    }
}
