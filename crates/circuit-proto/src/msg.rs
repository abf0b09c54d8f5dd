//! Requests and replies. Each request travels on its own multiplexed stream:
//! one request frame, one response frame, then (for streaming requests) raw bytes.

use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerOp, BreakerReply};
use crate::dns::DnsOp;
use crate::docker::DockerSpec;
use crate::element::{ElementKind, ElementStat};
use crate::path::{Path, ServerId};
use crate::proc::{ProcSpec, ProcStat};
use crate::stats::ClusterStats;
use crate::subscription::SubscriptionSource;
use crate::watch::{ScaleOp, WatchAction, WatchSpec};

/// What a client (or a forwarding server) asks of a server: an operation
/// on a path. The path's first component picks the server; the operation
/// picks the element kind that serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Where: `/`, a server `/X…`, or an anchor below one.
    pub path: Path,
    /// What.
    pub op: Op,
}

/// An operation, grouped by the kind of element that serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// On any anchor, whatever it holds.
    Anchor(AnchorOp),
    /// On a server's root `/X…`.
    Server(ServerOp),
    /// On a process. Its stream verbs (`Stdin`, `Stdout`, `Stderr`, `Wait`,
    /// `Signal`) are the process-like op set: a docker container answers
    /// them all, a watcher `Stdout`, `Stderr` and `Signal`.
    Proc(ProcOp),
    /// On a channel; a subscription answers `Recv` too.
    Chan(ChanOp),
    /// On a watcher.
    Watch(WatchOp),
    /// On a membership subscription.
    Subscription(SubscriptionOp),
    /// On a docker container (which answers the stream verbs of [`ProcOp`] too).
    Docker(DockerOp),
    /// On a DNS server element.
    Dns(DnsOp),
    /// On a breaker element.
    Breaker(BreakerOp),
}

/// Operations on any anchor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnchorOp {
    /// Children of the path, sorted; every descendant when `recursive`.
    /// At `/`, the live servers.
    List {
        /// Every descendant, in pre-order.
        recursive: bool,
    },
    /// The status of the element held there ([`Reply::Stat`]); `None` for
    /// an empty anchor.
    Peek,
    /// Remove the element held there.
    Scrub,
    /// Stream the events ([`crate::Event`]) about the path and below, from
    /// now on, until the client goes away. At `/`, the server asked merges
    /// the events of every member (members that join later included). The
    /// server answers `Done`, then sends one frame per event. It never
    /// waits on a slow reader: events it cannot hand on are dropped and
    /// reported by an [`crate::EventKind::Lost`] event.
    Events,
    /// CPU, memory and uptime of the servers and of the processes of the
    /// elements at the path and below ([`Reply::Stats`]); at `/`, of every
    /// member.
    Stats,
}

/// Operations on a server's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerOp {
    /// Stop the server, cleanly.
    Stop,
    /// Merge its cluster with the one of the server at `url`.
    Join {
        /// A circuit URL.
        url: String,
    },
    /// Its membership state ([`Reply::Members`]), so a server that just
    /// joined learns every member at once.
    Members,
    /// Read its config file again and apply the difference to the elements
    /// made from it ([`Reply::Reload`]).
    ReloadConfig,
    /// Keep this stream open, answering nothing, until either end closes
    /// it. A server holds one to each of its neighbours in the cluster, so
    /// that the connection stays (it is never idle) and the end of a killed
    /// neighbour's process, whose sockets its kernel closes, is seen at once.
    Hold,
}

