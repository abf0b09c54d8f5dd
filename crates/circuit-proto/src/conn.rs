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
