use circuit_proto::conn::StreamHandle;
use circuit_proto::{AnchorOp, ElementStat, Entry, Op, Path, Reply, Request, ServerOp, ServerStat};

use crate::client::Client;
use crate::error::Error;

/// A place in the namespace: `/`, a server `/X…`, or an anchor below one.
#[derive(Clone)]
pub struct Anchor {
    client: Client,
    path: Path,
}

impl Anchor {
    pub(crate) fn new(client: Client, path: Path) -> Anchor {
        Anchor { client, path }
    }

    /// The anchor's full path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks `op` of this anchor: the one way every handle talks to the server.
    pub(crate) async fn ask(&self, op: impl Into<Op>) -> Result<Reply, Error> {
        Ok(self.open_with(op).await?.0)
    }

    /// Asks `op` and expects `Done`.
    pub(crate) async fn ask_done(&self, op: impl Into<Op>) -> Result<(), Error> {
        match self.ask(op).await? {
            Reply::Done => Ok(()),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// Asks `op`, expects `Done`, and keeps the stream for what follows.
    pub(crate) async fn open(&self, op: impl Into<Op>) -> Result<StreamHandle, Error> {
        match self.open_with(op).await? {
            (Reply::Done, stream) => Ok(stream),
            (r, _) => Err(Error::unexpected(&r)),
        }
    }

    /// Asks `op` and returns the reply with the stream.
    pub(crate) async fn open_with(&self, op: impl Into<Op>) -> Result<(Reply, StreamHandle), Error> {
        let req = Request::new(self.path.clone(), op);
        self.client.call_stream(&req).await
    }

    /// The child anchor `name`; the name is checked here.
    pub fn walk(&self, name: &str) -> Result<Anchor, Error> {
        Ok(Anchor::new(self.client.clone(), self.path.child(name)?))
    }

    /// The children of this anchor, sorted by name, with their kinds.
    pub async fn list(&self) -> Result<Vec<Entry>, Error> {
        self.list_with(false).await
    }

    /// Every anchor below this one, in pre-order.
    pub async fn list_all(&self) -> Result<Vec<Entry>, Error> {
        self.list_with(true).await
    }

    async fn list_with(&self, recursive: bool) -> Result<Vec<Entry>, Error> {
        match self.ask(AnchorOp::List { recursive }).await? {
            Reply::List(v) => Ok(v),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// The status of the element held here, typed by kind; `None` for an
    /// empty anchor.
    pub async fn stat(&self) -> Result<Option<ElementStat>, Error> {
        match self.ask(AnchorOp::Peek).await? {
            Reply::Stat(s) => Ok(s),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// The element's status as JSON text (`null` for an empty anchor), as
    /// `circuit peek` prints it (compact).
    pub async fn peek_json(&self) -> Result<String, Error> {
        match self.stat().await? {
            None => Ok("null".into()),
            Some(s) => serde_json::to_string(&s).map_err(|e| Error::Protocol(e.to_string())),
        }
    }

    /// The element's status as a JSON value (`Null` for an empty anchor): a
    /// convenience over [`Anchor::stat`].
    pub async fn peek(&self) -> Result<serde_json::Value, Error> {
        Ok(self.stat().await?.map_or(serde_json::Value::Null, |s| s.to_json()))
    }

    /// Removes the element held here.
    pub async fn scrub(&self) -> Result<(), Error> {
        self.ask_done(AnchorOp::Scrub).await
    }

    /// This anchor as a server handle; valid for `/X…` paths.
    pub fn server(&self) -> Server {
        Server(self.clone())
    }
}

/// A server's root anchor, `/X…`.
#[derive(Clone)]
pub struct Server(pub(crate) Anchor);

impl Server {
    /// The server's path, `/X…`.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The server's root anchor.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// The server's status.
    pub async fn peek(&self) -> Result<ServerStat, Error> {
        match self.0.stat().await? {
            Some(ElementStat::Server(s)) => Ok(s),
            other => Err(Error::wrong_kind(self.path(), "server", other.as_ref())),
        }
    }

    /// Merges this server's cluster with the cluster of the server at `url`
    /// (a no-op when they are already one).
    pub async fn join(&self, url: &str) -> Result<(), Error> {
        let url: circuit_proto::CircuitUrl = url.parse()?;
        self.0.ask_done(ServerOp::Join { url: url.to_string() }).await
    }

    /// Makes the server read its config file (`circuit start --config FILE`)
    /// again and apply the difference; answers what it did (as JSON:
    /// `{"Created": [...], "Changed": [...], "Removed": [...], "Unchanged": [...], "Failed": [...]}`).
    pub async fn reload_config(&self) -> Result<circuit_proto::ReloadReport, Error> {
        match self.0.ask(ServerOp::ReloadConfig).await? {
            Reply::Reload(r) => Ok(*r),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// Stops the server cleanly.
    pub async fn stop(&self) -> Result<(), Error> {
        self.0.ask_done(ServerOp::Stop).await
    }
}
