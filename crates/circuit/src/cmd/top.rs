//! `circuit top`: a live terminal view of every server and process of the
//! cluster (like circus-top), from `stats /` once per interval. `q`, Esc or
//! Ctrl-C quits and gives the terminal back as it was.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use circuit_client::{Client, ClusterStats, Path};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Row, Table};
use ratatui::{DefaultTerminal, Frame};

use crate::cmd::observe::{human_bytes, human_secs};

/// Gives the terminal back (raw mode off, main screen) however `top` ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What is on screen.
#[derive(Default)]
struct View {
    stats: ClusterStats,
    /// Why the last refresh failed, if it did.
    error: Option<String>,
    updated: Option<Instant>,
}

/// One table row per server, then its processes by CPU, busiest first.
fn rows(stats: &ClusterStats) -> Vec<Row<'static>> {
    let mut servers: Vec<_> = stats.servers.iter().collect();
    servers.sort_by(|a, b| a.server.cmp(&b.server));
    let mut out = Vec::new();
    for s in servers {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        if let Some(e) = &s.error {
            out.push(Row::new(vec![format!("/{}", s.server), format!("unreachable: {e}")]).style(bold));
            continue;
        }
        out.push(
            Row::new(vec![
                format!("/{}", s.server),
                "server".into(),
                s.pid.to_string(),
                format!("{:.1}", s.cpu),
                human_bytes(s.rss),
                human_secs(s.uptime),
            ])
            .style(bold),
        );
        let mut procs: Vec<_> = s.processes.iter().collect();
        procs.sort_by(|a, b| b.cpu.total_cmp(&a.cpu).then_with(|| a.path.cmp(&b.path)));
        for p in procs {
            out.push(Row::new(vec![
                format!("  {}", p.path),
                p.label.clone(),
                p.pid.to_string(),
                format!("{:.1}", p.cpu),
                human_bytes(p.rss),
                human_secs(p.uptime),
            ]));
        }
    }
    out
}

fn draw(frame: &mut Frame, view: &View, every: Duration) {
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(frame.area());
    let procs: usize = view.stats.servers.iter().map(|s| s.processes.len()).sum();
    let mut title = format!(
        "circuit top: {} servers, {procs} processes; every {:.1}s; q quits",
        view.stats.servers.len(),
        every.as_secs_f64()
    );
    if view.updated.is_none() && view.error.is_none() {
        title.push_str("; asking…");
    }
    if let Some(e) = &view.error {
        title.push_str(&format!("; last refresh failed: {e}"));
    }
    frame.render_widget(Line::from(title), head);
    let header = Row::new(["PATH", "WID/LABEL", "PID", "CPU%", "RSS", "UPTIME"])
        .style(Style::default().add_modifier(Modifier::REVERSED));
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    frame.render_widget(Table::new(rows(&view.stats), widths).header(header), body);
}

/// True for the keys that quit: q, Esc, Ctrl-C.
fn quits(ev: &Event) -> bool {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            matches!(k.code, KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc)
                || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
        }
        _ => false,
    }
}

async fn run(term: &mut DefaultTerminal, client: &Client, every: Duration) -> Result<()> {
    // Keys come from a thread of their own, so a slow refresh never delays `q`.
    let (tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut view = View::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        term.draw(|f| draw(f, &view, every))?;
        tokio::select! {
            ev = keys.recv() => match ev {
                Some(ev) if quits(&ev) => return Ok(()),
                Some(_) => {}
                None => bail!("cannot read the terminal"),
            },
            _ = tick.tick() => {
                let asked = tokio::time::timeout(every.max(Duration::from_secs(5)), client.stats(Path::root()));
                tokio::select! {
                    r = asked => match r {
                        Ok(Ok(stats)) => {
                            view.stats = stats;
                            view.error = None;
                            view.updated = Some(Instant::now());
                        }
                        Ok(Err(e)) => view.error = Some(e.to_string()),
                        Err(_) => view.error = Some("no answer within 5 s".into()),
                    },
                    ev = keys.recv() => match ev {
                        Some(ev) if quits(&ev) => return Ok(()),
                        Some(_) => {}
                        None => bail!("cannot read the terminal"),
                    },
                }
            }
        }
    }
}

/// `top [-i SECONDS]`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between refreshes
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", default_value_t = 1.0)]
    interval: f64,
}

impl Args {
    /// Runs until `q`.
    pub async fn run(self, client: &Client) -> Result<()> {
        top(client, self.interval).await
    }
}

async fn top(client: &Client, every: f64) -> Result<()> {
    if !(every.is_finite() && (0.1..=3600.0).contains(&every)) {
        bail!("-i {every}: the refresh interval must be between 0.1 and 3600 seconds");
    }
    let every = Duration::from_secs_f64(every);
    let mut term = ratatui::try_init().context("top needs a terminal")?;
    let _restore = Restore;
    run(&mut term, client, every).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use circuit_client::{ProcessStats, ServerStats};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyEvent;

    #[test]
    fn processes_are_listed_below_their_server_busiest_first() {
        let proc = |path: &str, pid, cpu| ProcessStats {
            path: path.into(),
            pid,
            label: "wid 1".into(),
            uptime: 65.0,
            cpu,
            rss: 2048,
        };
        let stats = ClusterStats {
            servers: vec![ServerStats {
                server: "X0000000000000001".into(),
                pid: 10,
                uptime: 3.0,
                cpu: 1.5,
                rss: 4 << 20,
                error: None,
                processes: vec![
                    proc("/X0000000000000001/idle", 11, 0.0),
                    proc("/X0000000000000001/busy", 12, 99.0),
                ],
            }],
        };
        let view = View {
            stats,
            error: None,
            updated: Some(Instant::now()),
        };
        let mut term = ratatui::Terminal::new(TestBackend::new(100, 6)).unwrap();
        term.draw(|f| draw(f, &view, Duration::from_secs(1))).unwrap();
        let lines: Vec<String> = term
            .backend()
            .buffer()
            .content
            .chunks(100)
            .map(|c| c.iter().map(|cell| cell.symbol()).collect())
            .collect();
        assert!(lines[0].starts_with("circuit top: 1 servers, 2 processes"), "{lines:?}");
        assert!(lines[1].starts_with("PATH"), "{lines:?}");
        assert!(
            lines[2].starts_with("/X0000000000000001") && lines[2].contains("4.0M"),
            "{lines:?}"
        );
        assert!(
            lines[3].contains("/busy") && lines[3].contains("99.0") && lines[3].contains("1m05s"),
            "{lines:?}"
        );
        assert!(lines[4].contains("/idle") && lines[4].contains(" 11 "), "{lines:?}");
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, m| Event::Key(KeyEvent::new(code, m));
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&Event::FocusGained));
    }
}
