//! Commands on anchors of any kind: ls, peek, scrub, join, stop.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use circuit_client::{Client, Entry, Path};
use clap::Subcommand;

use crate::cmd::print_json;
use crate::values::{self, Glob};

/// The commands on anchors of any kind.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the children of PATH (PATH/... lists every descendant)
    Ls(Ls),
    /// Print the status of the element at PATH as JSON (null if empty)
    Peek(Peek),
    /// Remove the element at PATH
    Scrub(Scrub),
    /// Merge the cluster of the server at SERVER-PATH with the cluster of the server at URL
    Join(Join),
    /// Stop the server at SERVER-PATH (/X…) cleanly
    #[command(visible_alias = "suicide")]
    Stop(Stop),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Ls(a) => a.run(client).await,
            Cmd::Peek(a) => a.run(client).await,
            Cmd::Scrub(a) => a.run(client).await,
            Cmd::Join(a) => a.run(client).await,
            Cmd::Stop(a) => a.run(client).await,
        }
    }
}

/// Children before parents, siblings by name (`ls -depth`).
fn depth_first(a: &Entry, b: &Entry) -> Ordering {
    let (x, y) = (a.path.to_string(), b.path.to_string());
    let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split('/').collect(), y.split('/').collect());
    for (p, q) in xs.iter().zip(&ys) {
        match p.cmp(q) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    ys.len().cmp(&xs.len())
}

/// `ls [-l] [-depth] PATH[/...]`
#[derive(clap::Args, Debug)]
pub struct Ls {
    /// Show each anchor's kind
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// List children before their parents
    #[arg(long = "depth")]
    depth: bool,
    /// Anchor path, e.g. / or /X88550014d4c82e4d/...
    #[arg(value_name = "PATH", value_parser = values::glob)]
    glob: Glob,
}

impl Ls {
    /// Prints one path a line (with its kind, with `-l`).
    pub async fn run(self, client: &Client) -> Result<()> {
        let Glob { path, recursive } = self.glob;
        let anchor = client.anchor(path.clone());
        let mut entries = if recursive {
            anchor.list_all().await
        } else {
            anchor.list().await
        }
        .with_context(|| format!("ls {path}"))?;
        if self.depth {
            entries.sort_by(depth_first);
        }
        let mut out = String::new();
        for e in entries {
            if self.long {
                let kind = e.kind.map_or("·", |k| k.as_str());
                out.push_str(&format!("{kind:<15} {}\n", e.path));
            } else {
                out.push_str(&format!("{}\n", e.path));
            }
        }
        print!("{out}");
        Ok(())
    }
}

/// `peek PATH`
#[derive(clap::Args, Debug)]
pub struct Peek {
    /// Anchor path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Peek {
    /// Prints the element's status as JSON.
    pub async fn run(self, client: &Client) -> Result<()> {
        let stat = client
            .anchor(self.path.clone())
            .peek()
            .await
            .with_context(|| format!("peek {}", self.path))?;
        print_json(&stat)
    }
}

/// `scrub PATH`
#[derive(clap::Args, Debug)]
pub struct Scrub {
    /// Anchor path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Scrub {
    /// Removes the element.
    pub async fn run(self, client: &Client) -> Result<()> {
        client
            .anchor(self.path.clone())
            .scrub()
            .await
            .with_context(|| format!("scrub {}", self.path))
    }
}

/// `join /X… URL`: merge that server's cluster with the one at URL.
#[derive(clap::Args, Debug)]
pub struct Join {
    /// Server path, /X…
    #[arg(value_parser = values::path)]
    path: Path,
    /// Circuit URL of a server of the other cluster
    url: String,
}

impl Join {
    /// Asks the server to join the other cluster.
    pub async fn run(self, client: &Client) -> Result<()> {
        client
            .anchor(self.path.clone())
            .server()
            .join(&self.url)
            .await
            .with_context(|| format!("join {}", self.path))
    }
}

/// `stop /X…` (alias `suicide`)
#[derive(clap::Args, Debug)]
pub struct Stop {
    /// Server path, /X…
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Stop {
    /// Stops the server cleanly.
    pub async fn run(self, client: &Client) -> Result<()> {
        client
            .anchor(self.path.clone())
            .server()
            .stop()
            .await
            .with_context(|| format!("stop {}", self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_order() {
        let e = |p: &str| Entry {
            path: p.parse().unwrap(),
            kind: None,
        };
        let mut v = [
            e("/X0000000000000001"),
            e("/X0000000000000001/a"),
            e("/X0000000000000001/a/b"),
            e("/X0000000000000002"),
        ];
        v.sort_by(depth_first);
        let got: Vec<_> = v.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(
            got,
            [
                "/X0000000000000001/a/b",
                "/X0000000000000001/a",
                "/X0000000000000001",
                "/X0000000000000002"
            ]
        );
    }
}
