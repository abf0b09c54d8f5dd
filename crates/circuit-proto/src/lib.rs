//! What crosses circuit's wire, shared by the server and the client library:
//! anchor paths and server ids, circuit URLs, requests and replies, framing,
//! the secure channel and the multiplexed connection built on it.

pub mod beacon;
pub mod chunk;
pub mod conn;
pub mod frame;
pub mod msg;
pub mod path;
pub mod proc;
pub mod secure;
pub mod subscription;
pub mod url;

pub use msg::{Entry, ErrorKind, Reply, Request, Response, WireError};
pub use path::{Path, PathError, ServerId};
pub use proc::{ProcExit, ProcPhase, ProcSpec, ProcStat};
pub use secure::Key;
pub use subscription::{SubscriptionSource, SubscriptionStat};
pub use url::CircuitUrl;

/// This build's version, reported by `peek` of a server.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
