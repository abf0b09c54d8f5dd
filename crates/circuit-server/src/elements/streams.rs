//! Stream plumbing shared by the elements that run something (a process,
//! a container): the `stdin` verb.

use std::future::Future;
use std::io;

use circuit_proto::chunk::{self, Chunk};
use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{Path, Reply, Response, WireError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::info;

/// Why feeding an element's stdin stopped, for the element to put in its
/// own error.
pub(crate) enum StdinEnd {
    /// The element was scrubbed meanwhile.
    Aborted,
    /// Its stdin was closed already.
    Closed,
    /// Writing or closing failed (what failed).
    Failed(String),
}

/// An element's stdin, leased to one writer at a time.
pub(crate) trait StdinLease {
    /// What writes into the element's stdin.
    type Writer: AsyncWrite + Send + Unpin;
    /// The open stdin; `None` once it is closed.
    fn writer(&mut self) -> Option<&mut Self::Writer>;
    /// Closes stdin for good: the element reads end of file.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// The element's error for why feeding stdin at `path` stopped.
    fn error(path: &Path, end: StdinEnd) -> WireError;
}

/// `stdin`: copies the client's chunks into the element (`what`: "process",
/// "container") until the end chunk, then closes its stdin and answers with
/// a second response frame. A client that leaves without the end chunk
/// (dropped writer, lost connection) leaves stdin open for the next writer.
/// If the element stops reading (it exited), the error is answered at once,
/// stdin closed, and the rest of the client's chunks discarded.
pub(crate) async fn write_in<L: StdinLease>(
    mut lease: L,
    path: &Path,
    what: &'static str,
    scrubbed: impl Future<Output = ()>,
    stream: &mut StreamHandle,
) -> Option<Response> {
    let mut scrubbed = std::pin::pin!(scrubbed);
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    info!(op = "stdin", %path, "writer attached");
    let mut total = 0u64;
    let failure = loop {
        let data = tokio::select! {
            r = chunk::read_chunk(stream) => match r {
                Ok(Chunk::Data(data)) => data,
                Ok(Chunk::End) => {
                    if let Err(e) = lease.close().await {
                        break StdinEnd::Failed(format!("closing the {what}'s stdin: {e}"));
                    }
                    info!(op = "stdin", %path, bytes = total, "closed the {what}'s stdin");
                    return Some(Ok(Reply::Done));
                }
                Ok(Chunk::Fail(_)) | Err(_) => {
                    info!(op = "stdin", %path, bytes = total, "writer left; stdin stays open");
                    return None;
                }
            },
            _ = &mut scrubbed => break StdinEnd::Aborted,
        };
        let Some(input) = lease.writer() else {
            break StdinEnd::Closed;
        };
        let w = tokio::select! {
            r = input.write_all(&data) => r,
            _ = &mut scrubbed => break StdinEnd::Aborted,
        };
        let w = match w {
            Ok(()) => input.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = w {
            break StdinEnd::Failed(format!("writing to the {what}'s stdin: {e}"));
        }
        total += data.len() as u64;
    };
    if !matches!(failure, StdinEnd::Aborted) {
        let _ = lease.close().await;
    }
    let failure = L::error(path, failure);
    info!(op = "stdin", %path, bytes = total, error = %failure.message, "stdin failed");
    if conn::respond(stream, &Err(failure)).await.is_err() {
        return None;
    }
    // Let the writer finish: discard until it ends or leaves.
    while matches!(chunk::read_chunk(stream).await, Ok(Chunk::Data(_))) {}
    None
}
