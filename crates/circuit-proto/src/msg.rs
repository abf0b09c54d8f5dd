//! Requests and replies. Each request travels on its own multiplexed stream:
//! one request frame, one response frame, then (for streaming requests) raw bytes.

use serde::{Deserialize, Serialize};

use crate::path::Path;
use crate::proc::ProcSpec;

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
    /// ([`crate::chunk`]) closed by an end chunk or a failure.
    Recv { path: Path },
    /// Close the channel at `path`: later sends fail, receivers drain it.
    Close { path: Path },
}

impl Request {
    /// The path the request is about; its first component picks the server.
    pub fn path(&self) -> &Path {
        match self {
            Request::List { path, .. }
            | Request::Peek { path }
            | Request::Scrub { path }
            | Request::Stop { path }
            | Request::Join { path, .. } => path,
            Request::MakeProc { path, .. }
            | Request::Stdin { path }
            | Request::Stdout { path }
            | Request::Stderr { path }
            | Request::Wait { path }
            | Request::Signal { path, .. } => path,
            Request::MakeChan { path, .. }
            | Request::Send { path }
            | Request::Recv { path }
            | Request::Close { path } => path,
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
