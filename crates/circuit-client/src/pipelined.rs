//! Pipelined channel handles: many messages on one stream each way, so a
//! sender or receiver in a loop does not pay a round trip per message.
//!
//! ```no_run
//! # async fn demo(anchor: circuit_client::Anchor) -> Result<(), circuit_client::Error> {
//! let chan = anchor.make_chan(1000).await?;
//! let mut tx = chan.sender().await?;
//! let mut rx = chan.receiver().await?;
//! for i in 0..1000u32 {
//!     tx.send(&i.to_le_bytes()).await?;
//! }
//! let placed = tx.flush().await?; // every message has a place in the channel
//! assert_eq!(placed, 1000);
//! for i in 0..1000u32 {
//!     assert_eq!(rx.recv().await?, i.to_le_bytes());
//! }
//! # Ok(()) }
//! ```
//!
//! The channel's semantics are those of [`Chan::send`] and [`Chan::recv`]:
//! the server takes the messages of a handle one after the other, exactly
//! as single sends and receives. What differs is when the calls return; see
//! [`ChanSender`] and [`ChanReceiver`].

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use circuit_proto::chunk::{self, Chunk, MAX_CHUNK};
use circuit_proto::conn::StreamHandle;
use circuit_proto::frame;
use circuit_proto::msg::{PLACED_EVERY, Placed};
use circuit_proto::{ChanOp, ErrorKind, Path, Reply, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::chan::Chan;
use crate::error::Error;

/// Messages a [`ChanSender`] may have written but not yet placed, unless
/// told otherwise.
pub const SEND_WINDOW: u64 = 64;

/// Messages a [`ChanReceiver`] lets the server take ahead of `recv`, unless
/// told otherwise.
pub const RECV_CREDIT: u32 = 16;

impl Chan {
    /// A pipelined sender on this channel, with a window of [`SEND_WINDOW`]
    /// messages. See [`ChanSender`] for what its calls mean.
    pub async fn sender(&self) -> Result<ChanSender, Error> {
        self.sender_with_window(SEND_WINDOW).await
    }

    /// A pipelined sender that lets up to `window` messages (at least 1)
    /// be written but not yet placed.
    pub async fn sender_with_window(&self, window: u64) -> Result<ChanSender, Error> {
        match self.anchor().open_with(ChanOp::SendMany).await? {
            (Reply::Done, stream) => Ok(ChanSender {
                path: self.path().clone(),
                stream,
                window: Window::new(window),
                heard: Vec::new(),
                out: Vec::new(),
                sent: 0,
                data_end: 0,
                out_ends: false,
                open: false,
                failure: None,
            }),
            (r, _) => Err(Error::unexpected(&r)),
        }
    }

    /// A pipelined receiver on this channel, with a credit of
    /// [`RECV_CREDIT`] messages. See [`ChanReceiver`].
    pub async fn receiver(&self) -> Result<ChanReceiver, Error> {
        self.receiver_with_credit(RECV_CREDIT).await
    }

    /// A pipelined receiver that lets the server take up to `credit`
    /// messages (at least 1) ahead of [`ChanReceiver::recv`].
    pub async fn receiver_with_credit(&self, credit: u32) -> Result<ChanReceiver, Error> {
        match self.anchor().open_with(ChanOp::RecvMany).await? {
            (Reply::Done, stream) => {
                let (credit, first) = Credit::new(credit);
                let mut r = ChanReceiver {
                    stream,
                    credit,
                    out: first.to_le_bytes().to_vec(),
                    sent: 0,
                    heard: Vec::new(),
                    at: 0,
                    msg: Vec::new(),
                    failure: None,
                };
                r.drain().await?;
                Ok(r)
            }
            (r, _) => Err(Error::unexpected(&r)),
        }
    }
}

/// How a handle failed, kept to report again on every later call.
#[derive(Debug, Clone)]
enum Failure {
    Remote(WireError),
    Io(io::ErrorKind, String),
}

impl Failure {
    fn io(e: &io::Error) -> Failure {
        Failure::Io(e.kind(), e.to_string())
    }

    fn lost(what: &str) -> Failure {
        Failure::Io(io::ErrorKind::UnexpectedEof, what.to_string())
    }

    fn protocol(e: impl std::fmt::Display) -> Failure {
        Failure::Io(io::ErrorKind::InvalidData, format!("bad answer from the server: {e}"))
    }

    fn error(&self) -> Error {
        match self {
            Failure::Remote(w) => Error::Remote(w.clone()),
            Failure::Io(kind, msg) => Error::Io(io::Error::new(*kind, msg.clone())),
        }
    }
}

/// A sender's count of messages written and placed: the policy of
/// [`ChanSender`], without I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    limit: u64,
    /// Written whole, not yet reported placed.
    in_flight: u64,
    /// Reported placed, in all.
    placed: u64,
    /// A sync word follows the last message written.
    synced: bool,
}

