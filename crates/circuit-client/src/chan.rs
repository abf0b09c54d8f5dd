//! Channel elements: Go-like channels of byte messages held by a server.
//!
//! A channel buffers up to its capacity of messages. A send waits until a
//! receiver takes the message or the buffer has room; a buffered message
//! holds up to 32 KiB, a longer one streams to its receiver once one is
//! matched. Messages arrive in order. After `close`, sends fail and receives
//! drain the channel, then fail; `scrub` aborts every waiting sender and
//! receiver.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! let anchor = client.walk("/X88550014d4c82e4d/this/is/charlie")?;
//! let chan = anchor.make_chan(3).await?;
//! chan.send(b"hello").await?;
//! assert_eq!(chan.recv().await?, b"hello");
//! chan.close().await?;
//! println!("{:?}", chan.peek().await?);
//! chan.scrub().await?;
//! # Ok(()) }
//! ```
//!
//! A message is whole or not at all: a sender that goes away (or drops its
//! [`ChanWriter`] without shutting it down) before the end of its message
//! abandons it, and no receiver sees it, except that a receiver already
//! streaming a message longer than 32 KiB gets an error. A receiver that
//! goes away before the message reached it leaves it in the channel; one
//! that goes away in the middle of a message loses it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use circuit_proto::chunk::{self, END, FAIL, MAX_CHUNK};
use circuit_proto::conn::StreamHandle;
use circuit_proto::frame::{MAX_FRAME, decode};
use circuit_proto::{ChanOp, Path, Response, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::anchor::Anchor;
use crate::error::Error;

impl Anchor {
    /// Makes a channel with room for `cap` buffered messages (0: every send
    /// waits for a receiver) and places it here. Fails if the anchor already
    /// holds an element.
    pub async fn make_chan(&self, cap: u64) -> Result<Chan, Error> {
        self.ask_done(ChanOp::Make { cap }).await?;
        Ok(self.chan())
    }

    /// A handle on the channel held here. Nothing is checked until it is used.
    pub fn chan(&self) -> Chan {
        Chan(self.clone())
    }
}

pub use circuit_proto::ChanStat;

/// A handle on a channel element. Cheap to clone.
#[derive(Clone)]
pub struct Chan(Anchor);

/// Turns an I/O error of a channel stream back into an [`Error`]: the
/// server's own error when it sent one, else [`Error::Io`].
pub(crate) fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = e.into_inner().expect("checked");
        return *inner.downcast::<Error>().expect("checked");
    }
    Error::Io(e)
}

impl Chan {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds the channel.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// Sends one message: waits until it has a place (a receiver or buffer
    /// room), writes it, and returns once the server holds all of it.
    pub async fn send(&self, msg: &[u8]) -> Result<(), Error> {
        let mut w = self.send_stream().await?;
        w.write_all(msg).await.map_err(from_io)?;
        w.finish().await
    }

    /// Starts a message of any length: waits until it has a place, then
    /// returns its writer. Write the message, then call
    /// [`ChanWriter::finish`] (or `shutdown`); dropping the writer before
    /// that abandons the message.
    pub async fn send_stream(&self) -> Result<ChanWriter, Error> {
        Ok(ChanWriter::over(self.0.open(ChanOp::Send).await?))
    }

    /// Receives one message, waiting for one if the channel is empty.
    /// Fails once the channel is closed and drained.
    pub async fn recv(&self) -> Result<Vec<u8>, Error> {
        let mut r = self.recv_stream().await?;
        let mut msg = Vec::new();
        r.read_to_end(&mut msg).await.map_err(from_io)?;
        Ok(msg)
    }

    /// Takes one message and returns a reader of its bytes, which ends at the
    /// end of the message. A read fails if the message was cut short (its
    /// sender went away); the error then says so.
    pub async fn recv_stream(&self) -> Result<ChanReader, Error> {
        Ok(ChanReader {
            stream: self.0.open(ChanOp::Recv).await?,
            acc: Vec::new(),
            state: ReaderState::Header,
        })
    }

    /// Closes the channel: later sends fail, receivers drain what is left.
    /// Fails if it is closed already.
    pub async fn close(&self) -> Result<(), Error> {
        self.0.ask_done(ChanOp::Close).await
    }

    /// The channel's status now.
    pub async fn peek(&self) -> Result<ChanStat, Error> {
        match self.0.stat().await? {
            Some(circuit_proto::ElementStat::Chan(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(self.path(), "chan", "chan", other.as_ref())),
        }
    }

    /// Removes the channel; waiting senders and receivers fail with
    /// "channel aborted".
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }
}

