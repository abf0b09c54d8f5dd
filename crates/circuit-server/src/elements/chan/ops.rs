//! The channel element's operations: make, send, recv, close, and the
//! pipelined sendmany/recvmany (many messages on one stream, see below).
//! `mod.rs` is the channel itself; this file knows streams and the wire.
//!
//! `send`: the server answers `Done` once the message has a place, reads the
//! message as chunks ([`circuit_proto::chunk`]) until the end chunk, then
//! answers a second time: `Done` once the message is whole in the channel,
//! or the error. A stream that stops before the end chunk abandons the
//! message. While it waits for a place, the server watches the stream: a
//! client that goes away withdraws its message.
//!
//! `recv`: the server answers `Done` once a message is available, then sends
//! it as chunks closed by an end chunk (or a failure). A client that goes
//! away while waiting takes nothing from the channel.

use std::sync::Arc;

use circuit_proto::chunk;
use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::frame::FrameError;
use circuit_proto::frame::write_frame;
use circuit_proto::msg::{PLACED_EVERY, Placed};
use circuit_proto::{ChanOp, ErrorKind, Path, Reply, Response, WireError};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use super::{Chan, ChanError, Incoming, Outgoing};
use crate::elements::{Ctx, Element};

fn wire(path: &Path, e: ChanError) -> WireError {
    let kind = match e {
        ChanError::Closed | ChanError::AlreadyClosed => ErrorKind::Closed,
        ChanError::Aborted => ErrorKind::Aborted,
        ChanError::ReceiverGone | ChanError::SenderGone => ErrorKind::Io,
    };
    WireError::at(kind, path, format!("{path}: {e}"))
}

/// Serves `op` on the channel `chan` at `path`.
pub(crate) async fn serve(chan: &Arc<Chan>, path: &Path, op: ChanOp, stream: &mut StreamHandle) -> Option<Response> {
    match op {
        ChanOp::Make { .. } => Some(Err(WireError::at(
            ErrorKind::Exists,
            path,
            format!("anchor {path} already holds a chan"),
        ))),
        ChanOp::Send => send(chan, path, stream).await,
        ChanOp::Recv => recv(chan, path, stream).await,
        ChanOp::Close => Some(close(chan, path)),
        ChanOp::SendMany => send_many(chan, path, stream).await,
        ChanOp::RecvMany => recv_many(chan, path, stream).await,
    }
}

/// `mkchan`: places a new channel of capacity `cap` at `path`.
pub(crate) fn make(ctx: &Ctx, path: &Path, cap: u64) -> Response {
    ctx.make(path, "channel", || (Some(Element::Chan(Arc::new(Chan::new(cap)))), ()))?;
    info!(op = "mkchan", %path, cap, "made");
    Ok(Reply::Done)
}

/// `close`: later sends fail; receivers drain what is left.
fn close(chan: &Chan, path: &Path) -> Response {
    if let Err(e) = chan.close() {
        info!(op = "close", %path, error = %e, "refused");
        return Err(wire(path, e));
    }
    info!(op = "close", %path, "closed");
    Ok(Reply::Done)
}

/// Waits for the client to go away (end of stream or reset). Our clients
/// send nothing while they wait for an answer, so any byte is a protocol
/// error and ends the wait too.
async fn gone(stream: &mut (impl AsyncRead + Unpin)) {
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
}

/// `send`: one message from the stream into the channel.
async fn send(chan: &Arc<Chan>, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    let placed = tokio::select! {
        r = chan.send() => r,
        _ = gone(stream) => {
            info!(op = "send", %path, "sender went away while waiting; nothing sent");
            return None;
        }
    };
    let mut out = match placed {
        Ok(out) => out,
        Err(e) => {
            info!(op = "send", %path, error = %e, "refused");
            return Some(Err(wire(path, e)));
        }
    };
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        info!(op = "send", %path, "sender went away; message dropped");
        return None;
    }
    let mut bytes = 0usize;
    loop {
        match chunk::read_chunk(stream).await {
            Ok(chunk::Chunk::Data(data)) => {
                bytes += data.len();
                let written = out.write(&data).await;
                if let Err(e) = written {
                    warn!(op = "send", %path, bytes, error = %e, "message lost");
                    return Some(Err(wire(path, e)));
                }
            }
            Ok(chunk::Chunk::End) => {
                return Some(match out.finish() {
                    Ok(()) => {
                        info!(op = "send", %path, bytes, "sent");
                        Ok(Reply::Done)
                    }
                    Err(e) => {
                        warn!(op = "send", %path, bytes, error = %e, "message lost");
                        Err(wire(path, e))
                    }
                });
            }
            Ok(chunk::Chunk::Fail(e)) => {
                info!(op = "send", %path, bytes, error = %e, "sender gave up; message dropped");
                return None;
            }
            Err(e) => {
                let why = match e {
                    FrameError::Eof => "connection lost".to_string(),
                    e => e.to_string(),
                };
                info!(op = "send", %path, bytes, error = %why, "sender went away mid-message; message dropped");
                return None;
            }
        }
    }
}