impl Window {
    fn new(limit: u64) -> Window {
        Window {
            limit: limit.max(1),
            in_flight: 0,
            placed: 0,
            synced: true,
        }
    }

    /// Whether to ask the server to report before waiting: the server
    /// reports on its own only every [`PLACED_EVERY`] messages, so ask
    /// when waiting for all of them (`all`), or when the window is smaller.
    fn needs_sync(&self, all: bool) -> bool {
        self.in_flight > 0 && !self.synced && (all || self.limit < PLACED_EVERY)
    }

    /// A sync word was written.
    fn synced(&mut self) {
        self.synced = true;
    }

    /// Room to write another message.
    fn has_room(&self) -> bool {
        self.in_flight < self.limit
    }

    /// A message was written whole.
    fn written(&mut self) {
        self.in_flight += 1;
        self.synced = false;
    }

    /// The server reports `n` more messages placed.
    fn placed(&mut self, n: u64) -> Result<(), String> {
        if n > self.in_flight {
            return Err(format!("{n} messages placed, but only {} were sent", self.in_flight));
        }
        self.in_flight -= n;
        self.placed += n;
        Ok(())
    }
}

/// A receiver's credit: the policy of [`ChanReceiver`], without I/O. The
/// server's credit plus the messages on their way or read but not handed
/// out is always `window - owed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Credit {
    window: u32,
    /// Messages handed out since credit was last granted for them.
    owed: u32,
}

impl Credit {
    /// The policy and the first grant.
    fn new(window: u32) -> (Credit, u32) {
        let window = window.max(1);
        (Credit { window, owed: 0 }, window)
    }

    /// A message was handed out (or failed, having used its credit).
    fn consumed(&mut self) {
        self.owed += 1;
    }

    /// Credit to grant now: once half the window is owed, so that grants
    /// go out in batches while the server never runs dry.
    fn due(&mut self) -> Option<u32> {
        (self.owed >= self.window.div_ceil(2)).then(|| std::mem::take(&mut self.owed))
    }
}

/// The error of [`ChanSender::flush`]: the first failure, with how many
/// messages the handle had placed before it.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({placed} messages of this sender placed)")]
pub struct FlushError {
    /// Messages of the handle placed in the channel, in all.
    pub placed: u64,
    /// Why the next one was not.
    pub error: Error,
}

impl From<FlushError> for Error {
    fn from(e: FlushError) -> Error {
        e.error
    }
}

