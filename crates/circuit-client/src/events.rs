//! Watching the cluster: a live stream of [`Event`]s, and CPU / memory /
//! uptime statistics of servers and processes.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::{EventKind, Path};
//! // Everything that happens in the cluster from now on…
//! let mut events = client.events(Path::root()).await?;
//! while let Some(ev) = events.next().await {
//!     let ev = ev?;
//!     if let EventKind::Exited { pid, code, .. } = &ev.kind {
//!         println!("{} ended (pid {pid:?}, code {code})", ev.path);
//!     }
//!     println!("{}", ev.to_json_line());
//! }
//! // …and what every process uses now.
//! for server in client.stats(Path::root()).await?.servers {
//!     for p in server.processes {
//!         println!("{} {} {:.1}% {} bytes", p.path, p.pid, p.cpu, p.rss);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use circuit_proto::conn::StreamHandle;
use circuit_proto::frame::{FrameError, read_frame};
use circuit_proto::{AnchorOp, ClusterStats, Event, Path, Reply, Request};
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::client::Client;
use crate::error::Error;

/// A live stream of events, from [`Client::events`]; a
/// [`futures::Stream`] of `Result<Event, Error>`. Dropping it ends the
/// stream on the servers.
pub struct EventStream {
    inner: BoxStream<'static, Result<Event, Error>>,
}

impl EventStream {
    /// The next event, in the order the dial-in server passes them on
    /// (each server's own events in the order they happened; no order
    /// between servers beyond that). `None` once the server ends the
    /// stream (it stopped, or the connection was lost: then an error
    /// comes first). Events lost because this reader (or a server on the
    /// way) fell behind are reported by an [`crate::EventKind::Lost`] event.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        self.inner.next().await
    }

    fn over(stream: StreamHandle, addr: String) -> EventStream {
        // The state is `None` once an error has ended the stream.
        let inner = futures::stream::unfold(Some(stream), move |state| {
            let addr = addr.clone();
            async move {
                let mut stream = state?;
                match read_frame::<Event, _>(&mut stream).await {
                    Ok(ev) => Some((Ok(ev), Some(stream))),
                    Err(FrameError::Eof) => None,
                    Err(FrameError::Io(_)) => Some((Err(Error::Closed(addr)), None)),
                    Err(e) => Some((Err(Error::Protocol(e.to_string())), None)),
                }
            }
        });
        EventStream { inner: inner.boxed() }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Client {
    /// Streams the events about `path` and below from now on: `/` for the
    /// whole cluster (servers that join later included), `/X…` for one
    /// server's elements, `/X…/a/b` for a subtree. Membership events
    /// (`joined`, `left`) are about `/X…` paths, so they come only on `/`.
    pub async fn events(&self, path: Path) -> Result<EventStream, Error> {
        match self.call_stream(&Request::new(path, AnchorOp::Events)).await? {
            (Reply::Done, stream) => Ok(EventStream::over(stream, self.url().addr.clone())),
            (r, _) => Err(Error::unexpected(&r)),
        }
    }

    /// CPU, memory and uptime of the servers and of the processes of the
    /// elements at `path` and below (`/`: every member; `/X…`: one server).
    /// CPU % is measured by each server over a short sample
    /// ([`circuit_proto::stats::SAMPLE_MS`]) when asked, so this takes that
    /// long. A member that could not answer is listed with its `error`.
    pub async fn stats(&self, path: Path) -> Result<ClusterStats, Error> {
        match self.call(&Request::new(path, AnchorOp::Stats)).await? {
            Reply::Stats(s) => Ok(s),
            r => Err(Error::unexpected(&r)),
        }
    }
}