/// Operations on a process element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProcOp {
    /// Start a process and hold it at the path (answered once it has
    /// started, or failed to).
    Make(ProcSpec),
    /// Write into its stdin: after `Done`, the client streams chunks
    /// ([`crate::chunk`]) closed by an end chunk; the server closes the
    /// process's stdin and answers with a second response frame.
    Stdin,
    /// Read its stdout: after `Done`, raw bytes until end of file, then an
    /// end marker ([`crate::chunk::OUT_END`]) once the output is whole. The
    /// client sends nothing more and keeps its side open while it reads:
    /// the server takes a close or reset as the reader leaving, and keeps
    /// the rest of the output for the next one.
    Stdout,
    /// Read its stderr, as `Stdout`.
    Stderr,
    /// Block until it has ended; the answer is its status ([`Reply::Exit`];
    /// for a docker container, [`Reply::Stat`] with its inspect data). The
    /// server gives up if the client closes its side first.
    Wait,
    /// Send it a signal: a name (`TERM`, `SIGTERM`, `term`) or a number
    /// (`15`), resolved by the server, since numbers differ between platforms.
    Signal(String),
}

/// Operations on a channel element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChanOp {
    /// Make a channel holding up to `cap` buffered messages.
    Make {
        /// Buffered messages it holds.
        cap: u64,
    },
    /// Send one message. The server answers `Done` once the message has a
    /// place (buffer room or a waiting receiver); the client then streams
    /// the message as chunks ([`crate::chunk`]) closed by an end chunk, and
    /// the server answers with a second response frame once the whole
    /// message is in the channel.
    Send,
    /// Receive one message. The server answers `Done` once a message is
    /// available, then streams it as chunks closed by an end chunk or a
    /// failure. On a subscription it takes one event the same way: `Done`
    /// once there is one, then the message `/X…\n`.
    Recv,
    /// Close it: later sends fail, receivers drain it.
    Close,
    /// Send many messages, in order, on one stream (a pipelined sender).
    /// The server answers `Done` at once (or the error: no chan there).
    /// The client then streams messages, each as chunks ([`crate::chunk`])
    /// closed by an end chunk; a failure chunk from the client abandons the
    /// message it ends, and the next one follows. The server takes the
    /// messages one after the other exactly as single sends: it asks for a
    /// place once a message's first chunk has come, then moves its bytes
    /// into the channel. It reports with frames of [`Placed`]: `Ok(n)`, n
    /// more messages are whole in the channel; `Err(e)`, the next message
    /// failed, and the server reads no more and closes the stream. It
    /// reports every [`PLACED_EVERY`] placed messages, and, between two
    /// messages, the client may write the word [`crate::chunk::SYNC`] to
    /// have everything before it reported as soon as it is placed (the
    /// server owes nothing else, so a client waiting for fewer than
    /// [`PLACED_EVERY`] messages must ask this way).
    /// The client ends the stream (close or reset) between messages; a
    /// message the end of the stream cuts short is abandoned, while the
    /// whole messages before it are still placed.
    SendMany,
    /// Receive many messages, in order, on one stream (a pipelined
    /// receiver). The server answers `Done` at once (or the error). The
    /// client grants credit as 4-byte little-endian words, each allowing
    /// the server to take that many more messages from the channel; the
    /// server takes a message only while it holds credit, and writes each
    /// one as chunks closed by an end chunk. A failure chunk ends a message
    /// cut short by its sender (the stream goes on), or, with kind
    /// [`ErrorKind::Closed`] or [`ErrorKind::Aborted`], the stream. The
    /// client ends the stream by closing or resetting it; a message taken
    /// but not yet written goes back to the head of the channel.
    RecvMany,
}

/// Operations on a watcher element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WatchOp {
    /// Make a watcher that keeps `spec.num_processes` copies of a command
    /// running (answered once the first copies have started, or one could
    /// not be).
    Make(Box<WatchSpec>),
    /// Start, stop, restart or reload it.
    Control(WatchAction),
    /// Read or change its process count; the answer is the count after the
    /// change ([`Reply::Count`]).
    Scale(ScaleOp),
}

/// Operations on a docker element; its streams, `wait` and `signal` are
/// the [`ProcOp`] verbs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DockerOp {
    /// Create and start a container and hold it at the path (answered once
    /// it has started, or failed to).
    Make(Box<DockerSpec>),
}

