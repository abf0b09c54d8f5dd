//! One connection carries many multiplexed, flow-controlled streams (yamux).
//! The client opens one stream per request; the server only accepts streams.
//!
//! A driver task owns the connection. Every stream has its own receive
//! buffer bounded by its flow-control window, so a stream nobody reads never
//! holds up the others: it only stops its own sender.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::frame::{FrameError, MAX_REQUEST, encode, read_frame, write_frame};
use crate::msg::{Request, Response};
use crate::secure::BoxIo;

/// Most streams open at once on one connection.
pub const MAX_STREAMS: usize = 4096;

/// Multiplexer settings shared by both ends.
pub fn mux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_connection_receive_window(Some(MAX_STREAMS * yamux::DEFAULT_CREDIT as usize));
    c.set_max_num_streams(MAX_STREAMS);
    c
}

type Opener = oneshot::Sender<Result<yamux::Stream, String>>;

/// Opens streams on a connection. Cheap to clone. The connection closes
/// once every `Control` and every stream of a client connection are gone.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Opener>,
    /// Its sender lives in the connection's driver: dropped when it stops.
    done: tokio::sync::watch::Receiver<()>,
}

impl Control {
    /// Resolves when the connection is gone (its driver stopped: closed by
    /// either end, or broken). Holds no handle on the connection, so waiting
    /// does not keep it open.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move { while done.changed().await.is_ok() {} }
    }

    /// True once the connection is gone (its driver has stopped).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Opens a new stream to the other end.
    pub async fn open_stream(&mut self) -> io::Result<StreamHandle> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "connection closed");
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| closed())?;
        let s = rx
            .await
            .map_err(|_| closed())?
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        Ok(StreamHandle {
            inner: s.compat(),
            _conn: self.clone(),
        })
    }
}

/// One multiplexed stream: a tokio `AsyncRead + AsyncWrite`. Dropping it
/// resets the stream unless it was shut down.
pub struct StreamHandle {
    inner: Compat<yamux::Stream>,
    _conn: Control,
}

impl StreamHandle {
    /// Acknowledges an accepted stream at once (an empty data frame), so a
    /// request the server answers only later never counts against the
    /// opener's limit of unacknowledged streams.
    pub async fn ack(&mut self) -> io::Result<()> {
        self.write(&[]).await.map(|_| ())
    }
}

impl AsyncRead for StreamHandle {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StreamHandle {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Streams the other end opens, as they arrive. Dropping it closes the
/// connection (streams already handed out keep it open until they end).
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<StreamHandle>,
    ended: Arc<OnceLock<MuxError>>,
    _close: oneshot::Sender<()>,
}

impl Incoming {
    /// The next stream; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<StreamHandle> {
        self.rx.recv().await
    }

    /// Once [`next`](Self::next) has answered `None`: the protocol error the
    /// other end made, if that is why the connection ended. A peer that
    /// closes or resets its socket made none.
    pub fn protocol_error(&self) -> Option<&MuxError> {
        self.ended.get()
    }
}

/// A multiplexer protocol error the other end made: what the server saw.
#[derive(Debug, Clone)]
pub struct MuxError(String);

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl MuxError {
    /// The error, if it is one of protocol (not a socket closed or reset).
    fn of(e: &yamux::ConnectionError) -> Option<MuxError> {
        use yamux::ConnectionError as E;
        match e {
            // A socket closed or reset mid-frame (a client killed, or
            // `circuit stdout | head`) is an end, not a protocol error.
            E::Io(_) | E::Closed | E::Decode(yamux::FrameDecodeError::Io(_)) => None,
            E::Decode(d) => Some(MuxError(format!("undecodable multiplexer frame: {d}"))),
            E::TooManyStreams => Some(MuxError(format!("more than {MAX_STREAMS} streams open at once"))),
            E::NoMoreStreamIds => Some(MuxError("stream ids used up".into())),
            E::InvalidWindowUpdate => Some(MuxError("a window update past the flow-control window".into())),
            other => Some(MuxError(other.to_string())),
        }
    }
}

/// The socket as the multiplexer sees it: writes are gathered (yamux writes a
/// frame's header and body separately, and flushes after each batch), so a
/// burst of small frames costs one system call, not two per frame.
type Socket = tokio::io::BufWriter<BoxIo>;

fn buffered(io: BoxIo) -> Socket {
    tokio::io::BufWriter::with_capacity(64 * 1024, io)
}

