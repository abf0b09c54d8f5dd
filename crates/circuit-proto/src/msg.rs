//! Requests and replies. Each request travels on its own multiplexed stream:
//! one request frame, one response frame, then (for streaming requests) raw bytes.

use serde::{Deserialize, Serialize};

use crate::path::Path;
use crate::proc::ProcSpec;
use crate::subscription::SubscriptionSource;
use crate::watch::{ScaleOp, WatchAction, WatchSpec};

/// What a client (or a forwarding server) asks of a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Children of `path`, sorted; every descendant when `recursive`.
    /// At `/`, the live servers.
    List { path: Path, recursive: bool },
    /// The status of the element at `path` as JSON; `null` for an empty anchor.
    Peek { path: Path },
    /// Remove the element at `path`.
    Scrub { path: Path },
    /// Stop the server `path` names, cleanly.
    Stop { path: Path },
    /// Merge the cluster of the server `path` names with the one of `url`.
    Join { path: Path, url: String },
    /// The membership state of the server `path` names (JSON), so a server
    /// that just joined learns every member at once.
    Members { path: Path },
    /// Start a process and hold it at `path` (answered once it has started,
    /// or failed to).
    MakeProc { path: Path, spec: ProcSpec },
    /// Write into the stdin of the process at `path`: after `Done`, the
    /// client streams bytes and closes its side; the server closes the
    /// process's stdin and answers with a second response frame.
    Stdin { path: Path },
    /// Read the stdout of the process at `path`: after `Done`, raw bytes
    /// until end of file. The client sends nothing more and keeps its side
    /// open while it reads: the server takes a close or reset as the reader
    /// leaving, and keeps the rest of the output for the next one.
    Stdout { path: Path },
    /// Read the stderr of the process at `path`, as [`Request::Stdout`].
    Stderr { path: Path },
    /// Block until the process at `path` has ended; the answer is its
    /// status as JSON ([`crate::ProcStat`]). The server gives up if the
    /// client closes its side first.
    Wait { path: Path },
    /// Send a signal to the process at `path`. The signal is a name (`TERM`,
    /// `SIGTERM`, `term`) or a number (`15`), resolved by the server, since
    /// numbers differ between platforms.
    Signal { path: Path, signal: String },
    /// Make a channel holding up to `cap` buffered messages at `path`.
    MakeChan { path: Path, cap: u64 },
    /// Send one message on the channel at `path`. The server answers `Done`
    /// once the message has a place (buffer room or a waiting receiver); the
    /// client then streams the message as chunks ([`crate::chunk`]) closed by
    /// an end chunk, and the server answers with a second response frame
    /// once the whole message is in the channel.
    Send { path: Path },
    /// Receive one message from the channel at `path`. The server answers
    /// `Done` once a message is available, then streams it as chunks
    /// ([`crate::chunk`]) closed by an end chunk or a failure. On a
    /// subscription ([`Request::MakeSubscription`]) it takes one event the
    /// same way: `Done` once there is one, then the message `/X…\n`.
    Recv { path: Path },
    /// Close the channel at `path`: later sends fail, receivers drain it.
    Close { path: Path },
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
    SendMany { path: Path },
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
    RecvMany { path: Path },
    /// Make a membership subscription at `path`: from now on, each server
    /// that joins (or leaves) the cluster is an event, received with
    /// [`Request::Recv`] as one message holding its path and a newline.
    MakeSubscription { path: Path, source: SubscriptionSource },
    /// Make a watcher at `path` that keeps `spec.num_processes` copies of a
    /// command running (answered once the first copies have started, or one
    /// could not be).
    MakeWatch { path: Path, spec: Box<WatchSpec> },
    /// Start, stop, restart or reload the watcher at `path`.
    WatchCtl { path: Path, action: WatchAction },
    /// Read or change the process count of the watcher at `path`; the
    /// answer is the count after the change, as JSON.
    Scale { path: Path, op: ScaleOp },
    /// Stream the events ([`crate::Event`]) about `path` and below, from
    /// now on, until the client goes away. At `/`, the server asked merges
    /// the events of every member (members that join later included). The
    /// server answers `Done`, then sends one frame per event. It never
    /// waits on a slow reader: events it cannot hand on are dropped and
    /// reported by an [`crate::EventKind::Lost`] event.
    Events { path: Path },
    /// CPU, memory and uptime of the servers and of the processes of the
    /// elements at `path` and below, answered as JSON
    /// ([`crate::ClusterStats`]); at `/`, of every member.
    Stats { path: Path },
    /// Read the config file of the server at `path` (`/X…`) again and
    /// apply the difference to the elements made from it; the answer is
    /// JSON: `{"Created": [...], "Changed": [...], "Removed": [...],
    /// "Unchanged": [...], "Failed": [{"Path": ..., "Error": ...}]}`.
    ReloadConfig { path: Path },
}

