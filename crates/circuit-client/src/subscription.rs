//! Membership subscriptions: `@join` and `@leave` elements held by a server.
//!
//! A subscription delivers, in the order its server learned them, the
//! servers that joined (or left) the cluster from the moment it was made
//! on; members already there are not replayed (list `/` for those). Each
//! event goes to exactly one receiver. The server keeps up to 1,024 pending
//! events; beyond that the oldest are dropped, and [`SubscriptionStat`]
//! counts them.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::SubscriptionSource;
//! let anchor = client.walk("/X88550014d4c82e4d/watch/leave")?;
//! let leaves = anchor.make_subscription(SubscriptionSource::Leave).await?;
//! let gone = leaves.recv().await?;
//! println!("{gone} left the cluster");
//! println!("{:?}", leaves.peek().await?);
//! leaves.scrub().await?;
//! # Ok(()) }
//! ```

use circuit_proto::chunk::{self, Chunk};
use circuit_proto::frame::FrameError;
use circuit_proto::{ChanOp, Path, SubscriptionOp, SubscriptionSource, SubscriptionStat};

use crate::anchor::Anchor;
use crate::error::Error;

/// Longest event message accepted: a server path and a newline, with room.
const MAX_EVENT: usize = 1024;

impl Anchor {
    /// Makes a subscription to the `source` membership events and places it
    /// here. It sees the events from now on. Fails if the anchor already
    /// holds an element.
    pub async fn make_subscription(&self, source: SubscriptionSource) -> Result<Subscription, Error> {
        self.ask_done(SubscriptionOp::Make(source)).await?;
        Ok(self.subscription())
    }

    /// A handle on the subscription held here. Nothing is checked until it
    /// is used.
    pub fn subscription(&self) -> Subscription {
        Subscription(self.clone())
    }
}

/// A handle on a subscription element (`@join` or `@leave`). Cheap to clone.
#[derive(Clone)]
pub struct Subscription(Anchor);

impl Subscription {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds the subscription.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// Takes the next event, waiting for one: the path `/X…` of the server
    /// that joined or left. Fails once the subscription is scrubbed (also
    /// while waiting) or closed and drained.
    pub async fn recv(&self) -> Result<Path, Error> {
        let mut stream = self.0.open(ChanOp::Recv).await?;
        let mut msg = Vec::new();
        loop {
            match chunk::read_chunk(&mut stream).await {
                Ok(Chunk::Data(data)) => {
                    msg.extend_from_slice(&data);
                    if msg.len() > MAX_EVENT {
                        return Err(Error::Protocol(format!(
                            "an event of more than {MAX_EVENT} bytes from {}",
                            self.path()
                        )));
                    }
                }
                Ok(Chunk::End) => break,
                Ok(Chunk::Fail(e)) => return Err(Error::Remote(e)),
                Err(FrameError::Eof) => {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection lost in the middle of the event",
                    )));
                }
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
        }
        let text = std::str::from_utf8(&msg).map_err(|_| Error::Protocol("an event that is not UTF-8".into()))?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        let path: Path = line
            .parse()
            .map_err(|e| Error::Protocol(format!("an event that is not a path ({line:?}): {e}")))?;
        if !path.is_server_root() {
            return Err(Error::Protocol(format!("an event that is not a server path: {line:?}")));
        }
        Ok(path)
    }

    /// The subscription's status now: its source, pending and dropped
    /// events, and whether it is closed.
    pub async fn peek(&self) -> Result<SubscriptionStat, Error> {
        match self.0.stat().await? {
            Some(circuit_proto::ElementStat::Subscription(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(
                self.path(),
                "subscription",
                "subscription",
                other.as_ref(),
            )),
        }
    }

    /// Removes the subscription; waiting receivers fail with
    /// "subscription scrubbed".
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }
}
