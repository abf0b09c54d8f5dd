//! Requests on channel elements: make, send, recv, close. The element
//! (`elements::chan`) knows channels; this glue knows streams, the namespace
//! and the wire.
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
use circuit_proto::{ErrorKind, Path, Reply, Response, WireError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use crate::State;
use crate::elements::Element;
use crate::elements::chan::{Chan, ChanError};

fn wire(path: &Path, e: ChanError) -> WireError {
    let kind = match e {
        ChanError::Closed | ChanError::AlreadyClosed => ErrorKind::Closed,
        ChanError::Aborted => ErrorKind::Aborted,
        ChanError::ReceiverGone | ChanError::SenderGone => ErrorKind::Io,
    };
    WireError::new(kind, format!("{path}: {e}"))
}

/// The chan at `path`, or why there is none.
pub fn get(state: &State, path: &Path) -> Result<Arc<Chan>, WireError> {
    match state.ns.lock().unwrap().get(path.names()) {
        Some(Element::Chan(c)) => Ok(c),
        Some(other) => Err(WireError::new(
            ErrorKind::WrongKind,
            format!("anchor {path} holds a {}, not a chan", other.kind()),
        )),
        None => Err(WireError::new(ErrorKind::NotFound, format!("no chan at {path}"))),
    }
}

/// `mkchan`: places a new channel of capacity `cap` at `path`.
pub fn make(state: &State, path: &Path, cap: u64) -> Response {
    if path.is_server_root() {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("{path} is a server; make the channel below it, like {path}/name"),
        ));
    }
    let mut ns = state.ns.lock().unwrap();
    if let Some(old) = ns.get(path.names()) {
        return Err(WireError::new(
            ErrorKind::Exists,
            format!("anchor {path} already holds a {}", old.kind()),
        ));
    }
    ns.insert(path.names(), Element::Chan(Arc::new(Chan::new(cap))))
        .expect("checked free under the same lock");
    info!(op = "mkchan", %path, cap, "made");
    Ok(Reply::Done)
}

/// `close`: later sends fail; receivers drain what is left.
pub fn close(state: &State, path: &Path) -> Response {
    let chan = get(state, path)?;
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
pub async fn send(state: &State, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    let chan = match get(state, path) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
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

/// `recv`: one message from the channel onto the stream.
pub async fn recv(state: &State, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    let chan = match get(state, path) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
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
