//! The elements an anchor can hold. Each kind lives in its own module; this
//! enum is the one place that knows them all, so dispatch is a `match` and a
//! request for the wrong kind is an ordinary error, not a failed downcast.

pub mod chan;
pub mod proc;
pub mod subscription;

use std::sync::Arc;

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
}

impl Element {
    /// The kind shown by `ls -l`.
    pub fn kind(&self) -> &'static str {
        match self {
            Element::Server => "server",
            Element::Proc(_) => "proc",
            Element::Chan(_) => "chan",
            Element::Subscription(s) => s.kind(),
        }
    }

    /// Frees what the element holds. Called once it is out of the namespace.
    pub fn scrub(self) {
        match self {
            Element::Server => {}
            Element::Proc(p) => p.scrub(),
            Element::Chan(c) => c.abort(),
            Element::Subscription(s) => s.scrub(),
        }
    }
}
