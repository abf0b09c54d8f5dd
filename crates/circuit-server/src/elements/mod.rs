//! The elements an anchor can hold, and the one place a request for this
//! server meets them. Each kind is a folder (`proc/`, `chan/`, `watch/`,
//! `subscription/`, `dns/`, `breaker/`, and `server/` for the server's own root) that owns its
//! operations: `ops.rs` parses nothing (the op arrives typed) and applies
//! it, streams included. This enum only delegates, so a request for the
//! wrong kind is an ordinary error, not a failed downcast, and adding a
//! kind makes the compiler list every place to update.

pub mod breaker;
pub mod chan;
mod ctx;
pub mod dns;
pub mod docker;
pub mod proc;
pub mod server;
mod streams;
pub mod subscription;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;

/// What an element's tasks get from the server: its clock, its task
/// tracker (stopping the server waits for what runs on it), the token
/// cancelled when the server stops, and its reaper. Cheap to clone; part
/// of [`Ctx`], and all a watcher needs.
#[derive(Clone)]
pub struct Runtime {
    /// The server's one clock.
    pub clock: Clock,
    /// Every task the server or an element spawns runs on this tracker.
    pub tasks: TaskTracker,
    /// Cancelled when the server begins to stop: tasks that only serve a
    /// running server (draining a detached process's pipes) end on it.
    pub shutdown: CancellationToken,
    /// Spawns and signals children.
    pub reaper: proc::ReaperHandle,
}

impl Runtime {
    /// A runtime of its own around `reaper` (for tests and tools): a new
    /// tracker and token.
    pub fn new(reaper: proc::ReaperHandle) -> Runtime {
        Runtime {
            clock: Clock::new(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            reaper,
        }
    }
}

/// The end of a scrub: resolves once the element has freed everything it
/// held (a watcher: every process stopped gracefully and reaped). The scrub
/// itself has begun when [`Element::scrub`] returns, so dropping this
/// future does not stop it: it only stops waiting.
pub struct Scrubbed(Option<BoxFuture<'static, ()>>);

impl Scrubbed {
    /// A scrub that was over at once.
    pub fn done() -> Scrubbed {
        Scrubbed(None)
    }

    /// A scrub that is over when `f` is.
    pub fn when(f: impl Future<Output = ()> + Send + 'static) -> Scrubbed {
        Scrubbed(Some(Box::pin(f)))
    }
}

impl Future for Scrubbed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            None => Poll::Ready(()),
            Some(f) => {
                let done = f.as_mut().poll(cx);
                if done.is_ready() {
                    self.0 = None;
                }
                done
            }
        }
    }
}

use circuit_proto::conn::StreamHandle;
use circuit_proto::{
    AnchorOp, ChanOp, DockerOp, ElementKind, ElementStat, ErrorKind, Op, Path, ProcOp, Reply, Response,
};
use circuit_proto::{BreakerOp, DnsOp, SubscriptionOp, WatchOp, WireError};
use tracing::info;

pub use ctx::Ctx;

/// A live OS process an element runs, for `stats` and `top`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// Which one of the element's processes it is (e.g. a watcher's WID);
    /// empty when the element has only one.
    pub label: String,
}

/// An element held by an anchor. Cloning clones a handle, not the element.
#[derive(Clone)]
pub enum Element {
    /// The server itself, at `/X…`.
    Server,
    /// An OS process started by this server.
    Proc(Arc<proc::Proc>),
    /// A channel of byte messages.
    Chan(Arc<chan::Chan>),
    /// A membership subscription, `@join` or `@leave`.
    Subscription(Arc<subscription::Subscription>),
    /// A watcher keeping copies of a command running.
    Watch(Arc<watch::Watch>),
    /// A docker container made by this server.
    Docker(Arc<docker::Container>),
    /// A DNS server.
    Dns(Arc<dns::Dns>),
    /// A circuit breaker.
    Breaker(Arc<breaker::Breaker>),
}

impl Element {
    /// The kind shown by `ls -l`.
    pub fn kind(&self) -> ElementKind {
        match self {
            Element::Server => ElementKind::Server,
            Element::Proc(_) => ElementKind::Proc,
            Element::Chan(_) => ElementKind::Chan,
            Element::Subscription(s) => ElementKind::Subscription(s.source()),
            Element::Watch(_) => ElementKind::Watch,
            Element::Docker(_) => ElementKind::Docker,
            Element::Dns(_) => ElementKind::Dns,
            Element::Breaker(_) => ElementKind::Breaker,
        }
    }