/// How a stream failed, kept to be reported again on every later call.
#[derive(Debug, Clone)]
enum Failure {
    Remote(WireError),
    Io(io::ErrorKind, String),
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(Error::Remote(w)) => Failure::Remote(w.clone()),
            _ => Failure::Io(e.kind(), e.to_string()),
        }
    }

    fn to_io(&self) -> io::Error {
        match self {
            Failure::Remote(w) => io::Error::other(Error::Remote(w.clone())),
            Failure::Io(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

enum WriterState {
    /// Taking bytes.
    Open,
    /// The end chunk is queued.
    Ending,
    /// Our side is closed; waiting for the server's confirmation.
    Confirming,
    /// The server holds the whole message.
    Finished,
    Failed(Failure),
}

/// The writer of one message, from [`Chan::send_stream`]. Bytes are sent
/// as they are written, with back-pressure; [`ChanWriter::finish`] (or
/// `AsyncWriteExt::shutdown`) ends the message and waits until the server
/// holds all of it. A failure from the server (e.g. the channel was
/// scrubbed) is an `io::Error` wrapping [`Error::Remote`].
pub struct ChanWriter {
    stream: StreamHandle,
    /// Encoded chunks not yet written to the stream.
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    /// What the server answered so far.
    reply: Vec<u8>,
    state: WriterState,
}

impl ChanWriter {
    /// A writer of chunks on `stream`, whose server answers once after the
    /// end chunk (also used for a process's stdin).
    pub(crate) fn over(stream: StreamHandle) -> ChanWriter {
        ChanWriter {
            stream,
            out: Vec::new(),
            sent: 0,
            reply: Vec::new(),
            state: WriterState::Open,
        }
    }

    /// Ends the message and waits until the server holds all of it.
    pub async fn finish(mut self) -> Result<(), Error> {
        self.shutdown().await.map_err(from_io)
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        let f = Failure::from_io(&e);
        self.state = WriterState::Failed(f);
        e
    }

    /// Reads the server's answer, which comes once the message is whole, or
    /// early with an error.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Response>> {
        loop {
            if self.reply.len() >= 4 {
                let n = u32::from_le_bytes(self.reply[..4].try_into().expect("4 bytes")) as usize;
                if n > MAX_FRAME {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "oversized answer")));
                }
                if self.reply.len() >= 4 + n {
                    return Poll::Ready(
                        decode::<Response>(&self.reply[4..4 + n])
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                    );
                }
            }
            let mut tmp = [0u8; 512];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection lost before the server confirmed the message",
                )));
            }
            self.reply.extend_from_slice(rb.filled());
        }
    }

    /// Fails if the server has already answered (it only does so early to
    /// report an error).
    fn check_early_reply(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_reply(cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(Err(w))) => Err(self.fail(io::Error::other(Error::Remote(w)))),
            Poll::Ready(Ok(Ok(_))) => Err(self.fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server confirmed the message before its end",
            ))),
            Poll::Ready(Err(e)) => Err(self.fail(e)),
        }
    }

    /// Writes out what is queued.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            // Polling the read side too registers for the window updates a
            // yamux writer waits for, and catches an early error answer.
            self.check_early_reply(cx)?;
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => {
                    // The server may have said why it stopped reading.
                    self.check_early_reply(cx)?;
                    return Poll::Ready(Err(self.fail(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn failed(&self) -> io::Result<()> {
        match &self.state {
            WriterState::Failed(f) => Err(f.to_io()),
            _ => Ok(()),
        }
    }
}

impl AsyncWrite for ChanWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.failed()?;
        if !matches!(this.state, WriterState::Open) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the message is already ended",
            )));
        }
        this.check_early_reply(cx)?;
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_CHUNK);
        this.out.extend_from_slice(&chunk::header(n));
        this.out.extend_from_slice(&buf[..n]);
        // Start sending now; what does not fit yet goes out on the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.failed()?;
        if matches!(this.state, WriterState::Finished) {
            return Poll::Ready(Ok(()));
        }
        if matches!(this.state, WriterState::Open) {
            this.check_early_reply(cx)?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &this.state {
                WriterState::Failed(f) => return Poll::Ready(Err(f.to_io())),
                WriterState::Finished => return Poll::Ready(Ok(())),
                WriterState::Open => {
                    this.check_early_reply(cx)?;
                    ready!(this.poll_drain(cx))?;
                    this.out.extend_from_slice(&END.to_le_bytes());
                    this.state = WriterState::Ending;
                }
                WriterState::Ending => {
                    ready!(this.poll_drain(cx))?;
                    // Our half closes; the server's answer still comes.
                    let _ = ready!(Pin::new(&mut this.stream).poll_shutdown(cx));
                    this.state = WriterState::Confirming;
                }
                WriterState::Confirming => match ready!(this.poll_reply(cx)) {
                    Ok(Ok(_)) => this.state = WriterState::Finished,
                    Ok(Err(w)) => return Poll::Ready(Err(this.fail(io::Error::other(Error::Remote(w))))),
                    Err(e) => return Poll::Ready(Err(this.fail(e))),
                },
            }
        }
    }
}