/// A pipelined sender from [`Chan::sender`]: one stream carrying many
/// messages, up to a window of them written but not yet placed.
///
/// - [`ChanSender::send`] returns once the message is written to the stream
///   and fewer than the window's worth of messages (default
///   [`SEND_WINDOW`]) are written but not yet reported placed. It does not
///   mean the message is placed. A message is placed (counted in `NumSend`)
///   once it has a place in the channel, buffer room or a receiver, as for
///   [`Chan::send`]; messages are placed in the order they were sent. The
///   server reports placed messages in batches, every
///   [`circuit_proto::msg::PLACED_EVERY`] messages and when `flush` (or,
///   with a smaller window, `send`) asks it to.
/// - [`ChanSender::flush`] waits until every message sent so far is placed,
///   and returns how many the handle placed in all, or the first failure
///   (e.g. "channel closed" after a close, "channel aborted" after a scrub)
///   with that count: the messages after the failed one are not placed, and
///   every later call fails the same way. As with [`Chan::send`], a message
///   already waiting for room when the channel is closed is still placed.
/// - Dropping the handle abandons only a message whose `send` was cut short
///   (its future dropped mid-way); every message whose `send` returned is
///   still placed by the server, in order, as it gets a place, but nobody
///   hears of it (or of a failure) any more: `flush` before dropping to know.
/// - `send` is cancel-safe: dropped mid-way, it abandons that message only
///   (the server drops it, and a receiver already streaming it, if longer
///   than 32 KiB, gets an error); the handle goes on.
///
/// [`Chan::send`], by contrast, returns only once its message is placed.
pub struct ChanSender {
    path: Path,
    stream: StreamHandle,
    window: Window,
    /// Bytes from the server not yet parsed.
    heard: Vec<u8>,
    /// The piece of a message being written; `out[sent..]` is left.
    out: Vec<u8>,
    sent: usize,
    /// Where the data chunk in `out` ends (past it, the end word only).
    data_end: usize,
    /// `out` ends the message.
    out_ends: bool,
    /// A message is started and not yet ended.
    open: bool,
    failure: Option<Failure>,
}

impl ChanSender {
    /// The channel's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages of this handle placed in the channel so far (as reported).
    pub fn placed(&self) -> u64 {
        self.window.placed
    }

    /// Messages written but not yet reported placed.
    pub fn in_flight(&self) -> u64 {
        self.window.in_flight
    }