/// `recv`: one message from the channel onto the stream (or, on a
/// subscription, one event: see `net::subscription`).
async fn recv(chan: &Arc<Chan>, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    let taken = tokio::select! {
        r = chan.recv() => r,
        _ = gone(stream) => {
            info!(op = "recv", %path, "receiver went away while waiting");
            return None;
        }
    };
    let mut incoming = match taken {
        Ok(i) => i,
        Err(e) => {
            info!(op = "recv", %path, error = %e, "refused");
            return Some(Err(wire(path, e)));
        }
    };
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        // Nothing handed on yet: dropping `incoming` puts the message back.
        info!(op = "recv", %path, "receiver went away; message put back");
        return None;
    }
    // The stream is read while we write: that is how a yamux stream learns
    // of window updates (a pure writer stalls), and how we learn that the
    // receiver went away.
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut bytes = 0usize;
    loop {
        let next = tokio::select! {
            r = incoming.chunk() => r,
            _ = gone(&mut rd) => {
                warn!(op = "recv", %path, bytes, "receiver went away mid-message; message lost");
                return None;
            }
        };
        match next {
            Ok(Some(data)) => {
                bytes += data.len();
                let sent = tokio::select! {
                    r = chunk::write_data(&mut wr, &data) => r.is_ok(),
                    _ = gone(&mut rd) => false,
                };
                if !sent {
                    warn!(op = "recv", %path, bytes, "receiver went away mid-message; message lost");
                    return None;
                }
            }
            Ok(None) => {
                let ended = tokio::select! {
                    r = chunk::write_end(&mut wr) => r.is_ok(),
                    _ = gone(&mut rd) => false,
                };
                if !ended {
                    warn!(op = "recv", %path, bytes, "receiver went away at the end; message lost");
                    return None;
                }
                incoming.delivered();
                info!(op = "recv", %path, bytes, "received");
                return None;
            }
            Err(e) => {
                warn!(op = "recv", %path, bytes, error = %e, "message cut short");
                let err = wire(path, e);
                tokio::select! {
                    _ = chunk::write_fail(&mut wr, &err) => {}
                    _ = gone(&mut rd) => {}
                }
                return None;
            }
        }
    }
}

/// Reports `*unacked` placed messages on a `sendmany` stream, if any.
async fn ack(io: &mut (impl AsyncWrite + Unpin), unacked: &mut u64) -> Result<(), FrameError> {
    if *unacked > 0 {
        write_frame(io, &Placed::Ok(*unacked)).await?;
        *unacked = 0;
    }
    Ok(())
}

/// How one message of a `sendmany` stream went into its place.
enum Fed {
    /// Every byte is in; the message awaits `finish`.
    Whole,
    /// The client ended it with a failure chunk: it gave up on it.
    Abandoned,
    /// The channel refused the bytes (receiver gone, scrubbed).
    Lost(ChanError),
    /// The stream ended or broke in the middle of the message.
    Cut(String),
}

/// Moves the chunks of one message, starting with `first`, into `out`.
async fn feed(io: &mut (impl AsyncRead + Unpin), out: &mut Outgoing, first: chunk::Chunk) -> Fed {
    let mut next = first;
    loop {
        match next {
            chunk::Chunk::Data(data) => {
                if let Err(e) = out.write(&data).await {
                    return Fed::Lost(e);
                }
            }
            chunk::Chunk::End => return Fed::Whole,
            chunk::Chunk::Fail(_) => return Fed::Abandoned,
        }
        next = match chunk::read_chunk(io).await {
            Ok(c) => c,
            Err(FrameError::Eof) => return Fed::Cut("connection lost".into()),
            Err(e) => return Fed::Cut(e.to_string()),
        };
    }
}

