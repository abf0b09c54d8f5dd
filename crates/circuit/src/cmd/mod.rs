//! The commands, one module per group. Each group declares its clap
//! subcommands, each an `Args` struct with `async fn run(self, client)`;
//! [`Cmd`] gathers them, and [`Cmd::run`] connects once for all of them.

pub mod anchor;
pub mod breaker;
pub mod breaker_redis;
pub mod chan;
pub mod config;
pub mod console;
pub mod dns;
pub mod docker;
pub mod keygen;
pub mod observe;
pub mod proc;
pub mod service;
pub mod start;
pub mod subscription;
pub mod top;
pub mod watch;
pub mod watch_spec;

use anyhow::{Context, Result};
use circuit_client::{Client, Path};
use clap::Subcommand;

use crate::dial::DialArgs;

/// Every command of the tool.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a server on this host; prints its URL on stdout, logs to stderr
    Start(start::Args),
    /// Print a new random cluster key (use it with -hmac FILE)
    Keygen(keygen::Args),
    /// Print a one-time login URL for the web console at ADDR (start --http), signed with the -hmac key
    ConsoleLogin(console::Login),
    /// Print a shell completion script for SHELL (bash, zsh, fish, elvish, powershell) on stdout
    Completions(service::Completions),
    /// Write man pages for circuit and each of its commands into DIR; prints each file written
    Manpages(service::Manpages),
    /// The commands that talk to a server.
    #[command(flatten)]
    Client(ClientCmd),
}

/// The commands that dial a server, in the order `--help` lists them.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// ls, peek, scrub, join, stop.
    #[command(flatten)]
    Anchor(anchor::Cmd),
    /// mkchan, send, recv, close.
    #[command(flatten)]
    Chan(chan::Cmd),
    /// mkproc, stdin, stdout, stderr, wait, waitall, signal.
    #[command(flatten)]
    Proc(proc::Cmd),
    /// mkdkr.
    #[command(flatten)]
    Docker(docker::Cmd),
    /// mk@join, mk@leave.
    #[command(flatten)]
    Subscription(subscription::Cmd),
    /// mkdns, set, unset.
    #[command(flatten)]
    Dns(dns::Cmd),
    /// mkwatch, incr, decr, numprocs, watch.
    #[command(flatten)]
    Watch(watch::Cmd),
    /// mkbreaker, breaker exec|reset|open|close|show|scrub (over the cluster or Redis).
    #[command(flatten)]
    Breaker(breaker::Cmd),
    /// reloadconfig.
    #[command(flatten)]
    Config(config::Cmd),
    /// A live view of every server and process of the cluster, refreshed every second; q quits
    Top(top::Args),
    /// events, stats.
    #[command(flatten)]
    Observe(observe::Cmd),
}

impl Cmd {
    /// True for `start`: the server keeps its own signal handling.
    pub fn is_server(&self) -> bool {
        matches!(self, Cmd::Start(_))
    }

    /// Runs the command; a client command first connects as `dial` says.
    pub fn run(self, dial: DialArgs) -> Result<()> {
        match self {
            Cmd::Start(args) => args.run(&dial),
            Cmd::Keygen(args) => args.run(),
            Cmd::ConsoleLogin(args) => args.run(&dial.hmac),
            Cmd::Completions(args) => args.run(),
            Cmd::Manpages(args) => args.run(),
            Cmd::Client(cmd) => {
                if let ClientCmd::Proc(c) = &cmd {
                    c.check();
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    // The breaker commands dial on their own: over Redis not at
                    // all, and for `breaker exec` an unreachable server is an
                    // answer (its failure policy), not an error.
                    if let ClientCmd::Breaker(c) = cmd {
                        return c.run(&dial).await;
                    }
                    let client = dial.connect().await?;
                    cmd.run(&client).await
                })
            }
        }
    }
}

impl ClientCmd {
    /// Runs the command on a connected client.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            ClientCmd::Anchor(c) => c.run(client).await,
            ClientCmd::Chan(c) => c.run(client).await,
            ClientCmd::Proc(c) => c.run(client).await,
            ClientCmd::Docker(c) => c.run(client).await,
            ClientCmd::Subscription(c) => c.run(client).await,
            ClientCmd::Dns(c) => c.run(client).await,
            ClientCmd::Watch(c) => c.run(client).await,
            // Dialed by the breaker commands themselves (see `Cmd::run`).
            ClientCmd::Breaker(_) => unreachable!("breaker commands are run by Cmd::run"),
            ClientCmd::Config(c) => c.run(client).await,
            ClientCmd::Top(c) => c.run(client).await,
            ClientCmd::Observe(c) => c.run(client).await,
        }
    }
}

/// Prints a status as JSON the way the original did: tab-indented.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let v = serde_json::to_value(v).context("a status that does not fit JSON")?;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&v, &mut ser)?;
    println!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// The one-line error of a command on an element: the server's messages
/// name the path already, others get it added (`mkproc /X…/a: …`).
pub fn failed(verb: &str, path: &Path, e: circuit_client::Error) -> anyhow::Error {
    match &e {
        circuit_client::Error::Remote(w) if w.path.as_ref() == Some(path) => {
            anyhow::anyhow!("{verb}: {}", w.message)
        }
        _ => anyhow::anyhow!("{verb} {path}: {e}"),
    }
}
