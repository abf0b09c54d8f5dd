//! `circuit`: the daemon (`circuit start`) and the command-line client.

mod args;
mod cmd;
mod dial;

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
    /// Stop the server at SERVER-PATH (/X…) cleanly
    #[command(visible_alias = "suicide")]
    Stop {
        #[command(flatten)]
        dial: DialArgs,
        /// Server path, /X…
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
        Cmd::Stop { dial, path } => {
            client_rt()?.block_on(async { cmd::anchor::stop(&dial.connect().await?, &path).await })
        }
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