    /// The live processes the element runs (none for most kinds). A kind
    /// that runs processes lists them here, and `stats` measures them.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        match self {
            Element::Proc(p) => proc::ops::processes(p),
            Element::Watch(w) => watch::ops::processes(w),
            Element::Docker(d) => docker::ops::processes(d),
            Element::Server | Element::Chan(_) | Element::Subscription(_) | Element::Dns(_) | Element::Breaker(_) => {
                Vec::new()
            }
        }
    }

    /// What `peek` says of it.
    async fn peek(&self, ctx: &Ctx, path: &Path) -> Result<ElementStat, WireError> {
        Ok(match self {
            Element::Server => ElementStat::Server(server::stat(ctx)),
            Element::Proc(p) => ElementStat::Proc(p.stat()),
            Element::Chan(c) => ElementStat::Chan(c.stat()),
            Element::Subscription(s) => ElementStat::Subscription(s.stat()),
            Element::Watch(w) => ElementStat::Watch(Box::new(watch::ops::peek(w, path).await?)),
            Element::Docker(d) => docker::ops::peek(d, path).await?,
            Element::Dns(d) => ElementStat::Dns(d.stat()),
            Element::Breaker(b) => ElementStat::Breaker(b.stat()),
        })
    }

    /// Frees what the element holds; called once it is out of the
    /// namespace. Freeing begins at once; the future resolves when it is
    /// over (at once for most kinds; for a watcher, once every process has
    /// been stopped gracefully, per its GracefulTimeout, and reaped). A
    /// process element detaches its process, which runs on (see
    /// [`proc`]): that scrub is over at once.
    pub fn scrub(self) -> Scrubbed {
        match self {
            Element::Server => Scrubbed::done(),
            Element::Proc(p) => {
                p.scrub();
                Scrubbed::done()
            }
            Element::Chan(c) => {
                c.abort();
                Scrubbed::done()
            }
            Element::Subscription(s) => {
                s.scrub();
                Scrubbed::done()
            }
            Element::Watch(w) => w.scrub(),
            Element::Docker(d) => d.scrub(),
            Element::Dns(d) => d.scrub(),
            Element::Breaker(b) => b.scrub(),
        }
    }

    /// Serves `op` on this element; streaming ops answer on `stream`
    /// themselves and return `None`.
    async fn serve(self, path: &Path, op: Op, stream: &mut StreamHandle) -> Option<Response> {
        match (self, op) {
            (Element::Proc(p), Op::Proc(op)) => proc::ops::serve(&p, path, op, stream).await,
            (Element::Watch(w), Op::Watch(op)) => Some(watch::ops::serve(&w, path, op).await),
            // A watcher is a group of processes: it answers the process verbs it can.
            (Element::Watch(w), Op::Proc(op @ (ProcOp::Stdout | ProcOp::Stderr | ProcOp::Signal(_)))) => {
                watch::ops::serve_proc(&w, path, op, stream).await
            }
            // A container is process-like: it answers every process verb.
            (Element::Docker(d), Op::Proc(op)) => docker::ops::serve_proc(&d, path, op, stream).await,
            (Element::Chan(c), Op::Chan(op)) => chan::ops::serve(&c, path, op, stream).await,
            // A subscription reads like a channel.
            (Element::Subscription(s), Op::Chan(ChanOp::Recv)) => subscription::ops::recv(path, s, stream).await,
            (Element::Dns(d), Op::Dns(op)) => Some(dns::ops::serve(&d, path, op)),
            (Element::Breaker(b), Op::Breaker(BreakerOp::Session)) => breaker::ops::session(&b, path, stream).await,
            (Element::Breaker(b), Op::Breaker(op)) => Some(breaker::ops::serve(&b, path, op)),
            (el, op) => Some(Err(wrong_kind(path, el.kind(), &op))),
        }
    }
}

/// The noun for the kind an op wants, in error messages.
fn wanted(op: &Op) -> &'static str {
    match op {
        Op::Proc(ProcOp::Make(_)) => "proc",
        Op::Proc(_) => "proc or a docker container",
        Op::Docker(_) => "docker",
        Op::Chan(_) => "chan",
        Op::Watch(_) => "watch",
        Op::Subscription(_) => "subscription",
        Op::Dns(_) => "dns",
        Op::Breaker(_) => "breaker",
        Op::Anchor(_) | Op::Server(_) => "server",
    }
}