/// `sendmany`: messages from the stream into the channel, in order, each
/// taken as a single `send` takes it; see [`circuit_proto::ChanOp::SendMany`].
/// Whole messages are placed even if the client goes away after writing
/// them (there is no one left to report to, so a failure is only logged).
async fn send_many(chan: &Arc<Chan>, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    let mut io = BufReader::with_capacity(64 * 1024, stream);
    let (mut placed, mut unacked, mut abandoned) = (0u64, 0u64, 0u64);
    // False once the client can no longer hear us.
    let mut reporting = true;
    let failure = loop {
        let first = match chunk::read_word(&mut io).await {
            Ok(chunk::SYNC) => {
                // Everything before it is placed: say so now.
                if reporting {
                    reporting = ack(&mut io, &mut unacked).await.is_ok();
                }
                continue;
            }
            Ok(word) => chunk::read_after(&mut io, word).await,
            Err(e) => Err(e),
        };
        let first = match first {
            Ok(chunk::Chunk::Fail(_)) => {
                // Given up before any of it came: it never asked for a place.
                abandoned += 1;
                continue;
            }
            Ok(c) => c,
            // The client closed (or reset) its side between two messages.
            Err(FrameError::Eof) => break None,
            Err(e) => {
                warn!(op = "sendmany", %path, placed, error = %e, "bad stream; stopped");
                break None;
            }
        };
        let got = chan.send().await;
        let mut out = match got {
            Ok(out) => out,
            Err(e) => {
                info!(op = "sendmany", %path, placed, error = %e, "refused");
                break Some(e);
            }
        };
        match feed(&mut io, &mut out, first).await {
            Fed::Whole => match out.finish() {
                Ok(()) => {
                    placed += 1;
                    unacked += 1;
                    if reporting && unacked >= PLACED_EVERY {
                        reporting = ack(&mut io, &mut unacked).await.is_ok();
                    }
                }
                Err(e) => {
                    warn!(op = "sendmany", %path, placed, error = %e, "message lost");
                    break Some(e);
                }
            },
            // Dropping `out` takes the message out of the channel.
            Fed::Abandoned => abandoned += 1,
            Fed::Lost(e) => {
                warn!(op = "sendmany", %path, placed, error = %e, "message lost");
                break Some(e);
            }
            Fed::Cut(why) => {
                info!(op = "sendmany", %path, placed, error = %why, "sender went away mid-message; message dropped");
                break None;
            }
        }
    };
    if reporting
        && ack(&mut io, &mut unacked).await.is_ok()
        && let Some(e) = failure
    {
        let _ = write_frame(&mut io, &Placed::Err(wire(path, e))).await;
    }
    if failure.is_none() {
        info!(op = "sendmany", %path, placed, abandoned, "sent");
    }
    None
}

/// Credit grants from a `recvmany` client: 4-byte little-endian words.
/// Cancel-safe: a word read in part is kept for the next call.
#[derive(Default)]
struct Credits {
    word: [u8; 4],
    have: usize,
}