/// Starts the dialing side of a connection. Streams the server might open
/// are refused: no server ever calls back into a client.
pub fn client(io: BoxIo) -> Control {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done) = tokio::sync::watch::channel(());
    let conn = yamux::Connection::new(buffered(io).compat(), mux_config(), yamux::Mode::Client);
    tokio::spawn(async move {
        drive(conn, rx, None).await;
        drop(done_tx);
    });
    Control { tx, done }
}

/// Starts the accepting side of a connection.
pub fn server(io: BoxIo) -> Incoming {
    let (tx, rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = oneshot::channel();
    let (done_tx, done) = tokio::sync::watch::channel(());
    let ended = Arc::new(OnceLock::new());
    let conn = yamux::Connection::new(buffered(io).compat(), mux_config(), yamux::Mode::Server);
    let inbound = Inbound {
        tx: in_tx,
        ctl: Control { tx, done },
        closed: close_rx,
        closing: false,
        ended: ended.clone(),
    };
    tokio::spawn(async move {
        drive(conn, rx, Some(inbound)).await;
        drop(done_tx);
    });
    Incoming {
        rx: in_rx,
        ended,
        _close: close_tx,
    }
}

/// The accepting side's ends of a connection's driver.
struct Inbound {
    /// Where new streams go.
    tx: mpsc::UnboundedSender<StreamHandle>,
    /// What each stream handed out holds to keep the connection.
    ctl: Control,
    /// Ready once the [`Incoming`] is dropped: the connection closes.
    closed: oneshot::Receiver<()>,
    /// Set once `closed` was ready (a oneshot is polled to completion once).
    closing: bool,
    /// The protocol error the connection ended on, if any.
    ended: Arc<OnceLock<MuxError>>,
}

/// Moves the connection's bytes: opens requested streams, hands out
/// inbound ones, and closes a client connection nobody uses any more.
async fn drive(
    mut conn: yamux::Connection<Compat<Socket>>,
    mut opens: mpsc::UnboundedReceiver<Opener>,
    mut inbound: Option<Inbound>,
) {
    let mut pending: VecDeque<Opener> = VecDeque::new();
    let mut unused = false;
    std::future::poll_fn(|cx| {
        loop {
            match opens.poll_recv(cx) {
                Poll::Ready(Some(o)) => pending.push_back(o),
                Poll::Ready(None) => {
                    unused = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        while let Some(front) = pending.front() {
            if front.is_closed() {
                pending.pop_front();
                continue;
            }
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(s)) => {
                    let _ = pending.pop_front().expect("front exists").send(Ok(s));
                }
                Poll::Ready(Err(e)) => {
                    for o in pending.drain(..) {
                        let _ = o.send(Err(e.to_string()));
                    }
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        if unused && inbound.is_none() && pending.is_empty() {
            return conn.poll_close(cx).map(|_| ());
        }
        if let Some(inb) = &mut inbound
            && (inb.closing || Pin::new(&mut inb.closed).poll(cx).is_ready())
        {
            inb.closing = true;
            // The server let the connection go (idle, or stopping).
            return conn.poll_close(cx).map(|_| ());
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(s))) => {
                    if let Some(inb) = &inbound {
                        let _ = inb.tx.send(StreamHandle {
                            inner: s.compat(),
                            _conn: inb.ctl.clone(),
                        });
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let (Some(inb), Some(err)) = (&inbound, MuxError::of(&e)) {
                        let _ = inb.ended.set(err);
                    }
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

/// A request that could not be carried out over the connection.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connection to the server is closed")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Opens a stream, sends `req` and reads the response (of any size). The
/// stream stays open for the bytes that follow a streaming request. A
/// request over [`MAX_REQUEST`] is refused here, before it is sent.
pub async fn call(control: &mut Control, req: &Request) -> Result<(Response, StreamHandle), CallError> {
    let frame = encode(req)?;
    if frame.len() - 4 > MAX_REQUEST {
        return Err(FrameError::RequestTooLarge(frame.len() - 4).into());
    }
    let mut stream = control.open_stream().await.map_err(|_| CallError::Closed)?;
    let lost = |e: FrameError| match e {
        FrameError::Eof | FrameError::Io(_) => CallError::Closed,
        e => e.into(),
    };
    let sent = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| lost(e.into()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_socket_is_an_end_not_a_protocol_error() {
        use yamux::{ConnectionError as E, FrameDecodeError as D};
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(MuxError::of(&E::Decode(D::Io(reset()))).is_none());
        assert!(MuxError::of(&E::Io(reset())).is_none());
        let big = MuxError::of(&E::Decode(D::FrameTooLarge(1 << 30))).expect("a protocol error");
        assert!(big.to_string().contains("undecodable multiplexer frame"), "{big}");
    }
}
