//! The DNS element: a real DNS server, UDP and TCP on one port of this
//! server's host, answering from records set through circuit.
//!
//! - [`zone`]: the records, parsed from zone-file text by hickory-proto and
//!   kept in wire form, looked up by lower-case name.
//! - [`answer`]: the answer to one query (pure, unit-tested without sockets).
//! - [`net`]: the sockets: one receive loop per UDP socket with one buffer,
//!   a TCP listener with at most [`net::MAX_TCP`] connections, each closed
//!   after [`net::TCP_IDLE`] without a query.
//! - `ops.rs`: make, set, unset, replace.
//!
//! The records sit behind one `RwLock`, held only to answer one query or to
//! change the records (never across an await). Every task runs on the
//! element's own tracker and ends on its token: `scrub` cancels it and
//! resolves once both sockets and every connection are closed, so the port
//! is free again when it returns.

pub(crate) mod answer;
pub(crate) mod net;
pub(crate) mod ops;
pub(crate) mod zone;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use circuit_proto::DnsStat;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Scrubbed;
use zone::Zone;

/// The records, shared by the element and its socket tasks.
#[derive(Default)]
pub struct Records(RwLock<Zone>);

impl Records {
    /// For answering: a short read.
    pub fn read(&self) -> RwLockReadGuard<'_, Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Zone> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A DNS server element.
pub struct Dns {
    addr: SocketAddr,
    records: Arc<Records>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Dns {
    /// Binds UDP and TCP at `addr` (port 0: a free port, the same for
    /// both), then serves `zone` there. `stop` ends it (a child of the
    /// server's shutdown token). Must run inside the tokio runtime.
    pub fn start(addr: SocketAddr, zone: Zone, stop: CancellationToken) -> Result<Arc<Dns>, String> {
        let (udp, tcp) = net::bind(addr)?;
        let addr = udp
            .local_addr()
            .map_err(|e| format!("address of the DNS socket: {e}"))?;
        let records = Arc::new(Records(RwLock::new(zone)));
        let tasks = TaskTracker::new();
        net::spawn(&tasks, udp, tcp, records.clone(), stop.clone()).map_err(|e| {
            stop.cancel();
            format!("DNS sockets at {addr}: {e}")
        })?;
        tasks.close();
        Ok(Arc::new(Dns {
            addr,
            records,
            stop,
            tasks,
        }))
    }

    /// Where it listens, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `peek` says.
    pub fn stat(&self) -> DnsStat {
        DnsStat {
            address: self.addr.to_string(),
            records: self.records.read().texts(),
        }
    }

    /// Changes the records; `f` sees them under the write lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut Zone) -> T) -> T {
        f(&mut self.records.write())
    }

    /// Closes both sockets and every TCP connection; the future resolves
    /// once they are closed.
    pub fn scrub(&self) -> Scrubbed {
        self.stop.cancel();
        let tasks = self.tasks.clone();
        Scrubbed::when(async move { tasks.wait().await })
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