/// A [`Request::SendMany`] server reports at least this often, in placed
/// messages.
pub const PLACED_EVERY: u64 = 16;

/// What the server reports on a [`Request::SendMany`] stream, as frames:
/// `Ok(n)` when n more messages are whole in the channel, `Err(e)` when the
/// next message failed (then nothing more).
pub type Placed = Result<u64, WireError>;

impl Request {
    /// The path the request is about; its first component picks the server.
    pub fn path(&self) -> &Path {
        match self {
            Request::List { path, .. }
            | Request::Peek { path }
            | Request::Scrub { path }
            | Request::Stop { path }
            | Request::Join { path, .. }
            | Request::Members { path } => path,
            Request::MakeProc { path, .. }
            | Request::Stdin { path }
            | Request::Stdout { path }
            | Request::Stderr { path }
            | Request::Wait { path }
            | Request::Signal { path, .. } => path,
            Request::MakeChan { path, .. }
            | Request::Send { path }
            | Request::Recv { path }
            | Request::Close { path }
            | Request::SendMany { path }
            | Request::RecvMany { path } => path,
            Request::MakeSubscription { path, .. } => path,
            Request::MakeWatch { path, .. } | Request::WatchCtl { path, .. } | Request::Scale { path, .. } => path,
            Request::Events { path } | Request::Stats { path } => path,
            Request::ReloadConfig { path } => path,
        }
    }

    /// A short name for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::List { .. } => "ls",
            Request::Peek { .. } => "peek",
            Request::Scrub { .. } => "scrub",
            Request::Stop { .. } => "stop",
            Request::Join { .. } => "join",
            Request::Members { .. } => "members",
            Request::MakeProc { .. } => "mkproc",
            Request::Stdin { .. } => "stdin",
            Request::Stdout { .. } => "stdout",
            Request::Stderr { .. } => "stderr",
            Request::Wait { .. } => "wait",
            Request::Signal { .. } => "signal",
            Request::MakeChan { .. } => "mkchan",
            Request::Send { .. } => "send",
            Request::Recv { .. } => "recv",
            Request::Close { .. } => "close",
            Request::SendMany { .. } => "sendmany",
            Request::RecvMany { .. } => "recvmany",
            Request::MakeSubscription { source, .. } => source.verb(),
            Request::MakeWatch { .. } => "mkwatch",
            Request::WatchCtl { .. } => "watch",
            Request::Scale { .. } => "numprocs",
            Request::Events { .. } => "events",
            Request::Stats { .. } => "stats",
            Request::ReloadConfig { .. } => "reloadconfig",
        }
    }
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Full path of the anchor.
    pub path: Path,
    /// Kind of its element (`server`, `proc`, …), or empty for an empty anchor.
    pub kind: String,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// A listing.
    List(Vec<Entry>),
    /// A JSON document (peek output), as text: the wire format is not self-describing.
    Json(String),
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

/// An error as it crosses the wire: its class and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// The class of the failure.
    pub kind: ErrorKind,
    /// One line for a human, naming the path and the cause.
    pub message: String,
}

impl WireError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> WireError {
        WireError {
            kind,
            message: message.into(),
        }
    }
}

/// The first frame a server sends back on a request stream.
pub type Response = Result<Reply, WireError>;
