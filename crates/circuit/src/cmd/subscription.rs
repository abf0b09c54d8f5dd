//! Commands on membership subscriptions: mk@join, mk@leave. (`recv` takes
//! one event from a subscription as from a channel: see `chan`; `peek` and
//! `scrub` work on any element: see `anchor`.)

use anyhow::{Context, Result};
use circuit_client::{Client, SubscriptionSource};

use crate::cmd::anchor::parse_path;

/// `mk@join PATH` / `mk@leave PATH`
pub async fn make(client: &Client, arg: &str, source: SubscriptionSource) -> Result<()> {
    let path = parse_path(arg)?;
    client
        .anchor(path)
        .make_subscription(source)
        .await
        .with_context(|| format!("{} error", source.verb()))?;
    Ok(())
}
