//! The subscription element's operations (`@join`, `@leave`): make and
//! recv. `mod.rs` knows events; this file knows streams and the wire.
//!
//! `recv` takes the same shape as a channel's: the server answers `Done`
//! once an event is available, then sends it as one chunked message
//! ([`circuit_proto::chunk`]) holding the server's path and a newline,
//! `/X…\n`. A client that goes away while waiting takes nothing; an event
//! that could not be written goes back to the head of the queue.

use std::sync::Arc;

use circuit_proto::chunk;
use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{ErrorKind, Path, Reply, Response, SubscriptionSource, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::info;

use super::{SubError, Subscription};
use crate::elements::{Ctx, Element};

fn wire(path: &Path, e: SubError) -> WireError {
    let kind = match e {
        SubError::Scrubbed => ErrorKind::Aborted,
        SubError::Closed => ErrorKind::Closed,
    };
    WireError::at(kind, path, format!("{path}: {e}"))
}

/// `mk@join` / `mk@leave`: places a new subscription at `path`. It sees
/// the membership events from now on.
pub(crate) fn make(ctx: &Ctx, path: &Path, source: SubscriptionSource) -> Response {
    ctx.make(path, "subscription", || {
        let sub = Subscription::start(path.clone(), source, ctx.members.subscribe());
        (Some(Element::Subscription(sub)), ())
    })
    .inspect_err(|e| info!(op = source.verb(), %path, error = %e, "refused"))?;
    info!(op = source.verb(), %path, "made");
    Ok(Reply::Done)
}

/// Waits for the client to go away (end of stream or reset). Our clients
/// send nothing while they wait, so any byte ends the wait too.
async fn gone(stream: &mut (impl AsyncRead + Unpin)) {
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte).await;
}

/// `recv` on a subscription: one event onto the stream.
pub(crate) async fn recv(path: &Path, sub: Arc<Subscription>, stream: &mut StreamHandle) -> Option<Response> {
    let kind = sub.kind();
    let taken = tokio::select! {
        r = sub.recv() => r,
        _ = gone(stream) => {
            info!(op = "recv", %path, kind, "receiver went away while waiting");
            return None;
        }
    };
    let taken = match taken {
        Ok(t) => t,
        Err(e) => {
            info!(op = "recv", %path, kind, error = %e, "refused");
            return Some(Err(wire(path, e)));
        }
    };
    let server = taken.server();
    let mut msg = Vec::new();
    chunk::encode_message(format!("{}\n", Path::server(server)).as_bytes(), &mut msg);
    let written = async {
        conn::respond(stream, &Ok(Reply::Done)).await.ok()?;
        stream.write_all(&msg).await.ok()?;
        stream.flush().await.ok()
    };
    if written.await.is_none() {
        // Dropping `taken` gives the event back.
        info!(op = "recv", %path, kind, %server, "receiver went away; event kept");
        return None;
    }
    taken.delivered();
    info!(op = "recv", %path, kind, %server, "received");
    None
}
