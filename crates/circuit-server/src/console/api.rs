//! The console's endpoints. Each builds the request the CLI would send and
//! sends it through the console's link (see [`super::link`]); answers are
//! JSON with PascalCase keys, like the CLI's output, and a failure is
//! `{"Error": "one line"}` with a non-2xx status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use circuit_proto::chunk::{self, Chunk};
use circuit_proto::frame;
use circuit_proto::{
    AnchorOp, BreakerOp, BreakerReply, ElementStat, Event, Op, Path, ProcOp, Reply, Request, ScaleOp, ServerOp, WatchOp,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::link::line;
use super::{App, auth, error, session_id, unix_now};

type AppState = State<Arc<App>>;

/// How often the event stream carries the cluster's statistics.
pub const STATS_EVERY: Duration = Duration::from_secs(2);

/// Peeks one tree request keeps in flight at once (in listing order).
const TREE_PEEKS: usize = 32;

/// How long an output request reads a running process's output.
const OUTPUT_WAIT: Duration = Duration::from_millis(400);

/// The most output bytes one request returns (the last ones).
const OUTPUT_TAIL: usize = 64 * 1024;

/// The most bytes an output request reads before it stops.
const OUTPUT_READ_MAX: usize = 4 << 20;

fn parse_path(text: &str) -> Result<Path, Box<Response>> {
    text.parse::<Path>()
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("{text:?}: {e}"))))
}

fn failed(req: &Request, e: &circuit_proto::WireError) -> Response {
    use circuit_proto::ErrorKind as K;
    let status = match e.kind {
        K::NotFound | K::NoServer => StatusCode::NOT_FOUND,
        K::Invalid | K::WrongKind | K::Exists => StatusCode::BAD_REQUEST,
        K::Busy | K::Closed | K::Aborted => StatusCode::CONFLICT,
        K::Unsupported => StatusCode::NOT_IMPLEMENTED,
        K::Io | K::Internal => StatusCode::BAD_GATEWAY,
    };
    error(status, line(req, e))
}

/// A reply as JSON: a count as a number, a status as the kind's document.
fn reply_json(r: Reply) -> Value {
    match r {
        Reply::Done => json!("done"),
        Reply::Count(n) => json!(n),
        Reply::Stat(s) => s.map_or(Value::Null, |s| s.to_json()),
        Reply::Breaker(BreakerReply::Changed(c)) => json!({ "Changed": c }),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

/// An element's status in the page's terms: its kind's name and its `peek`
/// document. Any kind, so a new one shows without changes here.
fn element_json(path: &Path, stat: Option<&ElementStat>) -> Value {
    json!({
        "Path": path.to_string(),
        "Kind": stat.map(|s| s.kind().as_str()),
        "Stat": stat.map_or(Value::Null, ElementStat::to_json),
    })
}

#[derive(Deserialize)]
pub struct LoginQuery {
    t: String,
}

/// `GET /login?t=TOKEN`: opens a session and goes to the page.
pub async fn login(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<LoginQuery>,
) -> Response {
    match app.auth.login(&q.t, unix_now()) {
        Ok(id) => {
            info!(%peer, "console login");
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_IDLE
            );
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/ui/".to_string()), (header::SET_COOKIE, cookie)],
            )
                .into_response()
        }
        Err(r) => {
            warn!(%peer, "console: {}", r.message());
            error(StatusCode::UNAUTHORIZED, r.message())
        }
    }
}

/// `POST /logout`: ends the session.
pub async fn logout(State(app): AppState, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        app.auth.logout(&id);
    }
    let gone = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::COOKIE);
    (StatusCode::OK, [(header::SET_COOKIE, gone)], Json(json!("done"))).into_response()
}

/// `GET /api/session`: what the page needs to make requests.
pub async fn session(State(app): AppState, headers: HeaderMap) -> Response {
    let id = session_id(&headers);
    Json(json!({
        "Csrf": app.auth.csrf_token(id.as_deref()),
        "Server": app.link.me().to_string(),
        "Login": app.auth.required(),
    }))
    .into_response()
}

