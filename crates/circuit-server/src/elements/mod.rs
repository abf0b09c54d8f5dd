//! The elements an anchor can hold. Each kind lives in its own module; this
//! enum is the one place that knows them all, so dispatch is a `match` and a
//! request for the wrong kind is an ordinary error, not a failed downcast.

pub mod chan;
pub mod proc;
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
/// cancelled when the server stops, and its reaper. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
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

impl Ctx {
    /// A context of its own around `reaper` (for tests and tools): a new
    /// tracker and token.
    pub fn new(reaper: proc::ReaperHandle) -> Ctx {
        Ctx {
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
}

impl Element {
    /// The kind shown by `ls -l`.
    pub fn kind(&self) -> &'static str {
        match self {
            Element::Server => "server",
            Element::Proc(_) => "proc",
            Element::Chan(_) => "chan",
            Element::Subscription(s) => s.kind(),
            Element::Watch(_) => "watch",
        }
    }

    /// The live processes the element runs (none for most kinds). A kind
    /// that runs processes lists them here, and `stats` measures them.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        match self {
            Element::Proc(p) => p
                .pid()
                .filter(|_| !p.stat().phase.is_final())
                .map(|pid| ProcessInfo {
                    pid,
                    label: String::new(),
                })
                .into_iter()
                .collect(),
            Element::Watch(w) => w
                .processes()
                .into_iter()
                .map(|(wid, pid)| ProcessInfo {
                    pid,
                    label: format!("wid {wid}"),
                })
                .collect(),
            _ => Vec::new(),
        }
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
        }
    }
}