fn wrong_kind(path: &Path, held: ElementKind, op: &Op) -> WireError {
    WireError::at(
        ErrorKind::WrongKind,
        path,
        format!("anchor {path} holds a {held}, not a {}", wanted(op)),
    )
}

fn not_found(path: &Path, op: &Op) -> WireError {
    let what = match op {
        Op::Proc(_) => "process",
        other => wanted(other),
    };
    WireError::at(ErrorKind::NotFound, path, format!("no {what} at {path}"))
}

/// Serves a request for a path of this server. One-shot requests return
/// their response; streaming ones answer on `stream` themselves and return
/// `None`. The namespace is looked up once.
pub async fn serve(ctx: &Ctx, path: &Path, op: Op, stream: &mut StreamHandle) -> Option<Response> {
    let op = match op {
        Op::Anchor(op) => return anchor(ctx, path, op, stream).await,
        // The server's own ops need the whole server (membership, stop):
        // `net` hands them to `server::serve`, never here.
        Op::Server(op) => {
            let verb = Op::Server(op).verb();
            return Some(Err(WireError::at(
                ErrorKind::Internal,
                path,
                format!("{verb} reached the element layer"),
            )));
        }
        op @ (Op::Proc(ProcOp::Make(_))
        | Op::Chan(ChanOp::Make { .. })
        | Op::Watch(WatchOp::Make(_))
        | Op::Subscription(SubscriptionOp::Make(_))
        | Op::Dns(DnsOp::Make(_))
        | Op::Breaker(BreakerOp::Make(_))) => return Some(make(ctx, path, op)),
        // Making a container waits on the engine: the one async make.
        Op::Docker(DockerOp::Make(spec)) => return Some(docker::ops::make(ctx, path, *spec).await),
        op => op,
    };
    let Some(el) = ctx.get(path) else {
        return Some(Err(not_found(path, &op)));
    };
    el.serve(path, op, stream).await
}

/// Makes the element a make op describes at `path` (from a request, or
/// from the config file); any other op is refused.
pub fn make(ctx: &Ctx, path: &Path, op: Op) -> Response {
    match op {
        Op::Proc(ProcOp::Make(spec)) => proc::ops::make(ctx, path, spec),
        Op::Chan(ChanOp::Make { cap }) => chan::ops::make(ctx, path, cap),
        Op::Watch(WatchOp::Make(spec)) => watch::ops::make(ctx, path, *spec),
        Op::Subscription(SubscriptionOp::Make(source)) => subscription::ops::make(ctx, path, source),
        Op::Dns(DnsOp::Make(spec)) => dns::ops::make(ctx, path, spec),
        Op::Breaker(BreakerOp::Make(spec)) => breaker::ops::make(ctx, path, spec),
        op => Err(WireError::at(
            ErrorKind::Invalid,
            path,
            format!("{}: {} does not make an element", path, op.verb()),
        )),
    }
}

async fn anchor(ctx: &Ctx, path: &Path, op: AnchorOp, stream: &mut StreamHandle) -> Option<Response> {
    Some(match op {
        AnchorOp::List { recursive } => Ok(Reply::List(ctx.list(path, recursive))),
        AnchorOp::Peek => match ctx.get(path) {
            None => Ok(Reply::Stat(None)),
            Some(el) => el.peek(ctx, path).await.map(|s| Reply::Stat(Some(s))),
        },
        AnchorOp::Scrub => scrub(ctx, path).await,
        AnchorOp::Events => return server::events::local(ctx, path, stream).await,
        AnchorOp::Stats => server::stats::local(ctx, path).await,
    })
}

/// Answers once the element has freed what it held (a DNS server's port
/// is free again; the engine has removed a container, so no container
/// outlives a `scrub` that succeeded), except a watcher's graceful stop,
/// which may take its GracefulTimeout: that one goes on after the answer.
async fn scrub(ctx: &Ctx, path: &Path) -> Response {
    if path.is_server_root() {
        return Err(WireError::at(
            ErrorKind::Invalid,
            path,
            format!("cannot scrub {path}: it is the server itself; use `circuit stop {path}` to stop it"),
        ));
    }
    let el = ctx.ns.lock().unwrap().remove(path.names());
    match el {
        None => Err(WireError::at(
            ErrorKind::NotFound,
            path,
            format!("nothing to scrub at {path}"),
        )),
        Some(el) => {
            info!(op = "scrub", %path, kind = %el.kind(), "scrubbing");
            let waits = !matches!(el, Element::Watch(_));
            let done = el.scrub();
            if waits {
                done.await;
            }
            Ok(Reply::Done)
        }
    }
}