impl Credits {
    /// The next grant; `None` once the client closed or reset its side.
    async fn next(&mut self, io: &mut (impl AsyncRead + Unpin)) -> Option<u32> {
        while self.have < 4 {
            match io.read(&mut self.word[self.have..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.have += n,
            }
        }
        self.have = 0;
        Some(u32::from_le_bytes(self.word))
    }
}

/// How handing messages to a `recvmany` client went.
enum Handed {
    /// Written whole: counted as received.
    Whole,
    /// Cut short by its sender; the client was told and the stream goes on.
    CutShort,
    /// The stream broke; the client is gone.
    Gone,
}

/// Most bytes of messages gathered into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// Writes messages read ahead whole in one write, then counts them as
/// received. If the write fails they all go back to the head of the
/// channel, in order: none reached the client whole.
async fn hand_on_whole(io: &mut StreamHandle, batch: &mut Vec<Incoming>, buf: &mut Vec<u8>) -> Handed {
    buf.clear();
    for m in batch.iter() {
        chunk::encode_message(m.whole().expect("read ahead whole"), buf);
    }
    if io.write_all(buf).await.is_err() || io.flush().await.is_err() {
        // Dropped untouched, the last first, each goes back to the head.
        while let Some(m) = batch.pop() {
            drop(m);
        }
        return Handed::Gone;
    }
    for m in batch.drain(..) {
        m.delivered();
    }
    Handed::Whole
}

/// Streams a message longer than the read-ahead; it is lost if the stream
/// breaks in the middle.
async fn hand_on_long(path: &Path, io: &mut StreamHandle, mut incoming: Incoming) -> Handed {
    loop {
        match incoming.chunk().await {
            Ok(Some(data)) => {
                if chunk::write_data(io, &data).await.is_err() {
                    warn!(op = "recvmany", %path, "receiver went away mid-message; message lost");
                    return Handed::Gone;
                }
            }
            Ok(None) => {
                if chunk::write_end(io).await.is_err() {
                    warn!(op = "recvmany", %path, "receiver went away at the end; message lost");
                    return Handed::Gone;
                }
                incoming.delivered();
                return Handed::Whole;
            }
            Err(e) => {
                warn!(op = "recvmany", %path, error = %e, "message cut short");
                return match chunk::write_fail(io, &wire(path, e)).await {
                    Ok(()) => Handed::CutShort,
                    Err(_) => Handed::Gone,
                };
            }
        }
    }
}

/// `recvmany`: messages from the channel onto the stream, in order, taken
/// only while the client's credit lasts; see
/// [`circuit_proto::ChanOp::RecvMany`]. Messages read ahead whole that are
/// ready at once go out together in one write. Messages are taken, then
/// written, then counted; when the client goes away, the ones taken and not
/// yet written go back to the head of the channel, and a longer message
/// being streamed is lost.
async fn recv_many(chan: &Arc<Chan>, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    let mut credits = Credits::default();
    let mut credit = 0u64;
    let (mut handed, mut cut) = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut batch: Vec<Incoming> = Vec::new();
    // The pending take, kept across credit grants so the receiver keeps
    // its turn among the channel's receivers.
    let mut taking = None;
    // A take made while gathering a batch, to deal with after it.
    let mut next = None;
    loop {
        let taken = match next.take() {
            Some(r) => r,
            None => {
                if credit > 0 && taking.is_none() {
                    taking = Some(Box::pin(chan.recv()));
                }
                let r = tokio::select! {
                    biased;
                    grant = credits.next(stream) => match grant {
                        Some(n) => {
                            credit += u64::from(n);
                            continue;
                        }
                        None => {
                            // Dropping `taking` gives back a message it had taken.
                            info!(op = "recvmany", %path, handed, cut, "receiver went away");
                            return None;
                        }
                    },
                    r = async { taking.as_mut().expect("armed").await }, if taking.is_some() => r,
                };
                taking = None;
                r
            }
        };
        let incoming = match taken {
            Ok(incoming) => incoming,
            Err(e) => {
                info!(op = "recvmany", %path, handed, cut, error = %e, "ended");
                let _ = chunk::write_fail(stream, &wire(path, e)).await;
                return None;
            }
        };
        credit -= 1;
        let done = if incoming.whole().is_some() {
            // Gather what else is ready now, within credit.
            let mut bytes = incoming.whole().map_or(0, <[u8]>::len);
            batch.push(incoming);
            while credit > 0 && bytes < BATCH_BYTES {
                let mut more = std::pin::pin!(chan.recv());
                match futures::poll!(more.as_mut()) {
                    Poll::Ready(Ok(m)) if m.whole().is_some() => {
                        credit -= 1;
                        bytes += m.whole().map_or(0, <[u8]>::len);
                        batch.push(m);
                    }
                    Poll::Ready(r) => {
                        next = Some(r);
                        break;
                    }
                    // Dropping `more` withdraws it.
                    Poll::Pending => break,
                }
            }
            let n = batch.len() as u64;
            let done = hand_on_whole(stream, &mut batch, &mut buf).await;
            if matches!(done, Handed::Whole) {
                handed += n - 1;
            }
            done
        } else {
            hand_on_long(path, stream, incoming).await
        };
        match done {
            Handed::Whole => handed += 1,
            Handed::CutShort => cut += 1,
            Handed::Gone => {
                // Dropping `next` gives back a message it had taken.
                info!(op = "recvmany", %path, handed, cut, "receiver went away");
                return None;
            }
        }
    }
}
