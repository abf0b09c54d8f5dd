//! `stats` ([`Request::Stats`]): CPU, memory and uptime of this server and
//! of the processes of its elements at a path and below; at `/`, of every
//! member, asked in parallel and merged by the server the client dialed.

use std::sync::Arc;

use circuit_proto::{ClusterStats, ErrorKind, Path, ProcessStats, Reply, Request, Response, ServerStats, WireError};

use crate::State;
use crate::stats::sample;

fn json(stats: &ClusterStats) -> Response {
    serde_json::to_string(stats)
        .map(Reply::Json)
        .map_err(|e| WireError::new(ErrorKind::Internal, format!("stats: {e}")))
}

/// Every element at `names` and below, with its path.
fn elements_under(state: &State, path: &Path) -> Vec<(Path, crate::elements::Element)> {
    let ns = state.ns.lock().unwrap();
    let mut out: Vec<(Path, crate::elements::Element)> = ns
        .get(path.names())
        .filter(|_| !path.is_server_root())
        .map(|el| (path.clone(), el))
        .into_iter()
        .collect();
    for (names, _) in ns.list(path.names(), true) {
        if let Some(el) = ns.get(&names) {
            let p = names
                .iter()
                .try_fold(Path::server(state.id), |p, n| p.child(n))
                .expect("names in the tree are valid");
            out.push((p, el));
        }
    }
    out
}

/// This server, and the processes at `path` and below.
pub async fn server(state: &State, path: &Path) -> ServerStats {
    let mut procs: Vec<(String, String, u32)> = Vec::new();
    for (p, el) in elements_under(state, path) {
        for info in el.processes() {
            procs.push((p.to_string(), info.label, info.pid));
        }
    }
    procs.sort();
    let me = std::process::id();
    let mut pids: Vec<u32> = procs.iter().map(|(_, _, pid)| *pid).collect();
    pids.push(me);
    let mut usage = sample(&pids).await;
    let mine = usage.pop().flatten();
    let processes = procs
        .into_iter()
        .zip(usage)
        .filter_map(|((path, label, pid), u)| {
            let u = u?;
            Some(ProcessStats {
                path,
                pid,
                label,
                uptime: u.uptime,
                cpu: u.cpu,
                rss: u.rss,
            })
        })
        .collect();
    ServerStats {
        server: state.id.to_string(),
        pid: me,
        uptime: state.started.elapsed().as_secs_f64(),
        cpu: mine.map_or(0.0, |u| u.cpu),
        rss: mine.map_or(0, |u| u.rss),
        error: None,
        processes,
    }
}

/// `stats /X…[/…]` on this server.
pub async fn local(state: &State, path: &Path) -> Response {
    json(&ClusterStats {
        servers: vec![server(state, path).await],
    })
}

/// `stats /`: every member, this one included.
pub async fn cluster(state: &Arc<State>) -> Response {
    let mine = Path::server(state.id);
    let me = server(state, &mine);
    let others = state.members.members();
    let asks = others.iter().map(|node| async move {
        let req = Request::Stats {
            path: Path::server(node.id),
        };
        let failed = |error: String| ServerStats {
            server: node.id.to_string(),
            error: Some(error),
            ..ServerStats::default()
        };
        match super::peers::ask(state, node, &req).await {
            Ok(Reply::Json(text)) => match serde_json::from_str::<ClusterStats>(&text) {
                Ok(s) => s.servers,
                Err(e) => vec![failed(format!("unreadable stats: {e}"))],
            },
            Ok(r) => vec![failed(format!("unexpected answer {r:?}"))],
            Err(e) => vec![failed(e.message)],
        }
    });
    let (me, others) = futures::future::join(me, futures::future::join_all(asks)).await;
    let mut servers = vec![me];
    servers.extend(others.into_iter().flatten());
    servers.sort_by(|a, b| a.server.cmp(&b.server));
    json(&ClusterStats { servers })
}