/// `GET /api/cluster`: every server (id, URL, pid, uptime, CPU, RSS,
/// members, elements), and the members this server sees as suspect or down.
pub async fn cluster(State(app): AppState) -> Response {
    let me = app.link.me();
    let ls = Request::new(Path::root(), AnchorOp::List { recursive: false });
    let stats = Request::new(Path::root(), AnchorOp::Stats);
    let members = Request::new(Path::server(me), ServerOp::Members);
    let (listed, stats, members) = futures::join!(app.link.call(&ls), app.link.call(&stats), app.link.call(&members));
    let entries = match listed {
        Ok(Reply::List(v)) => v,
        Ok(r) => return error(StatusCode::BAD_GATEWAY, format!("ls /: unexpected {}", r.name())),
        Err(e) => return failed(&ls, &e),
    };
    let stats = match stats {
        Ok(Reply::Stats(s)) => s.servers,
        _ => Vec::new(),
    };
    let members = match members {
        Ok(Reply::Members(m)) => m,
        _ => Vec::new(),
    };
    let peeks = entries.iter().map(|e| {
        let req = Request::new(e.path.clone(), AnchorOp::Peek);
        let app = app.clone();
        async move {
            match app.link.call(&req).await {
                Ok(Reply::Stat(Some(ElementStat::Server(s)))) => Some(s),
                _ => None,
            }
        }
    });
    let peeks = futures::future::join_all(peeks).await;
    let mut servers = Vec::new();
    for (entry, peek) in entries.iter().zip(peeks) {
        let id = entry.path.server_id().map(|i| i.to_string()).unwrap_or_default();
        let st = stats.iter().find(|s| s.server == id);
        let member = members.iter().find(|m| m.id.to_string() == id);
        servers.push(json!({
            "Id": id,
            "Url": peek.as_ref().map(|p| p.addr.clone()),
            "Addr": member.map(|m| m.addr.to_string()),
            "Pid": st.map(|s| s.pid),
            "Uptime": st.map(|s| s.uptime),
            "Cpu": st.map(|s| s.cpu),
            "Rss": st.map(|s| s.rss),
            "Members": peek.as_ref().map(|p| p.members),
            "Elements": peek.as_ref().map(|p| p.elements),
            "Version": peek.as_ref().map(|p| p.version.clone()),
            "State": member.map_or("alive", |m| state_name(m.state)),
            "Error": st.and_then(|s| s.error.clone()).or_else(|| peek.is_none().then(|| "did not answer".to_string())),
        }));
    }
    let unlisted: Vec<Value> = members
        .iter()
        .filter(|m| !entries.iter().any(|e| e.path.server_id() == Some(m.id)))
        .map(|m| json!({"Id": m.id.to_string(), "Addr": m.addr.to_string(), "State": state_name(m.state)}))
        .collect();
    Json(json!({ "Self": me.to_string(), "Servers": servers, "Unlisted": unlisted })).into_response()
}

fn state_name(s: circuit_proto::MemberState) -> &'static str {
    match s {
        circuit_proto::MemberState::Alive => "alive",
        circuit_proto::MemberState::Suspect => "suspect",
        circuit_proto::MemberState::Down => "down",
    }
}

#[derive(Deserialize)]
pub struct PathQuery {
    path: String,
}