/// Operations on a membership subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionOp {
    /// Make a subscription: from now on, each server that joins (or leaves)
    /// the cluster is an event, received with [`ChanOp::Recv`] as one
    /// message holding its path and a newline.
    Make(SubscriptionSource),
}

/// A [`Request::SendMany`] server reports at least this often, in placed
/// messages.
pub const PLACED_EVERY: u64 = 16;

/// What the server reports on a [`Request::SendMany`] stream, as frames:
/// `Ok(n)` when n more messages are whole in the channel, `Err(e)` when the
/// next message failed (then nothing more).
pub type Placed = Result<u64, WireError>;

impl Request {
    /// A request for `op` at `path`.
    pub fn new(path: Path, op: impl Into<Op>) -> Request {
        Request { path, op: op.into() }
    }

    /// The path the request is about; its first component picks the server.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A short name for logs.
    pub fn verb(&self) -> &'static str {
        self.op.verb()
    }
}

impl Op {
    /// A short name for logs (the CLI command that asks it).
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Anchor(op) => match op {
                AnchorOp::List { .. } => "ls",
                AnchorOp::Peek => "peek",
                AnchorOp::Scrub => "scrub",
                AnchorOp::Events => "events",
                AnchorOp::Stats => "stats",
            },
            Op::Server(op) => match op {
                ServerOp::Stop => "stop",
                ServerOp::Join { .. } => "join",
                ServerOp::Members => "members",
                ServerOp::ReloadConfig => "reloadconfig",
                ServerOp::Hold => "hold",
            },
            Op::Proc(op) => match op {
                ProcOp::Make(_) => "mkproc",
                ProcOp::Stdin => "stdin",
                ProcOp::Stdout => "stdout",
                ProcOp::Stderr => "stderr",
                ProcOp::Wait => "wait",
                ProcOp::Signal(_) => "signal",
            },
            Op::Chan(op) => match op {
                ChanOp::Make { .. } => "mkchan",
                ChanOp::Send => "send",
                ChanOp::Recv => "recv",
                ChanOp::Close => "close",
                ChanOp::SendMany => "sendmany",
                ChanOp::RecvMany => "recvmany",
            },
            Op::Watch(op) => match op {
                WatchOp::Make(_) => "mkwatch",
                WatchOp::Control(_) => "watch",
                WatchOp::Scale(_) => "numprocs",
            },
            Op::Subscription(SubscriptionOp::Make(source)) => source.verb(),
            Op::Docker(DockerOp::Make(_)) => "mkdkr",
            Op::Dns(op) => match op {
                DnsOp::Make(_) => "mkdns",
                DnsOp::Set(_) => "set",
                DnsOp::Unset(_) => "unset",
                DnsOp::Replace(_) => "setall",
            },
            Op::Breaker(op) => op.verb(),
        }
    }

    /// True when the answer may wait on something else (a message, an
    /// exit, a member): the server acknowledges such streams at once.
    pub fn may_wait(&self) -> bool {
        if let Op::Breaker(op) = self {
            // A session stays open as long as its client wants.
            return matches!(op, BreakerOp::Session);
        }
        !matches!(
            self,
            Op::Anchor(AnchorOp::List { .. } | AnchorOp::Peek | AnchorOp::Scrub)
                | Op::Chan(ChanOp::Make { .. } | ChanOp::Close)
                | Op::Dns(_)
        )
    }
}

macro_rules! op_from {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for Op {
            fn from(op: $t) -> Op {
                Op::$v(op)
            }
        }
    )*};
}
op_from!(AnchorOp => Anchor, ServerOp => Server, ProcOp => Proc, ChanOp => Chan, WatchOp => Watch, SubscriptionOp => Subscription, DockerOp => Docker, DnsOp => Dns, BreakerOp => Breaker);

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Full path of the anchor.
    pub path: Path,
    /// Kind of its element; `None` for an empty anchor.
    pub kind: Option<ElementKind>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// A listing.
    List(Vec<Entry>),
    /// What `peek` says: the element's status, `None` for an empty anchor.
    Stat(Option<ElementStat>),
    /// How a process ended (`wait`).
    Exit(Box<ProcStat>),
    /// A count (a watcher's processes after `numprocs`, `incr`, `decr`).
    Count(u64),
    /// A server's view of the cluster's members.
    Members(Vec<Member>),
    /// CPU, memory and uptime (`stats`).
    Stats(ClusterStats),
    /// What `reloadconfig` did.
    Reload(Box<ReloadReport>),
    /// A breaker's answer.
    Breaker(BreakerReply),
}

