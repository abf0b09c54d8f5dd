//! The elements an anchor can hold. Each kind lives in its own module; this
//! enum is the one place that knows them all, so dispatch is a `match` and a
//! request for the wrong kind is an ordinary error, not a failed downcast.

pub mod chan;
pub mod proc;
pub mod subscription;
pub mod watch;

use std::sync::Arc;

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

    /// Frees what the element holds. Called once it is out of the namespace.
    pub fn scrub(self) {
        match self {
            Element::Server => {}
            Element::Proc(p) => p.scrub(),
            Element::Chan(c) => c.abort(),
            Element::Subscription(s) => s.scrub(),
            // The last handle going stops its processes gracefully.
            Element::Watch(w) => drop(w),
        }
    }
}