/// `GET /api/tree?path=/X…`: every anchor below the path, each element
/// with its `peek` status.
pub async fn tree(State(app): AppState, Query(q): Query<PathQuery>) -> Response {
    let path = match parse_path(&q.path) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let ls = Request::new(path, AnchorOp::List { recursive: true });
    let entries = match app.link.call(&ls).await {
        Ok(Reply::List(v)) => v,
        Ok(r) => return error(StatusCode::BAD_GATEWAY, format!("ls: unexpected {}", r.name())),
        Err(e) => return failed(&ls, &e),
    };
    let peeks = entries.into_iter().map(|e| {
        let app = app.clone();
        async move {
            if e.kind.is_none() {
                return json!({"Path": e.path.to_string(), "Kind": null, "Stat": null});
            }
            let req = Request::new(e.path.clone(), AnchorOp::Peek);
            match app.link.call(&req).await {
                Ok(Reply::Stat(s)) => element_json(&e.path, s.as_ref()),
                // Scrubbed meanwhile, or its server is gone: listed, with why.
                Ok(_) => element_json(&e.path, None),
                Err(err) => json!({"Path": e.path.to_string(), "Kind": e.kind.map(|k| k.as_str()), "Stat": null, "Error": line(&req, &err)}),
            }
        }
    });
    use futures::StreamExt;
    let all: Vec<Value> = futures::stream::iter(peeks).buffered(TREE_PEEKS).collect().await;
    Json(Value::Array(all)).into_response()
}

/// `GET /api/peek?path=`: one element's status.
pub async fn peek(State(app): AppState, Query(q): Query<PathQuery>) -> Response {
    let path = match parse_path(&q.path) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let req = Request::new(path.clone(), AnchorOp::Peek);
    match app.link.call(&req).await {
        Ok(Reply::Stat(s)) => Json(element_json(&path, s.as_ref())).into_response(),
        Ok(r) => error(StatusCode::BAD_GATEWAY, format!("peek: unexpected {}", r.name())),
        Err(e) => failed(&req, &e),
    }
}

#[derive(Deserialize)]
pub struct OutputQuery {
    path: String,
    #[serde(default)]
    stream: Option<String>,
}

/// `GET /api/output?path=&stream=stdout|stderr`: the tail of a process's
/// (or a watcher's) output, what arrives within [`OUTPUT_WAIT`]. A
/// process's output is read as `circuit stdout` reads it: what one reader
/// takes, the next does not see again; a watcher's is its ring.
pub async fn output(State(app): AppState, Query(q): Query<OutputQuery>) -> Response {
    let path = match parse_path(&q.path) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let op = match q.stream.as_deref().unwrap_or("stdout") {
        "stdout" => ProcOp::Stdout,
        "stderr" => ProcOp::Stderr,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("stream {other:?}: give stdout or stderr"),
            );
        }
    };
    let req = Request::new(path, op);
    let mut stream = match app.link.open(&req).await {
        Ok((_, s)) => s,
        Err(e) => return failed(&req, &e),
    };
    let mut out: Vec<u8> = Vec::new();
    let (mut read, mut complete) = (0usize, false);
    let deadline = tokio::time::Instant::now() + OUTPUT_WAIT;
    let mut problem = None;
    while read < OUTPUT_READ_MAX {
        match tokio::time::timeout_at(deadline, chunk::read_chunk(&mut stream)).await {
            Err(_) => break,
            Ok(Ok(Chunk::Data(d))) => {
                read += d.len();
                out.extend_from_slice(&d);
                if out.len() > 2 * OUTPUT_TAIL {
                    out.drain(..out.len() - OUTPUT_TAIL);
                }
            }
            Ok(Ok(Chunk::End)) => {
                complete = true;
                break;
            }
            Ok(Ok(Chunk::Fail(e))) => {
                problem = Some(line(&req, &e));
                break;
            }
            Ok(Err(e)) => {
                problem = Some(format!("{} {}: {e}", req.verb(), req.path));
                break;
            }
        }
    }
    let truncated = out.len() > OUTPUT_TAIL || read > out.len();
    if out.len() > OUTPUT_TAIL {
        out.drain(..out.len() - OUTPUT_TAIL);
    }
    Json(json!({
        "Text": String::from_utf8_lossy(&out),
        "Complete": complete,
        "Truncated": truncated,
        "Error": problem,
    }))
    .into_response()
}