impl Reply {
    /// A short name of the variant, for "unexpected answer" errors.
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Done => "done",
            Reply::List(_) => "a listing",
            Reply::Stat(_) => "a status",
            Reply::Exit(_) => "an exit status",
            Reply::Count(_) => "a count",
            Reply::Members(_) => "a member list",
            Reply::Stats(_) => "statistics",
            Reply::Reload(_) => "a reload report",
            Reply::Breaker(_) => "a breaker answer",
        }
    }
}

/// A member of the cluster as one server sees it (for [`ServerOp::Members`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: ServerId,
    /// Where it listens (TCP requests, UDP membership).
    pub addr: std::net::SocketAddr,
    /// Its OS process id.
    pub pid: u32,
    /// When it started, ms since the epoch.
    pub started: u64,
    /// Its identity's renewal count (bumped when it rejoins after a cut).
    pub renewed: u16,
    /// SWIM's incarnation of the member.
    pub incarnation: u16,
    /// SWIM's opinion of it.
    pub state: MemberState,
}

/// What SWIM thinks of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering.
    Alive,
    /// Not answering lately.
    Suspect,
    /// Declared gone.
    Down,
}

/// What `reloadconfig` did, by element path. JSON keys: `Created`,
/// `Changed`, `Removed`, `Unchanged`, `Failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReloadReport {
    /// Elements made.
    pub created: Vec<String>,
    /// Elements whose spec changed (applied in place or re-made).
    pub changed: Vec<String>,
    /// Elements removed from the file, and scrubbed.
    pub removed: Vec<String>,
    /// Elements left as they are.
    pub unchanged: Vec<String>,
    /// Elements that could not be made or changed.
    pub failed: Vec<ReloadFailure>,
}

/// One element `reloadconfig` could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReloadFailure {
    /// Its path.
    pub path: String,
    /// Why.
    pub error: String,
}

/// The class of a failure; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request itself is malformed.
    Invalid,
    /// The server named by the path is not in the cluster.
    NoServer,
    /// Nothing at that anchor.
    NotFound,
    /// The anchor holds an element of another kind.
    WrongKind,
    /// The anchor already holds an element.
    Exists,
    /// The element is closed.
    Closed,
    /// The element was scrubbed while waiting.
    Aborted,
    /// The resource is in use (e.g. a stream with a reader already).
    Busy,
    /// An operating-system error.
    Io,
    /// Not available on this server.
    Unsupported,
    /// A bug or an unexpected condition on the server.
    Internal,
}

/// An error as it crosses the wire: its class, the path it is about (when
/// there is one) and a one-line message for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// The class of the failure.
    pub kind: ErrorKind,
    /// The path the failure is about, when the message names it (a client
    /// prefixes the path itself to a message that does not).
    pub path: Option<Path>,
    /// One line for a human, naming the path and the cause.
    pub message: String,
}

impl WireError {
    /// A new error of `kind`, about no path in particular.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> WireError {
        WireError {
            kind,
            path: None,
            message: message.into(),
        }
    }

    /// A new error of `kind` about `path`; the message must name it.
    pub fn at(kind: ErrorKind, path: &Path, message: impl Into<String>) -> WireError {
        WireError {
            kind,
            path: Some(path.clone()),
            message: message.into(),
        }
    }

    /// This error, about `path`.
    pub fn with_path(mut self, path: &Path) -> WireError {
        self.path = Some(path.clone());
        self
    }
}

/// The first frame a server sends back on a request stream.
pub type Response = Result<Reply, WireError>;
