//! Process elements: start an OS process on a server, talk to its standard
//! streams, signal it and wait for it.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::ProcSpec;
//! use tokio::io::AsyncReadExt;
//!
//! let anchor = client.walk("/X88550014d4c82e4d/pippi")?;
//! let proc = anchor.make_proc(ProcSpec::new("/bin/ls", ["/"])).await?;
//! proc.stdin().await?.close().await?;
//! let mut listing = String::new();
//! proc.stdout().await?.read_to_string(&mut listing).await.map_err(circuit_client::Error::Io)?;
//! let stat = proc.wait().await?;
//! println!("{listing}{:?}", stat.exit);
//! proc.scrub().await?;
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use circuit_proto::conn::StreamHandle;
use circuit_proto::{Path, ProcOp, ProcSpec, ProcStat, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::anchor::Anchor;
use crate::chan::{ChanReader, ChanWriter, from_io};
use crate::error::Error;

impl Anchor {
    /// Starts a process on the anchor's server and places it here. Fails if
    /// the anchor already holds an element, or if the process cannot be
    /// started (the error is the OS's; the element then stays, in phase
    /// `unknown`, unless `spec.scrub` is set).
    pub async fn make_proc(&self, spec: ProcSpec) -> Result<Proc, Error> {
        self.ask_done(ProcOp::Make(spec)).await?;
        Ok(self.proc())
    }

    /// A handle on the process held here. Nothing is checked until it is used.
    pub fn proc(&self) -> Proc {
        Proc(self.clone())
    }
}

/// A handle on a process element. Cheap to clone.
#[derive(Clone)]
pub struct Proc(Anchor);

impl Proc {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds the process.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// The process's status now.
    pub async fn peek(&self) -> Result<ProcStat, Error> {
        match self.0.stat().await? {
            Some(circuit_proto::ElementStat::Proc(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(self.path(), "process", "proc", other.as_ref())),
        }
    }

    /// Waits until the process has ended and returns its final status (at
    /// once if it has ended already). Fails with [`ErrorKind::Aborted`] if the
    /// element is scrubbed meanwhile.
    pub async fn wait(&self) -> Result<ProcStat, Error> {
        match self.0.ask(ProcOp::Wait).await? {
            Reply::Exit(stat) => Ok(*stat),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// Sends a signal: a name (`TERM`, `SIGTERM`, `term`) or a number (`15`),
    /// resolved by the server.
    pub async fn signal(&self, signal: &str) -> Result<(), Error> {
        self.0.ask_done(ProcOp::Signal(signal.to_string())).await
    }

    /// Removes the element. A running process keeps running (detached); the
    /// server still reaps it when it ends.
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }

    /// Takes the process's stdin for writing (one writer at a time). Close it
    /// with [`ProcStdin::close`] to close the process's stdin.
    pub async fn stdin(&self) -> Result<ProcStdin, Error> {
        let stream = self.0.open(ProcOp::Stdin).await?;
        Ok(ProcStdin {
            writer: ChanWriter::over(stream),
        })
    }

    /// Reads the process's stdout (one reader at a time), until end of file.
    /// Dropping the reader early leaves the rest for the next reader.
    pub async fn stdout(&self) -> Result<ProcOutput, Error> {
        let stream = self.0.open(ProcOp::Stdout).await?;
        Ok(ProcOutput::over(stream, self.path()))
    }

    /// Reads the process's stderr, as [`Proc::stdout`].
    pub async fn stderr(&self) -> Result<ProcOutput, Error> {
        let stream = self.0.open(ProcOp::Stderr).await?;
        Ok(ProcOutput::over(stream, self.path()))
    }
}

/// The process's stdin, as an [`AsyncWrite`]. Writes block while the process
/// does not read (its pipe holds 32 KiB). [`ProcStdin::close`] closes it and
/// reports whether every byte got through. Bytes travel in chunks with an
/// explicit end, so dropping the writer without closing (or losing the
/// connection) leaves the process's stdin open for another writer; bytes
/// written so far are delivered.
pub struct ProcStdin {
    writer: ChanWriter,
}

impl ProcStdin {
    /// Closes the process's stdin and waits for the server to confirm that
    /// every byte written was delivered to the process.
    pub async fn close(self) -> Result<(), Error> {
        self.writer.finish().await
    }

    /// Copies `src` to the end into the process's stdin, then closes it.
    /// Stops early, with the server's error, if the process stops reading.
    /// Returns the number of bytes copied.
    pub async fn copy_from<R: AsyncRead + Unpin>(mut self, mut src: R) -> Result<u64, Error> {
        let n = tokio::io::copy(&mut src, &mut self.writer).await.map_err(from_io)?;
        self.writer.finish().await?;
        Ok(n)
    }
}

impl AsyncWrite for ProcStdin {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// The process's stdout or stderr, as an [`AsyncRead`] that ends at the
/// process's end of file. The server marks that end explicitly, so output
/// cut short (its server died, the connection was lost, the element was
/// scrubbed) is a read error, never a silent end of file.
pub struct ProcOutput {
    reader: ChanReader,
    path: Path,
}

impl ProcOutput {
    fn over(stream: StreamHandle, path: &Path) -> ProcOutput {
        ProcOutput {
            reader: ChanReader::over(stream),
            path: path.clone(),
        }
    }

    /// Reads everything to end of file.
    pub async fn read_all(mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.read_to_end(&mut out).await.map_err(from_io)?;
        Ok(out)
    }
}

impl AsyncRead for ProcOutput {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.reader).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let owner = self
                    .path
                    .server_id()
                    .map_or_else(|| "its server".to_string(), |id| format!("server {id}"));
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the output of {} was cut short: the stream from {owner} ended before the output did ({owner} may have died; see `circuit ls /`)",
                        self.path
                    ),
                )))
            }
            other => other,
        }
    }
}