/// `GET /api/events`: server-sent events. `event` carries each event of
/// the cluster (the `circuit events` feed, one JSON object as the CLI
/// prints it) as soon as it comes; `stats` the cluster's statistics
/// (`circuit stats /`) every [`STATS_EVERY`]; `hello` comes first, `gone`
/// if the feed ends. With a key, the stream lasts as long as the session that
/// opened it: once that is logged out or expired, `ended` says so and the
/// stream closes (it does not extend the session).
pub async fn events(State(app): AppState, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    let session = session_id(&headers);
    let req = Request::new(Path::root(), AnchorOp::Events);
    let mut feed = match app.link.open(&req).await {
        Ok((_, s)) => s,
        Err(e) => return failed(&req, &e),
    };
    info!(%peer, "console: event stream open");
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(1024);
    let hello = SseEvent::default()
        .event("hello")
        .data(json!({"Server": app.link.me().to_string(), "StatsEvery": STATS_EVERY.as_secs_f64()}).to_string());
    let _ = tx.try_send(hello);
    let events_tx = tx.clone();
    // Cancelled when the session ends: both tasks stop, and so the stream.
    let ended = tokio_util::sync::CancellationToken::new();
    let events_end = ended.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                ev = frame::read_frame::<Event, _>(&mut feed) => ev,
                _ = events_tx.closed() => break,
                _ = events_end.cancelled() => break,
            };
            let msg = match next {
                Ok(ev) => SseEvent::default().event("event").data(ev.to_json_line()),
                Err(e) => {
                    let _ = events_tx
                        .send(
                            SseEvent::default()
                                .event("gone")
                                .data(json!({"Error": e.to_string()}).to_string()),
                        )
                        .await;
                    break;
                }
            };
            if events_tx.send(msg).await.is_err() {
                break;
            }
        }
        info!(%peer, "console: event stream closed");
    });
    let mut stats = app.stats_feed();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = stats.changed() => if r.is_err() { break },
                _ = tx.closed() => break,
            }
            if !app.auth.alive(session.as_deref(), unix_now()) {
                info!(%peer, "console: the session of an event stream ended: closing it");
                let why = "the console session ended (logged out, or idle too long): log in again with `circuit console-login`";
                let _ = tx
                    .send(
                        SseEvent::default()
                            .event("ended")
                            .data(json!({ "Error": why }).to_string()),
                    )
                    .await;
                ended.cancel();
                break;
            }
            let data = stats.borrow_and_update().to_string();
            if tx.send(SseEvent::default().event("stats").data(data)).await.is_err() {
                break;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionBody {
    path: String,
    action: String,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    signal: Option<String>,
    /// A breaker's key, for `reset`, `open` and `close`.
    #[serde(default)]
    key: Option<String>,
}

/// The request an action of the page asks, as the CLI would.
fn action_op(body: &ActionBody) -> Result<Op, String> {
    let n = body.n.unwrap_or(1);
    Ok(match body.action.as_str() {
        "incr" => WatchOp::Scale(ScaleOp::Incr(n)).into(),
        "decr" => WatchOp::Scale(ScaleOp::Decr(n)).into(),
        "numprocs" => match body.n {
            Some(n) => WatchOp::Scale(ScaleOp::Set(n)).into(),
            None => WatchOp::Scale(ScaleOp::Get).into(),
        },
        a @ ("start" | "stop" | "restart" | "reload") => WatchOp::Control(a.parse()?).into(),
        "signal" => match body.signal.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => ProcOp::Signal(s.to_string()).into(),
            _ => return Err("signal needs a Signal, like TERM or 15".into()),
        },
        "scrub" => AnchorOp::Scrub.into(),
        a @ ("reset" | "open" | "close") => {
            let key = match body.key.as_deref() {
                Some(k) if !k.is_empty() => k.to_string(),
                _ => return Err(format!("{a} needs the Key of a breaker")),
            };
            match a {
                "reset" => BreakerOp::Reset { key },
                "open" => BreakerOp::Open { key },
                _ => BreakerOp::Close { key },
            }
            .into()
        }
        other => {
            return Err(format!(
                "unknown action {other:?}; give incr, decr, numprocs, start, stop, restart, reload, signal, scrub, reset, open or close"
            ));
        }
    })
}