enum ReaderState {
    /// Reading a chunk's length word.
    Header,
    /// In a data chunk, with this many bytes left.
    Data(usize),
    /// Reading the length of a failure frame.
    FailLen,
    /// Reading a failure frame of this length.
    FailBody(usize),
    /// The message is whole and read.
    End,
    Failed(Failure),
}

/// The reader of one message, from [`Chan::recv_stream`]. It returns end of
/// file at the end of the message. An error means the message was cut
/// short; a failure the server reported is an `io::Error` wrapping
/// [`Error::Remote`].
pub struct ChanReader {
    stream: StreamHandle,
    /// Bytes of a length word or failure frame read so far.
    acc: Vec<u8>,
    state: ReaderState,
}

impl ChanReader {
    /// A reader of one chunked message on `stream` (also a process's output).
    pub(crate) fn over(stream: StreamHandle) -> ChanReader {
        ChanReader {
            stream,
            acc: Vec::new(),
            state: ReaderState::Header,
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.state = ReaderState::Failed(Failure::from_io(&e));
        e
    }

    /// Reads until `acc` holds `want` bytes.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<()>> {
        while self.acc.len() < want {
            let mut tmp = [0u8; 512];
            let k = (want - self.acc.len()).min(tmp.len());
            let mut rb = ReadBuf::new(&mut tmp[..k]);
            if let Err(e) = ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb)) {
                return Poll::Ready(Err(self.fail(e)));
            }
            if rb.filled().is_empty() {
                return Poll::Ready(Err(self.fail(cut_short())));
            }
            self.acc.extend_from_slice(rb.filled());
        }
        Poll::Ready(Ok(()))
    }

    fn take_word(&mut self) -> u32 {
        let w = u32::from_le_bytes(self.acc[..4].try_into().expect("4 bytes"));
        self.acc.clear();
        w
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection lost in the middle of the message",
    )
}

impl AsyncRead for ChanReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                ReaderState::End => return Poll::Ready(Ok(())),
                ReaderState::Failed(ref f) => return Poll::Ready(Err(f.to_io())),
                ReaderState::Header => {
                    ready!(this.poll_fill(cx, 4))?;
                    this.state = match this.take_word() {
                        END => ReaderState::End,
                        FAIL => ReaderState::FailLen,
                        n if n as usize > MAX_CHUNK => {
                            let e = io::Error::new(io::ErrorKind::InvalidData, format!("oversized chunk of {n} bytes"));
                            return Poll::Ready(Err(this.fail(e)));
                        }
                        n => ReaderState::Data(n as usize),
                    };
                }
                ReaderState::Data(left) => {
                    if buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // Straight into the caller's buffer, at most to the chunk's end.
                    let k = left.min(buf.remaining());
                    let mut rb = ReadBuf::new(buf.initialize_unfilled_to(k));
                    if let Err(e) = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut rb)) {
                        return Poll::Ready(Err(this.fail(e)));
                    }
                    let got = rb.filled().len();
                    if got == 0 {
                        return Poll::Ready(Err(this.fail(cut_short())));
                    }
                    buf.advance(got);
                    this.state = if got == left {
                        ReaderState::Header
                    } else {
                        ReaderState::Data(left - got)
                    };
                    return Poll::Ready(Ok(()));
                }
                ReaderState::FailLen => {
                    ready!(this.poll_fill(cx, 4))?;
                    let n = this.take_word() as usize;
                    if n > MAX_FRAME {
                        let e = io::Error::new(io::ErrorKind::InvalidData, "oversized failure frame");
                        return Poll::Ready(Err(this.fail(e)));
                    }
                    this.state = ReaderState::FailBody(n);
                }
                ReaderState::FailBody(n) => {
                    ready!(this.poll_fill(cx, n))?;
                    let e = match decode::<WireError>(&this.acc) {
                        Ok(w) => io::Error::other(Error::Remote(w)),
                        Err(e) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                    };
                    return Poll::Ready(Err(this.fail(e)));
                }
            }
        }
    }
}
