//! Observing the cluster: `events [PATH]` and `stats [--json] [PATH]`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use circuit_client::{Client, ClusterStats, Path};
use clap::Subcommand;

use crate::cmd::print_json;
use crate::values;

/// The observing commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Stream the events of the cluster (or of PATH and below) as JSON lines, until interrupted
    Events(Events),
    /// CPU, memory and uptime of every server and process (or of those at PATH and below)
    Stats(Stats),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Events(a) => a.run(client).await,
            Cmd::Stats(a) => a.run(client).await,
        }
    }
}

/// `events [PATH]`
#[derive(clap::Args, Debug)]
pub struct Events {
    /// Anchor path: / (default) for the whole cluster, /X… for one server, /X…/a for a subtree
    #[arg(value_parser = values::scope)]
    path: Option<Path>,
}

impl Events {
    /// One JSON object per line, until interrupted.
    pub async fn run(self, client: &Client) -> Result<()> {
        events(client, self.path.unwrap_or_else(Path::root)).await
    }
}

/// `stats [--json] [PATH]`
#[derive(clap::Args, Debug)]
pub struct Stats {
    /// Print JSON instead of a table
    #[arg(long = "json")]
    json: bool,
    /// Anchor path: / (default) for the whole cluster, /X… for one server, /X…/a for a subtree
    #[arg(value_parser = values::scope)]
    path: Option<Path>,
}

impl Stats {
    /// A table, or JSON.
    pub async fn run(self, client: &Client) -> Result<()> {
        stats(client, self.path.unwrap_or_else(Path::root), self.json).await
    }
}

async fn events(client: &Client, path: Path) -> Result<()> {
    let mut stream = client
        .events(path.clone())
        .await
        .with_context(|| format!("events {path}"))?;
    let mut out = std::io::stdout().lock();
    while let Some(ev) = stream.next().await {
        let ev = ev.with_context(|| format!("events {path}"))?;
        if writeln!(out, "{}", ev.to_json_line())
            .and_then(|_| out.flush())
            .is_err()
        {
            // Whoever read our output has gone: so are we.
            return Ok(());
        }
    }
    bail!("events {path}: the server ended the stream (it is stopping)")
}

/// Bytes for a human: 512B, 3.4K, 12.0M, 1.5G.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    for u in UNITS {
        if v < 1024.0 {
            return format!("{v:.1}{u}");
        }
        v /= 1024.0;
    }
    format!("{v:.1}P")
}

/// Seconds for a human: 42s, 3m05s, 2h07m, 3d04h.
pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The table `stats` prints: one line per server, then one per process.
pub fn table(stats: &ClusterStats) -> String {
    let mut rows = vec![[
        "PATH".to_string(),
        "PID".into(),
        "CPU%".into(),
        "RSS".into(),
        "UPTIME".into(),
    ]];
    let mut errors = Vec::new();
    for s in &stats.servers {
        if let Some(e) = &s.error {
            errors.push(format!("/{}: {e}", s.server));
            rows.push([format!("/{}", s.server), "-".into(), "-".into(), "-".into(), "-".into()]);
            continue;
        }
        rows.push([
            format!("/{}", s.server),
            s.pid.to_string(),
            format!("{:.1}", s.cpu),
            human_bytes(s.rss),
            human_secs(s.uptime),
        ]);
        for p in &s.processes {
            let path = if p.label.is_empty() {
                format!("  {}", p.path)
            } else {
                format!("  {} [{}]", p.path, p.label)
            };
            rows.push([
                path,
                p.pid.to_string(),
                format!("{:.1}", p.cpu),
                human_bytes(p.rss),
                human_secs(p.uptime),
            ]);
        }
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let w: Vec<usize> = (0..5).map(width).collect();
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {:>w4$}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        ));
    }
    for e in errors {
        out.push_str(&format!("# {e}\n"));
    }
    out
}

async fn stats(client: &Client, path: Path, json: bool) -> Result<()> {
    let stats = client
        .stats(path.clone())
        .await
        .with_context(|| format!("stats {path}"))?;
    if json {
        print_json(&stats)
    } else {
        print!("{}", table(&stats));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use circuit_client::{ProcessStats, ServerStats};

    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(3 * 1024 + 512), "3.5K");
        assert_eq!(human_bytes(12 * 1024 * 1024), "12.0M");
        assert_eq!(human_secs(42.9), "42s");
        assert_eq!(human_secs(185.0), "3m05s");
        assert_eq!(human_secs(2.0 * 3600.0 + 420.0), "2h07m");
        assert_eq!(human_secs(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
    }

    #[test]
    fn table_lines_up() {
        let stats = ClusterStats {
            servers: vec![
                ServerStats {
                    server: "X0000000000000001".into(),
                    pid: 10,
                    uptime: 5.0,
                    cpu: 0.5,
                    rss: 4 << 20,
                    error: None,
                    processes: vec![ProcessStats {
                        path: "/X0000000000000001/a".into(),
                        pid: 11,
                        label: "2".into(),
                        uptime: 1.0,
                        cpu: 99.0,
                        rss: 1 << 20,
                    }],
                },
                ServerStats {
                    server: "X0000000000000002".into(),
                    error: Some("not reachable".into()),
                    ..ServerStats::default()
                },
            ],
        };
        let t = table(&stats);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("PATH") && lines[0].ends_with("UPTIME"));
        assert!(lines[1].starts_with("/X0000000000000001 ") && lines[1].contains("4.0M"));
        assert!(lines[2].starts_with("  /X0000000000000001/a [2]") && lines[2].contains("99.0"));
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>()[1], "-");
        assert_eq!(lines[4], "# /X0000000000000002: not reachable");
        // Columns are aligned: every row is as wide as the header.
        assert!(lines[..4].iter().all(|l| l.chars().count() == lines[0].chars().count()));
    }
}
