use circuit_proto::conn::CallError;
use circuit_proto::secure::HandshakeError;
use circuit_proto::url::UrlError;
use circuit_proto::{ElementStat, ErrorKind, Path, PathError, Reply, WireError};

/// Everything that can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that is not a circuit URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A malformed anchor path or name.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The server could not be reached.
    #[error("cannot reach {addr}: {err}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// What the OS said.
        err: std::io::Error,
    },
    /// The server was reached but the secure channel could not be set up.
    #[error("{addr}: {err}")]
    Handshake {
        /// The address dialed.
        addr: String,
        /// Why the handshake failed.
        err: HandshakeError,
    },
    /// No server answered multicast discovery.
    #[error("{0}")]
    Discover(String),
    /// The connection to the dial-in server was lost.
    #[error("lost the connection to {0}")]
    Closed(String),
    /// A request forwarded to another server was cut before its answer:
    /// that server (or the way to it) went away.
    #[error(
        "lost server {server} before it answered (asked through {addr}); it may have died or left the cluster: see `circuit ls /`"
    )]
    OwnerLost {
        /// The server that owns the path.
        server: circuit_proto::ServerId,
        /// The dial-in server the request went through.
        addr: String,
    },
    /// The server received the request and refused it or failed it.
    #[error(transparent)]
    Remote(#[from] WireError),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Reading or writing an element's byte stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The class of a server-side error, if this is one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Remote(e) => Some(e.kind),
            _ => None,
        }
    }

    /// The path the error is about, when the server named one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Remote(e) => e.path.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn from_call(e: CallError, addr: &str, owner: Option<circuit_proto::ServerId>) -> Error {
        match e {
            CallError::Closed => match owner {
                Some(server) => Error::OwnerLost {
                    server,
                    addr: addr.to_string(),
                },
                None => Error::Closed(addr.to_string()),
            },
            CallError::Frame(f) => Error::Protocol(f.to_string()),
        }
    }

    /// A reply of the wrong shape for the request.
    pub(crate) fn unexpected(r: &Reply) -> Error {
        Error::Protocol(format!("{} where none was expected", r.name()))
    }

    /// `peek` through a typed handle found nothing (`no {missing} at …`) or
    /// another kind (`anchor … does not hold a {kind}`).
    pub(crate) fn missing_or_wrong(path: &Path, missing: &str, kind: &str, found: Option<&ElementStat>) -> Error {
        Error::Remote(match found {
            None => WireError::at(ErrorKind::NotFound, path, format!("no {missing} at {path}")),
            Some(_) => WireError::at(
                ErrorKind::WrongKind,
                path,
                format!("anchor {path} does not hold a {kind}"),
            ),
        })
    }

    /// A typed handle found another kind (or nothing) at its path.
    pub(crate) fn wrong_kind(path: &Path, kind: &str, found: Option<&ElementStat>) -> Error {
        Error::missing_or_wrong(path, kind, kind, found)
    }
}
