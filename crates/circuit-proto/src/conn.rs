//! One connection carries many multiplexed, flow-controlled streams (yamux).
//! The client opens one stream per request; the server only accepts streams.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
pub use tokio_yamux::{Control, Session, StreamHandle};

use crate::frame::{FrameError, read_frame, write_frame};
use crate::msg::{Request, Response};
use crate::secure::BoxIo;

/// Multiplexer settings shared by both ends.
pub fn mux_config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        keepalive_interval: Duration::from_secs(30),
        ..Default::default()
    }
}

/// The dialing side's multiplexed session over a secured stream.
pub fn client_session(io: BoxIo) -> Session<BoxIo> {
    Session::new_client(io, mux_config())
}

/// The accepting side's multiplexed session over a secured stream.
pub fn server_session(io: BoxIo) -> Session<BoxIo> {
    Session::new_server(io, mux_config())
}

/// A request that could not be carried out over the connection.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connection to the server is closed")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Opens a stream, sends `req` and reads the response. The stream stays
/// open for the bytes that follow a streaming request.
pub async fn call(control: &mut Control, req: &Request) -> Result<(Response, StreamHandle), CallError> {
    let mut stream = control.open_stream().await.map_err(|_| CallError::Closed)?;
    let lost = |e: FrameError| match e {
        FrameError::Eof | FrameError::Io(_) => CallError::Closed,
        e => e.into(),
    };
    write_frame(&mut stream, req).await.map_err(lost)?;
    let resp = read_frame(&mut stream).await.map_err(lost)?;
    Ok((resp, stream))
}

/// Answers a request stream and, for a one-shot request, closes it.
pub async fn respond(stream: &mut StreamHandle, resp: &Response) -> Result<(), FrameError> {
    write_frame(stream, resp).await
}

/// Closes our side of a stream after the last byte.
pub async fn finish(stream: &mut StreamHandle) {
    let _ = stream.shutdown().await;
}

/// Keeps moving a stream's incoming frames off the connection while its
/// owner is busy elsewhere (e.g. blocked writing what it read to a slow
/// consumer); never completes, so race it against that work with `select!`.
///
/// The multiplexer hands each stream its frames through a queue of 8; when
/// one stream's queue is full, the whole session stops reading the socket
/// until it drains, which stalls every other stream of the connection (and
/// deadlocks if one of them is what would unblock this one). Frames taken
/// here wait in the stream's own buffer, which flow control bounds to its
/// window: nothing is read on the owner's behalf, no window is granted.
pub async fn pump(stream: &mut StreamHandle) -> std::convert::Infallible {
    std::future::poll_fn(|cx| {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        // Registers for the next frame; the peeked byte stays in the stream.
        let _ = stream.poll_peek(cx, &mut buf);
        std::task::Poll::Pending
    })
    .await
}