    /// Writes one message to the stream, then waits until the window has
    /// room for the next one. Fails with the handle's first failure.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        self.settle().await?;
        self.wait(false, |w| w.has_room()).await?;
        self.open = true;
        let mut pieces = msg.chunks(MAX_CHUNK).peekable();
        loop {
            self.out.clear();
            self.sent = 0;
            if let Some(piece) = pieces.next() {
                self.out.extend_from_slice(&chunk::header(piece.len()));
                self.out.extend_from_slice(piece);
            }
            self.data_end = self.out.len();
            self.out_ends = pieces.peek().is_none();
            if self.out_ends {
                self.out.extend_from_slice(&chunk::END.to_le_bytes());
            }
            self.drain().await?;
            if self.out_ends {
                break;
            }
        }
        self.open = false;
        self.window.written();
        self.wait(false, |w| w.has_room()).await
    }

    /// Waits until every message sent so far is placed; returns how many
    /// this handle placed in all, or the first failure with that count.
    pub async fn flush(&mut self) -> Result<u64, FlushError> {
        let done = match self.settle().await {
            Ok(()) => self.wait(true, |w| w.in_flight == 0).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => Ok(self.window.placed),
            Err(error) => Err(FlushError {
                placed: self.window.placed,
                error,
            }),
        }
    }

    fn fail(&mut self, f: Failure) -> Error {
        let e = f.error();
        self.failure.get_or_insert(f);
        e
    }

    /// Finishes what a cancelled `send` left: the rest of a message whose
    /// end word had started, or else the rest of the chunk and a failure
    /// chunk that abandons the message.
    async fn settle(&mut self) -> Result<(), Error> {
        if let Some(f) = &self.failure {
            return Err(f.error());
        }
        if self.sent < self.out.len() {
            if self.out_ends && self.sent >= self.data_end {
                self.drain().await?;
                self.open = false;
                self.window.written();
                return Ok(());
            }
            self.out.truncate(self.data_end);
            self.out_ends = false;
            self.drain().await?;
        }
        if self.open {
            self.open = false;
            self.out.clear();
            self.sent = 0;
            let gave_up = WireError::new(ErrorKind::Invalid, "the sender gave up on the message");
            chunk::encode_fail(&gave_up, &mut self.out).map_err(|e| self.fail(Failure::protocol(e)))?;
            self.data_end = self.out.len();
            self.out_ends = false;
            self.drain().await?;
        }
        Ok(())
    }

    /// Reads and applies what the server said, until a read would wait.
    /// Ready with an error once the server reported a failure or the stream
    /// ended.
    fn poll_hear(&mut self, cx: &mut Context<'_>) -> Result<(), Failure> {
        loop {
            let mut at = 0;
            while let Some((body, used)) = frame::split(&self.heard[at..]).map_err(Failure::protocol)? {
                at += used;
                match frame::decode::<Placed>(body).map_err(Failure::protocol)? {
                    Ok(n) => self.window.placed(n).map_err(Failure::protocol)?,
                    Err(w) => return Err(Failure::Remote(w)),
                }
            }
            self.heard.drain(..at);
            let mut tmp = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(Failure::io(&e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Err(Failure::lost(
                        "the connection was lost before the server placed every message",
                    ));
                }
                Poll::Ready(Ok(())) => self.heard.extend_from_slice(rb.filled()),
            }
        }
    }

    /// Waits until `done` holds of the window, first asking the server to
    /// report if it might not otherwise (`all`: waiting for every message).
    async fn wait(&mut self, all: bool, done: impl Fn(&Window) -> bool) -> Result<(), Error> {
        if !done(&self.window) && self.window.needs_sync(all) {
            // Between two messages: `out` is all written. `settle` finishes
            // the word if this is cancelled.
            self.out.clear();
            self.out.extend_from_slice(&chunk::SYNC.to_le_bytes());
            self.sent = 0;
            self.data_end = self.out.len();
            self.out_ends = false;
            self.window.synced();
            self.drain().await?;
        }
        poll_fn(|cx| {
            if let Some(f) = &self.failure {
                return Poll::Ready(Err(f.error()));
            }
            if done(&self.window) {
                return Poll::Ready(Ok(()));
            }
            if let Err(f) = self.poll_hear(cx) {
                return Poll::Ready(Err(self.fail(f)));
            }
            if done(&self.window) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Writes out `out[sent..]`, hearing the server meanwhile: a failure it
    /// reports ends the write, even one stalled on flow control.
    async fn drain(&mut self) -> Result<(), Error> {
        poll_fn(|cx| {
            while self.sent < self.out.len() {
                if let Err(f) = self.poll_hear(cx) {
                    return Poll::Ready(Err(self.fail(f)));
                }
                match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(self.fail(Failure::io(&io::ErrorKind::WriteZero.into()))));
                    }
                    Poll::Ready(Ok(n)) => self.sent += n,
                    Poll::Ready(Err(e)) => {
                        // The server may have said why it stopped reading.
                        let f = self.poll_hear(cx).err().unwrap_or_else(|| Failure::io(&e));
                        return Poll::Ready(Err(self.fail(f)));
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
}

/// A pipelined receiver from [`Chan::receiver`]: one stream delivering
/// messages in order.
///
/// The server takes up to the handle's credit of messages (default
/// [`RECV_CREDIT`]) from the channel ahead of [`ChanReceiver::recv`]: it
/// takes a message only while it holds credit, writes it to the stream and
/// counts it (`NumRecv`) then. The handle grants credit again as `recv`
/// hands messages out. Dropping the handle loses the messages already
/// written to the stream and not yet returned by `recv` (at most the
/// credit); a message the server had taken but not yet written goes back to
/// the head of the channel. With a credit of 1 the server takes a message
/// only once the previous one was returned by `recv`, so dropping the
/// handle between two calls loses nothing. `recv` is cancel-safe.
pub struct ChanReceiver {
    stream: StreamHandle,
    credit: Credit,
    /// Credit words being written; `out[sent..]` is left.
    out: Vec<u8>,
    sent: usize,
    /// Bytes from the server; `heard[at..]` not yet parsed.
    heard: Vec<u8>,
    at: usize,
    /// The message being put together.
    msg: Vec<u8>,
    failure: Option<Failure>,
}

impl ChanReceiver {
    /// The next message, waiting for one if the channel is empty. Fails
    /// once the channel is closed and drained, or aborted, and from then
    /// on; a message cut short by its sender fails only that call.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Error> {
        if let Some(f) = &self.failure {
            return Err(f.error());
        }
        if let Some(n) = self.credit.due() {
            self.out.extend_from_slice(&n.to_le_bytes());
        }
        self.drain().await?;
        loop {
            let split = chunk::split(&self.heard[self.at..]);
            match split {
                Ok(Some((c, used))) => {
                    self.at += used;
                    match c {
                        Chunk::Data(d) => self.msg.extend_from_slice(&d),
                        Chunk::End => {
                            self.credit.consumed();
                            return Ok(std::mem::take(&mut self.msg));
                        }
                        Chunk::Fail(w) => {
                            self.msg.clear();
                            if matches!(w.kind, ErrorKind::Closed | ErrorKind::Aborted) {
                                self.failure = Some(Failure::Remote(w.clone()));
                            } else {
                                self.credit.consumed();
                            }
                            return Err(Error::Remote(w));
                        }
                    }
                }
                Ok(None) => {
                    if self.at == self.heard.len() {
                        self.heard.clear();
                        self.at = 0;
                    } else if self.at > 64 * 1024 {
                        self.heard.drain(..self.at);
                        self.at = 0;
                    }
                    self.heard.reserve(64 * 1024);
                    match self.stream.read_buf(&mut self.heard).await {
                        Ok(0) => {
                            let f = Failure::lost("the connection was lost while receiving");
                            return Err(self.failure.insert(f).error());
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.failure.insert(Failure::io(&e)).error()),
                    }
                }
                Err(e) => return Err(self.failure.insert(Failure::protocol(e)).error()),
            }
        }
    }

    /// Writes out pending credit.
    async fn drain(&mut self) -> Result<(), Error> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]).await {
                Ok(0) => {
                    return Err(self
                        .failure
                        .insert(Failure::io(&io::ErrorKind::WriteZero.into()))
                        .error());
                }
                Ok(n) => self.sent += n,
                Err(e) => return Err(self.failure.insert(Failure::io(&e)).error()),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_messages_in_flight() {
        let mut w = Window::new(3);
        for _ in 0..3 {
            assert!(w.has_room());
            w.written();
        }
        assert!(!w.has_room());
        w.placed(2).unwrap();
        assert_eq!((w.in_flight, w.placed), (1, 2));
        assert!(w.has_room());
        assert!(w.placed(2).is_err(), "more placed than sent is a protocol error");
        assert_eq!((w.in_flight, w.placed), (1, 2), "and changes nothing");
        w.placed(1).unwrap();
        assert_eq!((w.in_flight, w.placed), (0, 3));
        assert_eq!(Window::new(0).limit, 1, "a window of 0 would never send");
    }

    #[test]
    fn a_sync_is_asked_for_only_when_the_server_owes_no_report() {
        let mut w = Window::new(64);
        assert!(!w.needs_sync(true), "nothing in flight");
        w.written();
        assert!(w.needs_sync(true), "a flush must ask");
        assert!(!w.needs_sync(false), "a full window of 64 gets reports every 16");
        w.synced();
        assert!(!w.needs_sync(true), "asked once is enough");
        w.written();
        assert!(w.needs_sync(true), "until the next message");
        let mut small = Window::new(PLACED_EVERY - 1);
        small.written();
        assert!(small.needs_sync(false), "a small window must ask too");
    }

    #[test]
    fn credit_is_granted_in_batches_and_never_runs_dry() {
        let (mut c, first) = Credit::new(16);
        assert_eq!(first, 16);
        // The server's credit plus messages not yet handed out.
        let mut outstanding = first;
        for round in 0..100 {
            assert!(outstanding > 0, "round {round}: the server could stall");
            assert!(outstanding + c.owed == 16, "round {round}: never more than the window");
            outstanding -= 1;
            c.consumed();
            if let Some(n) = c.due() {
                assert_eq!(n, 8, "half the window at a time");
                outstanding += n;
            }
        }
        let (mut one, first) = Credit::new(0);
        assert_eq!(first, 1, "at least one");
        assert_eq!(one.due(), None);
        one.consumed();
        assert_eq!(one.due(), Some(1), "a credit of 1 is granted back at once");
        assert_eq!(one.due(), None);
    }
}
