use circuit_proto::{Entry, Path, Reply, Request};
use serde::Deserialize;

use crate::client::Client;
use crate::error::Error;

/// A place in the namespace: `/`, a server `/X…`, or an anchor below one.
#[derive(Clone)]
pub struct Anchor {
    client: Client,
    path: Path,
}

fn unexpected(r: Reply) -> Error {
    Error::Protocol(format!("{r:?}"))
}

impl Anchor {
    pub(crate) fn new(client: Client, path: Path) -> Anchor {
        Anchor { client, path }
    }

    /// The anchor's full path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection this anchor is reached through.
    pub(crate) fn client(&self) -> &Client {
        &self.client
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
        match self
            .client
            .call(&Request::List {
                path: self.path.clone(),
                recursive,
            })
            .await?
        {
            Reply::List(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }

    /// The element's status as JSON text (`null` for an empty anchor).
    pub async fn peek_json(&self) -> Result<String, Error> {
        match self
            .client
            .call(&Request::Peek {
                path: self.path.clone(),
            })
            .await?
        {
            Reply::Json(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }

    /// The element's status as a JSON value.
    pub async fn peek(&self) -> Result<serde_json::Value, Error> {
        let text = self.peek_json().await?;
        serde_json::from_str(&text).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Removes the element held here.
    pub async fn scrub(&self) -> Result<(), Error> {
        self.client
            .call(&Request::Scrub {
                path: self.path.clone(),
            })
            .await?;
        Ok(())
    }

    /// This anchor as a server handle; valid for `/X…` paths.
    pub fn server(&self) -> Server {
        Server(self.clone())
    }
}

/// A server's root anchor, `/X…`.
#[derive(Clone)]
pub struct Server(pub(crate) Anchor);

/// What `peek` says of a server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStat {
    /// The server's circuit URL.
    pub addr: String,
    /// When it started, RFC 3339.
    pub joined: String,
    /// Its version.
    pub version: String,
    /// Elements it holds, itself included.
    pub elements: u64,
    /// Members of the cluster it sees.
    pub members: u64,
}

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
        let text = self.0.peek_json().await?;
        serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("server status: {e}")))
    }

    /// Merges this server's cluster with the cluster of the server at `url`
    /// (a no-op when they are already one).
    pub async fn join(&self, url: &str) -> Result<(), Error> {
        let url: circuit_proto::CircuitUrl = url.parse()?;
        let req = Request::Join {
            path: self.0.path.clone(),
            url: url.to_string(),
        };
        self.0.client.call(&req).await?;
        Ok(())
    }

    /// Makes the server read its config file (`circuit start --config FILE`)
    /// again and apply the difference; answers what it did, as JSON:
    /// `{"Created": [...], "Changed": [...], "Removed": [...], "Unchanged": [...], "Failed": [...]}`.
    pub async fn reload_config(&self) -> Result<String, Error> {
        let req = Request::ReloadConfig {
            path: self.0.path.clone(),
        };
        match self.0.client.call(&req).await? {
            Reply::Json(text) => Ok(text),
            r => Err(Error::Protocol(format!("{r:?}"))),
        }
    }

    /// Stops the server cleanly.
    pub async fn stop(&self) -> Result<(), Error> {
        self.0
            .client
            .call(&Request::Stop {
                path: self.0.path.clone(),
            })
            .await?;
        Ok(())
    }
}
