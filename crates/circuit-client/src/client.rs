use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use circuit_proto::conn::{self, Control, StreamHandle};
use circuit_proto::secure::client_handshake;
use circuit_proto::{CircuitUrl, Key, Path, Reply, Request};
use tokio::net::TcpStream;

use crate::anchor::{Anchor, Server};
use crate::error::Error;

/// How long `dial` waits for the TCP connection to open.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection to one dial-in server, through which the whole cluster is
/// reached. Cheap to clone: clones share the connection. A connection the
/// server closed while it carried nothing (its idle timeout) is dialed
/// again, once, by the next request.
#[derive(Clone)]
pub struct Client {
    control: Arc<Mutex<Control>>,
    key: Option<Key>,
    url: Arc<CircuitUrl>,
}

impl Client {
    /// Connects to the server at `url` (`circuit://HOST:PORT/PID/X…`),
    /// authenticating with `key` when the cluster uses one.
    pub async fn dial(url: &str, key: Option<&Key>) -> Result<Client, Error> {
        let url: CircuitUrl = url.parse()?;
        Client::dial_url(url, key).await
    }

    /// Like [`Client::dial`], with a parsed URL.
    pub async fn dial_url(url: CircuitUrl, key: Option<&Key>) -> Result<Client, Error> {
        let control = Client::connect(&url, key).await?;
        Ok(Client {
            control: Arc::new(Mutex::new(control)),
            key: key.cloned(),
            url: Arc::new(url),
        })
    }

    /// Opens the secured, multiplexed connection to `url`.
    async fn connect(url: &CircuitUrl, key: Option<&Key>) -> Result<Control, Error> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&url.addr)).await {
            Ok(r) => r.map_err(|err| Error::Connect {
                addr: url.addr.clone(),
                err,
            })?,
            Err(_) => {
                let err = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {} s (host down or cut off?)",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                );
                return Err(Error::Connect {
                    addr: url.addr.clone(),
                    err,
                });
            }
        };
        let io = client_handshake(tcp, key).await.map_err(|err| Error::Handshake {
            addr: url.addr.clone(),
            err,
        })?;
        Ok(conn::client(io))
    }

    /// The connection, dialed again if the server closed it: nothing was
    /// sent on a closed one, so no request is ever sent twice. If the
    /// server cannot be reached, the old one is kept and the request
    /// fails as a lost connection.
    async fn live_control(&self) -> Control {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !control.is_closed() {
            return control;
        }
        match Client::connect(&self.url, self.key.as_ref()).await {
            Ok(fresh) => {
                *self.control.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
                fresh
            }
            Err(_) => control,
        }
    }

    /// Finds a server by multicast discovery on `group` (sent through the
    /// interface with address `iface`), then dials it.
    pub async fn discover(group: SocketAddrV4, iface: Ipv4Addr, key: Option<&Key>) -> Result<Client, Error> {
        let url = crate::discover::discover_url(group, iface, key).await?;
        Client::dial_url(url, key).await
    }

    /// The URL of the dial-in server.
    pub fn url(&self) -> &CircuitUrl {
        &self.url
    }

    /// The anchor at `path`, e.g. `/X88550014d4c82e4d/web/1`. Nothing is
    /// created or checked on the server until an operation is made.
    pub fn walk(&self, path: &str) -> Result<Anchor, Error> {
        Ok(Anchor::new(self.clone(), path.parse()?))
    }

    /// The anchor at a parsed path.
    pub fn anchor(&self, path: Path) -> Anchor {
        Anchor::new(self.clone(), path)
    }

    /// The live servers of the cluster, as their root anchors.
    pub async fn servers(&self) -> Result<Vec<Server>, Error> {
        let entries = self.anchor(Path::root()).list().await?;
        Ok(entries.into_iter().map(|e| Server(self.anchor(e.path))).collect())
    }

    /// Sends one request and returns the reply with the stream, for
    /// requests that go on streaming.
    pub(crate) async fn call_stream(&self, req: &Request) -> Result<(Reply, StreamHandle), Error> {
        let mut control = self.live_control().await;
        // A stream cut while the connection lives means the owner, when it
        // is another server, went away: name it rather than the dial-in.
        let owner = req.path.server_id().filter(|id| *id != self.url.id);
        let (resp, stream) = match conn::call(&mut control, req).await {
            Ok(r) => r,
            Err(e) => {
                let owner = owner.filter(|_| !control.is_closed());
                return Err(Error::from_call(e, &self.url.addr, owner));
            }
        };
        Ok((resp?, stream))
    }

    /// Sends one request and returns its reply.
    pub(crate) async fn call(&self, req: &Request) -> Result<Reply, Error> {
        Ok(self.call_stream(req).await?.0)
    }
}
