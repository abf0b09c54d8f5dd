//! The web console (`circuit start --http ADDR`): a page embedded in the
//! binary, its JSON endpoints and one server-sent-events stream. It is a
//! client of this server like any other: every request it makes travels an
//! in-process connection ([`crate::net::local_connection`]) into the same
//! request handler and routing as a wire request, local or forwarded to the
//! server that owns the path. It never touches an element directly.
//!
//! Nothing listens without `--http`. Without a cluster key the console
//! refuses a non-loopback address unless `--http-insecure`; with one, every
//! request needs a session ([`auth`]).

mod api;
pub mod auth;
mod link;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use circuit_proto::Op;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::State as ServerState;
use crate::net::{Counted, Limit, PerAddr, Warner};

/// Turns a JSON spec typed in the page into the request that makes the
/// element (`kind` is `proc` or `watch`): the binary's own spec parser, the
/// one `mkproc` and `mkwatch` use, so the page and the CLI accept the same
/// text. The error is one line.
pub type SpecParser = fn(kind: &str, text: &str) -> Result<Op, String>;

/// How to serve the console.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// Where to listen (HTTP).
    pub addr: SocketAddr,
    /// Serve a non-loopback address without a cluster key.
    pub insecure: bool,
    /// Reads the specs of the "make" form.
    pub specs: SpecParser,
}

/// Claims the console's address: a clear error if it cannot, or if it
/// would be open to the network with no key and no `--http-insecure`.
pub async fn bind(config: &ConsoleConfig, keyed: bool) -> Result<TcpListener, String> {
    let addr = config.addr;
    if !keyed && !addr.ip().is_loopback() && !config.insecure {
        return Err(format!(
            "refusing to serve the web console on {addr} without a key: anyone who reaches it could run commands; \
             give -hmac FILE, a loopback address like 127.0.0.1:{}, or --http-insecure",
            addr.port()
        ));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("web console: cannot listen on {addr}: {e}"))
}

/// What every handler shares.
pub(crate) struct App {
    pub(crate) link: link::Link,
    pub(crate) auth: auth::Auth,
    pub(crate) specs: SpecParser,
    /// Check the Host header (a console without key on loopback, against
    /// DNS rebinding).
    check_host: bool,
    /// The cluster's statistics, asked for once every `STATS_EVERY` for
    /// every open event stream together (see [`App::stats_feed`]).
    stats: std::sync::Mutex<Option<Arc<tokio::sync::watch::Sender<Arc<str>>>>>,
}

impl App {
    /// The cluster's statistics (`stats /` as JSON, or `{"Error": …}`),
    /// fresh every `STATS_EVERY`: one request per tick however many pages
    /// are open, and none while no page is. The first `changed` answers at
    /// once with the latest figures, if there are any.
    pub(crate) fn stats_feed(self: &Arc<Self>) -> tokio::sync::watch::Receiver<Arc<str>> {
        let mut slot = self.stats.lock().unwrap();
        if let Some(tx) = slot.as_ref() {
            let mut rx = tx.subscribe();
            if !rx.borrow().is_empty() {
                rx.mark_changed();
            }
            return rx;
        }
        let (tx, rx) = tokio::sync::watch::channel(Arc::<str>::from(""));
        let tx = Arc::new(tx);
        *slot = Some(tx.clone());
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(api::STATS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let req = circuit_proto::Request::new(circuit_proto::Path::root(), circuit_proto::AnchorOp::Stats);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tx.closed() => {
                        // Under the lock: no stream can subscribe between
                        // this check and the feed's end.
                        let Some(app) = weak.upgrade() else { return };
                        let mut slot = app.stats.lock().unwrap();
                        if tx.receiver_count() == 0 {
                            *slot = None;
                            return;
                        }
                        continue;
                    }
                }
                let Some(app) = weak.upgrade() else { return };
                let data = match app.link.call(&req).await {
                    Ok(circuit_proto::Reply::Stats(s)) => serde_json::to_string(&s).unwrap_or_default(),
                    Ok(_) => continue,
                    Err(e) => serde_json::json!({"Error": link::line(&req, &e)}).to_string(),
                };
                tx.send_replace(data.into());
            }
        });
        rx
    }
}

