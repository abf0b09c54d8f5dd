//! What crosses circuit's wire, shared by the server and the client library:
//! anchor paths and server ids, circuit URLs, requests and replies, framing,
//! the secure channel and the multiplexed connection built on it.

pub mod beacon;
pub mod breaker;
pub mod chan;
pub mod chunk;
pub mod conn;
pub mod dns;
pub mod docker;
pub mod element;
pub mod event;
pub mod frame;
pub mod msg;
pub mod path;
pub mod proc;
pub mod secure;
pub mod stats;
pub mod subscription;
pub mod url;
pub mod watch;

pub use breaker::{BreakerEvent, BreakerKeyStat, BreakerOp, BreakerReply, BreakerSpec, BreakerStat};
pub use chan::ChanStat;
pub use dns::{DnsOp, DnsSpec, DnsStat};
pub use docker::{DockerSpec, DockerStat};
pub use element::{ElementKind, ElementStat, ServerStat};
pub use event::{Event, EventKind, WatchEvent};
pub use msg::{AnchorOp, ChanOp, DockerOp, Op, ProcOp, ServerOp, SubscriptionOp, WatchOp};
pub use msg::{
    Entry, ErrorKind, Member, MemberState, ReloadFailure, ReloadReport, Reply, Request, Response, WireError,
};
pub use path::{Path, PathError, ServerId};
pub use proc::{ProcExit, ProcPhase, ProcSpec, ProcStat};
pub use secure::Key;
pub use stats::{ClusterStats, ProcessStats, ServerStats};
pub use subscription::{SubscriptionSource, SubscriptionStat};
pub use url::CircuitUrl;
pub use watch::{FileOutput, HooksSpec, OutputSpec};
pub use watch::{FlappingSpec, ScaleOp, WatchAction, WatchProcStat, WatchSpec, WatchStat, WatchState};
pub use watch::{SocketSpec, SocketStat};

/// This build's version, reported by `peek` of a server.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
