//! Commands on membership subscriptions: mk@join, mk@leave. (`recv` takes
//! one event from a subscription as from a channel: see `chan`; `peek` and
//! `scrub` work on any element: see `anchor`.)

use anyhow::{Context, Result};
use circuit_client::{Client, Path, SubscriptionSource};
use clap::Subcommand;

use crate::values;

/// The subscription commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a subscription at PATH to servers joining the cluster from now on; `recv PATH` prints one per call
    #[command(name = "mk@join")]
    MkJoin(Make),
    /// Make a subscription at PATH to servers leaving the cluster from now on; `recv PATH` prints one per call
    #[command(name = "mk@leave")]
    MkLeave(Make),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::MkJoin(a) => a.run(client, SubscriptionSource::Join).await,
            Cmd::MkLeave(a) => a.run(client, SubscriptionSource::Leave).await,
        }
    }
}

/// `mk@join PATH` / `mk@leave PATH`
#[derive(clap::Args, Debug)]
pub struct Make {
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Make {
    /// Makes the subscription to `source`.
    pub async fn run(self, client: &Client, source: SubscriptionSource) -> Result<()> {
        client
            .anchor(self.path)
            .make_subscription(source)
            .await
            .with_context(|| format!("{} error", source.verb()))?;
        Ok(())
    }
}