/// Serves the console on `listener` until the server shuts down. The
/// router and the console's state are built at the first connection, so a
/// console nobody opens costs its socket and one task waiting on it.
pub fn spawn(state: Arc<ServerState>, listener: TcpListener, config: &ConsoleConfig) {
    let addr = listener.local_addr().unwrap_or(config.addr);
    let keyed = state.config.key.is_some();
    if keyed {
        info!(url = %format!("http://{addr}/"), "serving the web console; log in with the URL `circuit console-login` prints");
    } else {
        info!(url = %format!("http://{addr}/ui/"), "serving the web console");
        warn!(%addr, "the web console has no login (no -hmac key): whoever reaches {addr} controls the cluster");
    }
    let (check_host, specs) = (!keyed && !config.insecure, config.specs);
    let shutdown = state.ctx.rt.shutdown.clone();
    let tasks = state.ctx.rt.tasks.clone();
    tasks.spawn(async move {
        let first = tokio::select! {
            c = accept(&listener) => c,
            _ = shutdown.cancelled() => return,
        };
        let app = Arc::new(App {
            link: link::Link::new(state.clone(), addr),
            auth: auth::Auth::new(state.config.key.as_ref()),
            specs,
            check_host,
            stats: std::sync::Mutex::new(None),
        });
        let listener = Primed {
            first: Some(first),
            inner: listener,
            per_addr: Arc::new(PerAddr::new(state.config.max_conns_per_addr)),
            idle: state.config.idle_timeout,
            warner: Warner::default(),
        };
        use axum::serve::ListenerExt;
        let serve = axum::serve(
            listener.tap_io(|_| {}),
            router(app).into_make_service_with_connect_info::<SocketAddr>(),
        );
        tokio::select! {
            r = serve => if let Err(e) = r { warn!(error = %e, "the web console stopped") },
            _ = shutdown.cancelled() => {}
        }
    });
}

/// The next connection; a failed accept (out of descriptors) is logged
/// and retried after a pause.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                warn!(error = %e, "web console: accept failed; pausing");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The console's listener, with the connection that woke it first. Its
/// connections are held to the server's limits, as the circuit port's are:
/// at most `--max-conns-per-addr` per client address (more are closed as
/// they come), and closed after `--idle-timeout` without a byte either way
/// (an open page's event stream sends every 2 s).
struct Primed {
    first: Option<(tokio::net::TcpStream, SocketAddr)>,
    inner: TcpListener,
    per_addr: Arc<PerAddr>,
    idle: Duration,
    /// Logs refusals as the circuit port does: the first at once, then
    /// one line per 10 s with the count.
    warner: Warner,
}

impl axum::serve::Listener for Primed {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = match self.first.take() {
                Some(c) => c,
                None => accept(&self.inner).await,
            };
            let Some(counted) = PerAddr::admit(&self.per_addr, peer.ip()) else {
                let why = format!(
                    "web console: refused connection: {} connections from this address are open already (--max-conns-per-addr)",
                    self.per_addr.max
                );
                self.warner.warn(peer, Limit::PerAddr, &why);
                continue;
            };
            let io = Guarded {
                tcp,
                _counted: counted,
                idle: self.idle,
                deadline: Box::pin(tokio::time::sleep(self.idle)),
            };
            return (io, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A console connection: counted against its address's cap while open, and
/// failed with `TimedOut` once it has been `idle` without a byte read or
/// written (hyper then closes it).
pub(crate) struct Guarded {
    tcp: tokio::net::TcpStream,
    _counted: Counted,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Guarded {
    fn active(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "web console connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The page's files, embedded at build time.
const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/{*rest}", get(page))
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/login", get(api::login))
        .route("/logout", post(api::logout))
        .route("/api/session", get(api::session))
        .route("/api/cluster", get(api::cluster))
        .route("/api/tree", get(api::tree))
        .route("/api/peek", get(api::peek))
        .route("/api/output", get(api::output))
        .route("/api/events", get(api::events))
        .route("/api/action", post(api::action))
        .route("/api/make", post(api::make))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

fn asset(mime: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// Seconds since the epoch: login tokens are made by another process
/// (`circuit console-login`), so they carry wall-clock time.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The session cookie's value, if the request has one.
pub(crate) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == auth::COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A JSON error with a status: `{"Error": "…"}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "Error": message.into() }))).into_response()
}

/// True if `host` (a Host header) names a loopback address or `localhost`.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Every request: the Host check (no key), the session (with a key), the
/// CSRF token (every POST), and the headers that keep the page's content
/// inert (no inline script, no framing, no sniffing).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers();
    if app.check_host {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !loopback_host(host) {
            return error(
                StatusCode::FORBIDDEN,
                format!("refused: the console answers only to a loopback host name, not {host:?}"),
            );
        }
    }
    let session = session_id(headers);
    let now = unix_now();
    if path != "/login"
        && let Err(r) = app.auth.check(session.as_deref(), now)
    {
        let mut resp = if path.starts_with("/api/") || req.method() == Method::POST {
            error(StatusCode::UNAUTHORIZED, r.message())
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", r.message()),
            )
                .into_response()
        };
        harden(resp.headers_mut());
        return resp;
    }
    if req.method() == Method::POST {
        let token = headers.get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok());
        if let Err(r) = app.auth.check_csrf(session.as_deref(), token) {
            warn!(path, "console: {}", r.message());
            return error(StatusCode::FORBIDDEN, r.message());
        }
    }
    let mut resp = next.run(req).await;
    harden(resp.headers_mut());
    resp
}

fn harden(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.3.2.1",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in ["evil.example:8080", "10.0.0.1:80", "", "localhost.evil:80"] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; circuit_session=abc; b=2"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
