//! `stats` ([`AnchorOp::Stats`]): CPU, memory and uptime of this server and
//! of the processes of its elements at a path and below; at `/`, of every
//! member, asked in parallel and merged by the server the client dialed.

use std::sync::Arc;

use circuit_proto::{AnchorOp, ClusterStats, Path, ProcessStats, Reply, Request, Response, ServerStats};

use crate::State;
use crate::elements::Ctx;
use crate::stats::sample;

/// Every element at `names` and below, with its path.
fn elements_under(ctx: &Ctx, path: &Path) -> Vec<(Path, crate::elements::Element)> {
    let ns = ctx.ns.lock().unwrap();
    let mut out: Vec<(Path, crate::elements::Element)> = ns
        .get(path.names())
        .filter(|_| !path.is_server_root())
        .map(|el| (path.clone(), el))
        .into_iter()
        .collect();
    for (names, _) in ns.list(path.names(), true) {
        if let Some(el) = ns.get(&names)
            && let Ok(p) = Path::from_names(ctx.id, names)
        {
            out.push((p, el));
        }
    }
    out
}

/// This server, and the processes at `path` and below.
pub async fn server(ctx: &Ctx, path: &Path) -> ServerStats {
    let mut procs: Vec<(String, String, u32)> = Vec::new();
    for (p, el) in elements_under(ctx, path) {
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
        server: ctx.id.to_string(),
        pid: me,
        uptime: ctx.started.elapsed().as_secs_f64(),
        cpu: mine.map_or(0.0, |u| u.cpu),
        rss: mine.map_or(0, |u| u.rss),
        error: None,
        processes,
    }
}

/// `stats /X…[/…]` on this server.
pub async fn local(ctx: &Ctx, path: &Path) -> Response {
    Ok(Reply::Stats(ClusterStats {
        servers: vec![server(ctx, path).await],
    }))
}

/// `stats /`: every member, this one included.
pub async fn cluster(state: &Arc<State>) -> Response {
    let mine = Path::server(state.ctx.id);
    let me = server(&state.ctx, &mine);
    let others = state.ctx.members.members();
    let asks = others.iter().map(|node| async move {
        let req = Request::new(Path::server(node.id), AnchorOp::Stats);
        let failed = |error: String| ServerStats {
            server: node.id.to_string(),
            error: Some(error),
            ..ServerStats::default()
        };
        match crate::net::peers::ask(state, node, &req).await {
            Ok(Reply::Stats(s)) => s.servers,
            Ok(r) => vec![failed(format!("unexpected answer: {}", r.name()))],
            Err(e) => vec![failed(e.message)],
        }
    });
    let (me, others) = futures::future::join(me, futures::future::join_all(asks)).await;
    let mut servers = vec![me];
    servers.extend(others.into_iter().flatten());
    servers.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(Reply::Stats(ClusterStats { servers }))
}
