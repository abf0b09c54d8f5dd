//! The circuit client library.
//!
//! Dial any server of a cluster, then walk its anchor namespace and control
//! the elements there. One TCP connection carries every request, each on its
//! own multiplexed stream; nothing ever dials back into the client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), circuit_client::Error> {
//! let client = circuit_client::Client::dial("circuit://127.0.0.1:11022/1234/X88550014d4c82e4d", None).await?;
//! for server in client.servers().await? {
//!     println!("{}", server.path());
//!     println!("{:?}", server.peek().await?);
//! }
//! # Ok(()) }
//! ```

mod anchor;
mod breaker;
mod chan;
mod client;
mod discover;
mod dns;
mod docker;
mod error;
mod events;
mod pipelined;
mod proc;
#[cfg(feature = "redis")]
mod redis_breaker;
mod subscription;
mod watch;

pub use anchor::{Anchor, Server};
pub use breaker::{
    Admission, Breaker, BreakerState, Breakers, Called, DEFAULT_TIMEOUT, FailurePolicy, Limits, LocalBreaker, Outcome,
    Permit, Recorded, Rejection, is_unreachable,
};
pub use chan::{Chan, ChanReader, ChanWriter};
pub use circuit_proto::breaker::{BreakerCounts, KeySnapshot, SpecError, Transition};
pub use circuit_proto::stats::SAMPLE_MS;
pub use circuit_proto::{BreakerEvent, BreakerKeyStat, BreakerSpec, BreakerStat};
pub use circuit_proto::{
    ChanStat, CircuitUrl, ClusterStats, DnsSpec, DnsStat, DockerSpec, DockerStat, ElementKind, ElementStat, Entry,
    ErrorKind, Event, EventKind, Key, Path, ProcExit, ProcPhase, ProcSpec, ProcStat, ProcessStats, ReloadFailure,
    ReloadReport, ServerId, ServerStat, ServerStats, SubscriptionSource, SubscriptionStat, WireError,
};
pub use circuit_proto::{FileOutput, HooksSpec, OutputSpec};
pub use circuit_proto::{FlappingSpec, ScaleOp, WatchAction, WatchProcStat, WatchSpec, WatchStat, WatchState};
pub use circuit_proto::{SocketSpec, SocketStat};
pub use client::Client;
pub use discover::discover_url;
pub use dns::Dns;
pub use docker::Docker;
pub use error::Error;
pub use events::EventStream;
pub use pipelined::{ChanReceiver, ChanSender, FlushError, RECV_CREDIT, SEND_WINDOW};
pub use proc::{Proc, ProcOutput, ProcStdin};
#[cfg(feature = "redis")]
pub use redis_breaker::{DEFAULT_IDLE_TTL, MAX_SHOW_KEYS, REDIS_MAX_KEY_LEN, RedisBreaker, check_redis_name};
pub use subscription::Subscription;
pub use watch::Watch;
