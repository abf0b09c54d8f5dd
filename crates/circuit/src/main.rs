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
    /// Copy the stdout of the process at PATH to this tool's stdout, until it ends
    Stdout {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process
        path: String,
    },
    /// Copy the stderr of the process at PATH to this tool's stdout, until it ends
    Stderr {
        #[command(flatten)]
        dial: DialArgs,
        /// Anchor path of a process
        path: String,
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
    /// Send a signal to the process at PATH: `signal TERM PATH` (or `signal PATH TERM`; SIGTERM, term, 15 work too)
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
        Cmd::Stdout { dial, path } => {
            client_rt()?.block_on(async { cmd::proc::output(&dial.connect().await?, &path, false).await })
        }
        Cmd::Stderr { dial, path } => {
            client_rt()?.block_on(async { cmd::proc::output(&dial.connect().await?, &path, true).await })
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
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args::go_style(std::env::args_os().collect()));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("circuit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
