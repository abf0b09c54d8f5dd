//! Watch elements: keep N copies of a command running on a server, respawn
//! them when they exit, scale them, stop them gracefully.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::{WatchAction, WatchSpec};
//!
//! let mut spec = WatchSpec::new("/bin/sleep", ["3600"]);
//! spec.num_processes = 3;
//! let web = client.walk("/X88550014d4c82e4d/web")?.make_watch(spec).await?;
//! web.incr(2).await?;
//! web.control(WatchAction::Reload).await?;
//! for p in web.peek().await?.processes {
//!     println!("{} {} {}", p.wid, p.pid, p.rss_bytes);
//! }
//! web.scrub().await?;
//! # Ok(()) }
//! ```

use circuit_proto::{Path, ProcOp, Reply, ScaleOp, WatchAction, WatchOp, WatchSpec, WatchStat};

use crate::anchor::Anchor;
use crate::error::Error;

impl Anchor {
    /// Makes a watcher here that keeps `spec.num_processes` copies of the
    /// command running on the anchor's server. Fails if the anchor already
    /// holds an element, if the spec is invalid, or if a first process cannot
    /// be started (then nothing is kept).
    pub async fn make_watch(&self, spec: WatchSpec) -> Result<Watch, Error> {
        self.ask_done(WatchOp::Make(Box::new(spec))).await?;
        Ok(self.watch())
    }

    /// A handle on the watcher held here. Nothing is checked until it is used.
    pub fn watch(&self) -> Watch {
        Watch(self.clone())
    }
}

/// A handle on a watch element. Cheap to clone.
#[derive(Clone)]
pub struct Watch(Anchor);

impl Watch {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds the watcher.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// The watcher's status: spec, state, flapping retries, and each running
    /// process with its slot, pid, start time, restarts, CPU and memory.
    pub async fn peek(&self) -> Result<WatchStat, Error> {
        match self.0.stat().await? {
            Some(circuit_proto::ElementStat::Watch(s)) => Ok(*s),
            other => Err(Error::missing_or_wrong(self.path(), "watch", "watch", other.as_ref())),
        }
    }

    /// Starts, stops, restarts or reloads the watcher (see [`WatchAction`]).
    pub async fn control(&self, action: WatchAction) -> Result<(), Error> {
        self.0.ask_done(WatchOp::Control(action)).await
    }

    /// Starts the missing processes (also after flapping stopped it).
    pub async fn start(&self) -> Result<(), Error> {
        self.control(WatchAction::Start).await
    }

    /// Stops every process gracefully; nothing respawns until [`Watch::start`].
    pub async fn stop(&self) -> Result<(), Error> {
        self.control(WatchAction::Stop).await
    }

    async fn scale(&self, op: ScaleOp) -> Result<u32, Error> {
        match self.0.ask(WatchOp::Scale(op)).await? {
            Reply::Count(n) => u32::try_from(n).map_err(|_| Error::Protocol(format!("a process count of {n}"))),
            r => Err(Error::unexpected(&r)),
        }
    }

    /// The number of processes the watcher keeps running.
    pub async fn numprocs(&self) -> Result<u32, Error> {
        self.scale(ScaleOp::Get).await
    }

    /// Sets the number of processes; returns it.
    pub async fn set_numprocs(&self, n: u32) -> Result<u32, Error> {
        self.scale(ScaleOp::Set(n)).await
    }

    /// Adds `n` processes; returns the new count.
    pub async fn incr(&self, n: u32) -> Result<u32, Error> {
        self.scale(ScaleOp::Incr(n)).await
    }

    /// Removes `n` processes (the highest slots, stopped gracefully); returns
    /// the new count.
    pub async fn decr(&self, n: u32) -> Result<u32, Error> {
        self.scale(ScaleOp::Decr(n)).await
    }

    /// Sends a signal (a name like `HUP` or a number) to every running process.
    pub async fn signal(&self, signal: &str) -> Result<(), Error> {
        self.0.ask_done(ProcOp::Signal(signal.to_string())).await
    }

    /// Removes the watcher; its processes are stopped gracefully (stop
    /// signal, GracefulTimeout, then SIGKILL).
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }
}
