//! `circuit`: the daemon (`circuit start`) and the command-line client.

mod args;
mod cmd;
mod dial;
mod stdin;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::dial::DialArgs;

/// One binary turns a set of hosts into one programmable system.
#[derive(Parser, Debug)]
#[command(name = "circuit", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a server on this host; prints its URL on stdout, logs to stderr
    Start(cmd::start::StartArgs),
    /// Print a new random cluster key (use it with -hmac FILE)
    Keygen,
    /// List the children of PATH (PATH/... lists every descendant)
    Ls {
        #[command(flatten)]
        dial: DialArgs,
        /// Show each anchor's kind
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// List children before their parents
        #[arg(long = "depth")]
        depth: bool,
        /// Anchor path, e.g. / or /X88550014d4c82e4d/...
        path: String,
    },
    /// Print the status of the element at PATH as JSON (null if empty)
    Peek {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path
        path: String,
    },
    /// Remove the element at PATH
    Scrub {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path
        path: String,
    },
    /// Merge the cluster of the server at SERVER-PATH with the cluster of the server at URL
    Join {
        #[command(flatten)]
        dial: DialArgs,
        /// Server path, /X…
        path: String,
        /// Circuit URL of a server of the other cluster
        url: String,
    },
    /// Stop the server at SERVER-PATH (/X…) cleanly
    #[command(visible_alias = "suicide")]
    Stop {
        #[command(flatten)]
        dial: DialArgs,
        /// Server path, /X…
        path: String,
    },
    /// Make a channel at PATH holding up to CAP buffered messages (0: every send waits for a receiver)
    Mkchan {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path
        path: String,
        /// Buffer capacity, in messages (an integer ≥ 0)
        #[arg(allow_hyphen_values = true)]
        cap: String,
    },
    /// Send stdin as one message on the channel at PATH; waits for a receiver or buffer room
    Send {
        #[command(flatten)]
        dial: DialArgs,
        /// Channel path
        path: String,
    },
    /// Receive one message from the channel at PATH and print it on stdout (on a subscription: one event, a server path)
    Recv {
        #[command(flatten)]
        dial: DialArgs,
        /// Channel or subscription path
        path: String,
    },
    /// Close the channel at PATH: later sends fail, receivers drain what is left
    Close {
        #[command(flatten)]
        dial: DialArgs,
        /// Channel path
        path: String,
    },
    /// Start a process at PATH; its spec is JSON on stdin, like {"Path": "/bin/ls", "Args": ["/"]}
    Mkproc {
        #[command(flatten)]
        dial: DialArgs,
        /// Remove the element when the process exits
        #[arg(long = "scrub")]
        scrub: bool,
        /// Anchor path, /X…/name
        path: String,
    },
    /// Copy this tool's stdin into the process at PATH, then close the process's stdin
    Stdin {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process
        path: String,
    },
    /// Copy the stdout of the process at PATH to this tool's stdout, until it ends; on a watch, print the kept stdout of its processes, each line prefixed by "[WID] "
    Stdout {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process or a watch
        path: String,
        /// On a watch: only the process in this slot, without prefixes
        #[arg(long)]
        wid: Option<u32>,
    },
    /// Copy the stderr of the process at PATH to this tool's stdout, until it ends; on a watch, as stdout
    Stderr {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process or a watch
        path: String,
        /// On a watch: only the process in this slot, without prefixes
        #[arg(long)]
        wid: Option<u32>,
    },
    /// Wait until the process at PATH exits; print its status as JSON
    Wait {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process
        path: String,
    },
    /// Wait until every process named on stdin (one path a line) has exited
    Waitall {
        #[command(flatten)]
        dial: DialArgs,
    },
    /// Send a signal to the process at PATH (to every process of a watch): `signal TERM PATH` (or `signal PATH TERM`; SIGTERM, term, 15 work too)
    Signal {
        #[command(flatten)]
        dial: DialArgs,
        /// The signal (TERM, SIGTERM, term, 15), or the path
        #[arg(value_name = "SIG")]
        first: String,
        /// The path (or the signal)
        #[arg(value_name = "PATH")]
        second: String,
    },
    /// Make a subscription at PATH to servers joining the cluster from now on; `recv PATH` prints one per call
    #[command(name = "mk@join")]
    MkJoin {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path, /X…/name
        path: String,
    },
    /// Make a subscription at PATH to servers leaving the cluster from now on; `recv PATH` prints one per call
    #[command(name = "mk@leave")]
    MkLeave {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path, /X…/name
        path: String,
    },
    /// Make a watcher at PATH keeping NumProcesses copies of a command running; its spec is JSON on stdin, like {"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 3}
    Mkwatch {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path, /X…/name
        path: String,
    },
    /// Add N processes (default 1) to the watcher at PATH; prints the new count
    Incr {
        #[command(flatten)]
        dial: DialArgs,
        /// Watch path
        path: String,
        /// How many to add
        n: Option<u32>,
    },
    /// Remove N processes (default 1, the highest slots, stopped gracefully) from the watcher at PATH; prints the new count
    Decr {
        #[command(flatten)]
        dial: DialArgs,
        /// Watch path
        path: String,
        /// How many to remove
        n: Option<u32>,
    },
    /// Print the process count of the watcher at PATH, or set it to N
    Numprocs {
        #[command(flatten)]
        dial: DialArgs,
        /// Watch path
        path: String,
        /// The new count
        n: Option<u32>,
    },
    /// Control the watcher at PATH: start, stop (graceful), restart (stop, then start), reload (start new processes, then stop the old ones)
    Watch {
        #[command(flatten)]
        dial: DialArgs,
        /// start, stop, restart or reload
        #[arg(value_name = "ACTION", value_parser = ["start", "stop", "restart", "reload"], ignore_case = true)]
        action: String,
        /// Watch path
        path: String,
    },
    /// Make the server at SERVER-PATH read its --config file again and apply the changes; prints what it did as JSON
    Reloadconfig {
        #[command(flatten)]
        dial: DialArgs,
        /// Server path, /X…
        path: String,
    },
    /// A live view of every server and process of the cluster, refreshed every second; q quits
    Top {
        #[command(flatten)]
        dial: DialArgs,
        /// Seconds between refreshes
        #[arg(short = 'i', long = "interval", value_name = "SECONDS", default_value_t = 1.0)]
        interval: f64,
    },
    /// Stream the events of the cluster (or of PATH and below) as JSON lines, until interrupted
    Events {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path: / (default) for the whole cluster, /X… for one server, /X…/a for a subtree
        path: Option<String>,
    },
    /// CPU, memory and uptime of every server and process (or of those at PATH and below)
    Stats {
        #[command(flatten)]
        dial: DialArgs,
        /// Print JSON instead of a table
        #[arg(long = "json")]
        json: bool,
        /// Anchor path: / (default) for the whole cluster, /X… for one server, /X…/a for a subtree
        path: Option<String>,
    },
}