/// A JSON request body. One that is not JSON, or not of the right shape, is
/// refused with axum's status and its one-line reason, in the console's
/// error form (`{"Error": "bad request body: …"}`), not as plain text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(t)) => Ok(Body(t)),
            Err(r) => Err(error(
                r.status(),
                format!("bad request body: {}", r.body_text().replace('\n', " ")),
            )),
        }
    }
}

/// `POST /api/action` `{"Path", "Action", "N", "Signal"}`: the result, or
/// the server's one-line error.
pub async fn action(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<ActionBody>,
) -> Response {
    let path = match parse_path(&body.path) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let op = match action_op(&body) {
        Ok(op) => op,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    info!(%peer, action = body.action, %path, key = body.key.as_deref(), "console action");
    let req = Request::new(path, op);
    match app.link.call(&req).await {
        // A reset answers false only for a key the breaker does not hold.
        Ok(Reply::Breaker(BreakerReply::Changed(false))) if body.action == "reset" => error(
            StatusCode::NOT_FOUND,
            format!(
                "reset {}: no key {:?} in this breaker",
                req.path,
                body.key.as_deref().unwrap_or_default()
            ),
        ),
        Ok(r) => Json(json!({ "Result": reply_json(r) })).into_response(),
        Err(e) => failed(&req, &e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MakeBody {
    path: String,
    kind: String,
    spec: String,
}

/// `POST /api/make` `{"Path", "Kind": "proc"|"watch", "Spec": "JSON text"}`:
/// makes the element as `mkproc`/`mkwatch` would.
pub async fn make(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<MakeBody>,
) -> Response {
    let path = match parse_path(&body.path) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let op = match (app.specs)(&body.kind, &body.spec) {
        Ok(op) => op,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    info!(%peer, kind = body.kind, %path, "console make");
    let req = Request::new(path, op);
    match app.link.call(&req).await {
        Ok(r) => Json(json!({ "Result": reply_json(r) })).into_response(),
        Err(e) => failed(&req, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(action: &str, n: Option<u32>, signal: Option<&str>) -> ActionBody {
        ActionBody {
            path: "/X0000000000000001/w".into(),
            action: action.into(),
            n,
            signal: signal.map(Into::into),
            key: None,
        }
    }

    #[test]
    fn actions_are_the_cli_requests() {
        assert_eq!(
            action_op(&body("incr", None, None)).unwrap(),
            WatchOp::Scale(ScaleOp::Incr(1)).into()
        );
        assert_eq!(
            action_op(&body("decr", Some(2), None)).unwrap(),
            WatchOp::Scale(ScaleOp::Decr(2)).into()
        );
        assert_eq!(
            action_op(&body("numprocs", Some(5), None)).unwrap(),
            WatchOp::Scale(ScaleOp::Set(5)).into()
        );
        assert_eq!(
            action_op(&body("restart", None, None)).unwrap(),
            WatchOp::Control(circuit_proto::WatchAction::Restart).into()
        );
        assert_eq!(
            action_op(&body("signal", None, Some("HUP"))).unwrap(),
            ProcOp::Signal("HUP".into()).into()
        );
        assert_eq!(action_op(&body("scrub", None, None)).unwrap(), AnchorOp::Scrub.into());
        assert!(action_op(&body("signal", None, None)).is_err());
        let mut b = body("reset", None, None);
        assert!(action_op(&b).unwrap_err().contains("needs the Key"));
        b.key = Some("t1".into());
        assert_eq!(action_op(&b).unwrap(), BreakerOp::Reset { key: "t1".into() }.into());
        b.action = "open".into();
        assert_eq!(action_op(&b).unwrap(), BreakerOp::Open { key: "t1".into() }.into());
        b.action = "close".into();
        assert_eq!(action_op(&b).unwrap(), BreakerOp::Close { key: "t1".into() }.into());
        assert!(
            action_op(&body("explode", None, None))
                .unwrap_err()
                .contains("unknown action")
        );
    }
}
