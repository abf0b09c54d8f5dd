//! The console's connection to its own server: in-process, opened on first
//! use (a console nobody visits costs nothing), opened again if it ended.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use circuit_proto::conn::{self, Control, StreamHandle};
use circuit_proto::{ErrorKind, Reply, Request, WireError};

use crate::State;

pub struct Link {
    state: Arc<State>,
    peer: SocketAddr,
    control: Mutex<Option<Control>>,
}

impl Link {
    pub fn new(state: Arc<State>, peer: SocketAddr) -> Link {
        Link {
            state,
            peer,
            control: Mutex::new(None),
        }
    }

    /// This server's id.
    pub fn me(&self) -> circuit_proto::ServerId {
        self.state.ctx.id
    }

    fn control(&self) -> Control {
        let mut c = self.control.lock().unwrap();
        match &*c {
            Some(live) if !live.is_closed() => live.clone(),
            _ => {
                let fresh = crate::net::local_connection(&self.state, self.peer);
                *c = Some(fresh.clone());
                fresh
            }
        }
    }

    /// Sends `req`; the reply, and the stream for what follows it.
    pub async fn open(&self, req: &Request) -> Result<(Reply, StreamHandle), WireError> {
        let mut control = self.control();
        match conn::call(&mut control, req).await {
            Ok((Ok(reply), stream)) => Ok((reply, stream)),
            Ok((Err(e), _)) => Err(e),
            Err(e) => Err(WireError::at(
                ErrorKind::Io,
                &req.path,
                format!("{} {}: {e}", req.verb(), req.path),
            )),
        }
    }

    /// Sends `req` and returns its reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, WireError> {
        self.open(req).await.map(|(reply, _)| reply)
    }
}

/// The one line to show for a failed request: the server's message, with
/// the verb and path in front when it does not name the path itself.
pub fn line(req: &Request, e: &WireError) -> String {
    if e.path.is_some() || e.message.contains(&req.path.to_string()) {
        e.message.clone()
    } else {
        format!("{} {}: {}", req.verb(), req.path, e.message)
    }
}