fn client_rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Start(args) => cmd::start::run(args),
        Cmd::Keygen => {
            cmd::keygen::run();
            Ok(())
        }
        Cmd::Ls {
            dial,
            long,
            depth,
            path,
        } => client_rt()?.block_on(async {
            let c = dial.connect().await?;
            cmd::anchor::ls(&c, &path, long, depth).await
        }),
        Cmd::Peek { dial, path } => {
            client_rt()?.block_on(async { cmd::anchor::peek(&dial.connect().await?, &path).await })
        }
        Cmd::Scrub { dial, path } => {
            client_rt()?.block_on(async { cmd::anchor::scrub(&dial.connect().await?, &path).await })
        }
        Cmd::Join { dial, path, url } => {
            client_rt()?.block_on(async { cmd::anchor::join(&dial.connect().await?, &path, &url).await })
        }
        Cmd::Stop { dial, path } => {
            client_rt()?.block_on(async { cmd::anchor::stop(&dial.connect().await?, &path).await })
        }
        Cmd::Mkchan { dial, path, cap } => {
            let cap = cmd::chan::parse_cap(&cap)?;
            client_rt()?.block_on(async { cmd::chan::mkchan(&dial.connect().await?, &path, cap).await })
        }
        Cmd::Send { dial, path } => {
            client_rt()?.block_on(async { cmd::chan::send(&dial.connect().await?, &path).await })
        }
        Cmd::Recv { dial, path } => {
            client_rt()?.block_on(async { cmd::chan::recv(&dial.connect().await?, &path).await })
        }
        Cmd::Close { dial, path } => {
            client_rt()?.block_on(async { cmd::chan::close(&dial.connect().await?, &path).await })
        }
        Cmd::Mkproc { dial, scrub, path } => {
            let input = cmd::proc::read_stdin()?;
            client_rt()?.block_on(async { cmd::proc::mkproc(&dial.connect().await?, &path, scrub, &input).await })
        }
        Cmd::Stdin { dial, path } => {
            client_rt()?.block_on(async { cmd::proc::stdin(&dial.connect().await?, &path).await })
        }
        Cmd::Stdout { dial, path, wid } => {
            client_rt()?.block_on(async { cmd::proc::output(&dial.connect().await?, &path, false, wid).await })
        }
        Cmd::Stderr { dial, path, wid } => {
            client_rt()?.block_on(async { cmd::proc::output(&dial.connect().await?, &path, true, wid).await })
        }
        Cmd::Wait { dial, path } => {
            client_rt()?.block_on(async { cmd::proc::wait(&dial.connect().await?, &path).await })
        }
        Cmd::Waitall { dial } => {
            let input = cmd::proc::read_stdin()?;
            client_rt()?.block_on(async { cmd::proc::waitall(&dial.connect().await?, &input).await })
        }
        Cmd::Signal { dial, first, second } => {
            let (sig, path) = cmd::proc::signal_args(first, second);
            client_rt()?.block_on(async { cmd::proc::signal(&dial.connect().await?, &sig, &path).await })
        }
        Cmd::MkJoin { dial, path } => client_rt()?.block_on(async {
            cmd::subscription::make(&dial.connect().await?, &path, circuit_client::SubscriptionSource::Join).await
        }),
        Cmd::MkLeave { dial, path } => client_rt()?.block_on(async {
            cmd::subscription::make(&dial.connect().await?, &path, circuit_client::SubscriptionSource::Leave).await
        }),
        Cmd::Mkwatch { dial, path } => {
            let input = cmd::proc::read_stdin()?;
            client_rt()?.block_on(async { cmd::watch::mkwatch(&dial.connect().await?, &path, &input).await })
        }
        Cmd::Incr { dial, path, n } => {
            let op = cmd::watch::Scale::Incr(n.unwrap_or(1));
            client_rt()?.block_on(async { cmd::watch::scale(&dial.connect().await?, "incr", &path, op).await })
        }
        Cmd::Decr { dial, path, n } => {
            let op = cmd::watch::Scale::Decr(n.unwrap_or(1));
            client_rt()?.block_on(async { cmd::watch::scale(&dial.connect().await?, "decr", &path, op).await })
        }
        Cmd::Numprocs { dial, path, n } => {
            let op = match n {
                Some(n) => cmd::watch::Scale::Set(n),
                None => cmd::watch::Scale::Get,
            };
            client_rt()?.block_on(async { cmd::watch::scale(&dial.connect().await?, "numprocs", &path, op).await })
        }
        Cmd::Watch { dial, action, path } => {
            client_rt()?.block_on(async { cmd::watch::control(&dial.connect().await?, &action, &path).await })
        }
        Cmd::Reloadconfig { dial, path } => {
            client_rt()?.block_on(async { cmd::config::reload(&dial.connect().await?, &path).await })
        }
        Cmd::Top { dial, interval } => {
            client_rt()?.block_on(async { cmd::top::top(&dial.connect().await?, interval).await })
        }
        Cmd::Events { dial, path } => {
            client_rt()?.block_on(async { cmd::observe::events(&dial.connect().await?, path.as_deref()).await })
        }
        Cmd::Stats { dial, json, path } => {
            client_rt()?.block_on(async { cmd::observe::stats(&dial.connect().await?, path.as_deref(), json).await })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args::go_style(std::env::args_os().collect()));
    if !matches!(cli.cmd, Cmd::Start(_)) {
        // A client whose output goes to a closed pipe (`circuit peek … | head`)
        // ends quietly, as other Unix tools do; the server keeps ignoring SIGPIPE.
        // SAFETY: set before any other thread exists; SIG_DFL installs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("circuit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
