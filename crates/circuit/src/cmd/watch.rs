//! Commands on watch elements: mkwatch, incr, decr, numprocs, watch
//! start|stop|restart|reload. (`signal`, `peek` and `scrub` are the generic
//! commands; the server dispatches on the element's kind.) The spec arrives
//! as JSON on stdin and is parsed here, at the edge; the wire carries a typed
//! `WatchSpec`.

use anyhow::{Context, Result, anyhow};
use circuit_client::{Client, Path, WatchAction};
use clap::Subcommand;

use crate::cmd::failed;
use crate::cmd::watch_spec::parse_spec;
use crate::values;

/// The watcher commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a watcher at PATH keeping NumProcesses copies of a command running; its spec is JSON on stdin, like {"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 3}
    Mkwatch(Mkwatch),
    /// Add N processes (default 1) to the watcher at PATH; prints the new count
    Incr(Incr),
    /// Remove N processes (default 1, the highest slots, stopped gracefully) from the watcher at PATH; prints the new count
    Decr(Decr),
    /// Print the process count of the watcher at PATH, or set it to N
    Numprocs(Numprocs),
    /// Control the watcher at PATH: start, stop (graceful), restart (stop, then start), reload (start new processes, then stop the old ones)
    Watch(Control),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkwatch(a) => a.run(client).await,
            Cmd::Incr(a) => a.run(client).await,
            Cmd::Decr(a) => a.run(client).await,
            Cmd::Numprocs(a) => a.run(client).await,
            Cmd::Watch(a) => a.run(client).await,
        }
    }
}

/// `mkwatch PATH` with the spec on stdin.
#[derive(clap::Args, Debug)]
pub struct Mkwatch {
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Mkwatch {
    /// Reads the spec and makes the watcher.
    pub async fn run(self, client: &Client) -> Result<()> {
        let input = crate::stdin::read_to_string()
            .await
            .context("reading the watch spec from stdin")?;
        let spec = parse_spec(&input)?;
        client
            .anchor(self.path.clone())
            .make_watch(spec)
            .await
            .map_err(|e| failed("mkwatch", &self.path, e))?;
        Ok(())
    }
}

/// What `incr`/`decr`/`numprocs` do.
#[derive(Debug, Clone, Copy)]
pub enum ScaleOp {
    /// `incr PATH [N]`
    Incr(u32),
    /// `decr PATH [N]`
    Decr(u32),
    /// `numprocs PATH N`
    Set(u32),
    /// `numprocs PATH`
    Get,
}

/// `incr PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Incr {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// How many to add
    n: Option<u32>,
}

/// `decr PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Decr {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// How many to remove
    n: Option<u32>,
}

/// `numprocs PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Numprocs {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// The new count
    n: Option<u32>,
}

/// `incr`, `decr`, `numprocs`: prints the count after.
async fn scale(client: &Client, verb: &str, path: Path, op: ScaleOp) -> Result<()> {
    let w = client.anchor(path.clone()).watch();
    let n = match op {
        ScaleOp::Incr(n) => w.incr(n).await,
        ScaleOp::Decr(n) => w.decr(n).await,
        ScaleOp::Set(n) => w.set_numprocs(n).await,
        ScaleOp::Get => w.numprocs().await,
    }
    .map_err(|e| failed(verb, &path, e))?;
    println!("{n}");
    Ok(())
}

impl Incr {
    /// Adds N processes (default 1).
    pub async fn run(self, client: &Client) -> Result<()> {
        scale(client, "incr", self.path, ScaleOp::Incr(self.n.unwrap_or(1))).await
    }
}

impl Decr {
    /// Removes N processes (default 1).
    pub async fn run(self, client: &Client) -> Result<()> {
        scale(client, "decr", self.path, ScaleOp::Decr(self.n.unwrap_or(1))).await
    }
}

impl Numprocs {
    /// Prints the count, or sets it.
    pub async fn run(self, client: &Client) -> Result<()> {
        let op = match self.n {
            Some(n) => ScaleOp::Set(n),
            None => ScaleOp::Get,
        };
        scale(client, "numprocs", self.path, op).await
    }
}

/// `watch start|stop|restart|reload PATH`.
#[derive(clap::Args, Debug)]
pub struct Control {
    /// start, stop, restart or reload
    #[arg(value_name = "ACTION", value_parser = ["start", "stop", "restart", "reload"], ignore_case = true)]
    action: String,
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Control {
    /// Starts, stops, restarts or reloads the watcher.
    pub async fn run(self, client: &Client) -> Result<()> {
        let action: WatchAction = self.action.parse().map_err(|e: String| anyhow!(e))?;
        client
            .anchor(self.path.clone())
            .watch()
            .control(action)
            .await
            .map_err(|e| failed(&format!("watch {}", action.name()), &self.path, e))
    }
}
