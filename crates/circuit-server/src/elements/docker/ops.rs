//! The docker element's operations: `mkdkr`, and the process verbs
//! (stdin, stdout, stderr, wait, signal) served through the engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use circuit_proto::chunk;
use circuit_proto::conn::{self, StreamHandle};
use circuit_proto::{DockerSpec, DockerStat, ElementStat, ErrorKind, EventKind, Path, ProcOp, ProcPhase};
use circuit_proto::{Reply, Response, WireError};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use super::engine::{container_name, create_body};
use super::{Container, DockerError, Input, Output, Stdin, engine_message, engine_status};
use crate::elements::streams;
use crate::elements::{Ctx, Element, ProcessInfo};

pub(super) fn wire(path: &Path, e: DockerError) -> WireError {
    WireError::at(e.kind(), path, format!("{path}: {e}"))
}

/// The container, for `stats`, while it runs.
pub(crate) fn processes(c: &Container) -> Vec<ProcessInfo> {
    c.pid()
        .map(|pid| ProcessInfo {
            pid,
            label: String::new(),
        })
        .into_iter()
        .collect()
}

/// `peek`: the engine's inspect data.
pub(crate) async fn peek(c: &Container, path: &Path) -> Result<ElementStat, WireError> {
    inspect(c).await.map(ElementStat::Docker).map_err(|e| wire(path, e))
}

async fn inspect(c: &Container) -> Result<DockerStat, DockerError> {
    let docker = c.engine.client().await?;
    let info = docker.inspect_container(&c.name, None).await.map_err(|e| {
        if engine_status(&e) == Some(404) {
            DockerError::Engine(format!(
                "container {} is gone from the engine (removed outside circuit?)",
                c.name
            ))
        } else {
            DockerError::engine(e)
        }
    })?;
    let json = serde_json::to_string(&info).map_err(|e| DockerError::Engine(e.to_string()))?;
    Ok(DockerStat::from_json_text(json))
}

/// `mkdkr`: creates the container, attaches its three streams, starts it,
/// and places it at `path`. Nothing is left behind when a step fails.
pub(crate) async fn make(ctx: &Ctx, path: &Path, spec: DockerSpec) -> Response {
    let engine = ctx.docker.clone().ok_or_else(|| wire(path, DockerError::Disabled))?;
    ctx.check_free(path, "container")?;
    let body = create_body(&spec, engine.labels(path)).map_err(|e| wire(path, e))?;
    let docker = engine.client().await.map_err(|e| wire(path, e))?;
    let name = container_name(path);
    let opts = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    docker.create_container(Some(opts), body).await.map_err(|e| {
        let err = match engine_status(&e) {
            Some(404) => DockerError::NoImage(spec.image.clone()),
            Some(409) => DockerError::Engine(format!(
                "a container named {name} already exists in the engine: {}",
                engine_message(&e)
            )),
            _ => DockerError::Engine(format!("cannot create the container: {}", engine_message(&e))),
        };
        warn!(op = "mkdkr", %path, image = %spec.image, error = %err, "cannot create");
        wire(path, err)
    })?;
    let started = async {
        let streams = attach(docker, &name).await?;
        docker
            .start_container(&name, None)
            .await
            .map_err(|e| DockerError::Engine(format!("cannot start the container: {}", engine_message(&e))))?;
        Ok::<_, DockerError>(streams)
    };
    let gone = |why: DockerError| async {
        remove(docker, &name).await;
        warn!(op = "mkdkr", %path, image = %spec.image, container = %name, error = %why, "cannot start");
        wire(path, why)
    };
    let streams = match started.await {
        Ok(s) => s,
        Err(e) => return Err(gone(e).await),
    };
    let c = Arc::new(Container::new(
        engine.clone(),
        name.clone(),
        spec.clone(),
        streams,
        ctx.rt.tasks.clone(),
    ));
    let placed = ctx.make(path, "container", || (Some(Element::Docker(c.clone())), ()));
    if let Err(e) = placed {
        c.scrub();
        return Err(e);
    }
    info!(op = "mkdkr", %path, image = %spec.image, container = %name, cmd = %spec.path, args = ?spec.args, scrub = spec.scrub, "started");
    follow(ctx, path, c);
    Ok(Reply::Done)
}

/// The three attachments, made together before the start.
async fn attach(docker: &bollard::Docker, name: &str) -> Result<(Input, Output, Output), DockerError> {
    let one = |stdin: bool, stdout: bool, stderr: bool| AttachContainerOptions {
        stream: true,
        stdin,
        stdout,
        stderr,
        ..Default::default()
    };
    let failed = |e: bollard::errors::Error| DockerError::Engine(format!("cannot attach: {}", engine_message(&e)));
    let (i, o, e) = tokio::try_join!(
        async {
            docker
                .attach_container(name, Some(one(true, false, false)))
                .await
                .map_err(failed)
        },
        async {
            docker
                .attach_container(name, Some(one(false, true, false)))
                .await
                .map_err(failed)
        },
        async {
            docker
                .attach_container(name, Some(one(false, false, true)))
                .await
                .map_err(failed)
        },
    )?;
    Ok((i.input, o.output, e.output))
}

async fn remove(docker: &bollard::Docker, name: &str) {
    let rm = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(name, Some(rm)).await {
        warn!(container = %name, error = %engine_message(&e), "cannot remove the container");
    }
}

/// Follows the container until it ends: notes its pid, publishes its end
/// to `wait`ers, reports events and, with `Scrub`, removes it. On the
/// server's tracker, until the server stops.
fn follow(ctx: &Ctx, path: &Path, c: Arc<Container>) {
    let (ctx, path) = (ctx.clone(), path.clone());
    let rt = ctx.rt.clone();
    rt.tasks.spawn(async move {
        let Ok(docker) = c.engine.client().await else { return };
        let life = async {
            if let Ok(info) = docker.inspect_container(&c.name, None).await
                && let Some(pid) = info.state.and_then(|s| s.pid).filter(|&p| p > 0)
            {
                c.pid.store(pid as u32, Ordering::Relaxed);
                ctx.events.emit(&path, EventKind::Spawned { pid: pid as u32 });
            }
            loop {
                let opts = WaitContainerOptions {
                    condition: "not-running".into(),
                };
                // An exit code other than 0 comes as an error: any answer may be the end.
                let _ = docker.wait_container(&c.name, Some(opts)).next().await;
                match inspect(&c).await {
                    // The engine's answer was a failure (it restarted?), not the end.
                    Ok(stat) if stat.running() => ctx.rt.clock.sleep(Duration::from_secs(1)).await,
                    other => break other,
                }
            }
        };
        let ended = tokio::select! {
            r = life => r,
            _ = c.scrubbed() => return,
            _ = ctx.rt.shutdown.cancelled() => return,
        };
        let code = ended.as_ref().ok().and_then(DockerStat::exit_code).unwrap_or(-1);
        let pid = c.pid.load(Ordering::Relaxed);
        c.ended.send_replace(Some(ended.map_err(|e| e.to_string())));
        info!(op = "exit", %path, container = %c.name, code, "container ended");
        ctx.events.emit(
            &path,
            EventKind::Exited {
                pid: (pid != 0).then_some(pid),
                phase: ProcPhase::Exited,
                code: code as i32,
                signal: None,
            },
        );
        if !c.spec.scrub {
            return;
        }
        let mut ns = ctx.ns.lock().unwrap();
        if matches!(ns.get(path.names()), Some(Element::Docker(d)) if Arc::ptr_eq(&d, &c)) {
            ns.remove(path.names());
            drop(ns);
            info!(op = "scrub", %path, "scrubbed on exit, as its spec asks");
            c.scrub();
        }
    });
}

/// Serves a process verb on the container `c` at `path`.
pub(crate) async fn serve_proc(c: &Container, path: &Path, op: ProcOp, stream: &mut StreamHandle) -> Option<Response> {
    match op {
        ProcOp::Make(_) => Some(Err(WireError::at(
            ErrorKind::Exists,
            path,
            format!("anchor {path} already holds a docker"),
        ))),
        ProcOp::Stdin => write_in(c, path, stream).await,
        ProcOp::Stdout => read_out(c, path, "stdout", stream).await,
        ProcOp::Stderr => read_out(c, path, "stderr", stream).await,
        ProcOp::Wait => tokio::select! {
            r = c.wait() => Some(r.map(|s| Reply::Stat(Some(ElementStat::Docker(s)))).map_err(|e| wire(path, e))),
            _ = gone(stream) => None,
        },
        ProcOp::Signal(name) => Some(signal(c, path, &name).await.map_err(|e| wire(path, e))),
    }
}

/// `signal`: through the engine (`docker kill -s`).
async fn signal(c: &Container, path: &Path, name: &str) -> Result<Reply, DockerError> {
    let sig = crate::elements::proc::parse_signal(name).map_err(|_| DockerError::BadSignal(name.to_string()))?;
    let docker = c.engine.client().await?;
    let opts = KillContainerOptions {
        signal: sig.as_str().to_string(),
    };
    docker
        .kill_container(&c.name, Some(opts))
        .await
        .map_err(|e| match engine_status(&e) {
            Some(409) => DockerError::NotRunning,
            _ => DockerError::Engine(format!("signal error: {}", engine_message(&e))),
        })?;
    info!(op = "signal", %path, container = %c.name, signal = %sig, "signalled");
    Ok(Reply::Done)
}

/// Reads at most one byte from the client; returns once the client has
/// gone (it never writes on a read stream, so any answer means that).
async fn gone<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut probe = [0u8; 1];
    let _ = rd.read(&mut probe).await;
}

/// `stdout` / `stderr`: the attachment's frames to the client as chunks,
/// until the container's end of file, while the client stays.
async fn read_out(c: &Container, path: &Path, which: &'static str, stream: &mut StreamHandle) -> Option<Response> {
    let mut lease = match c.output(which) {
        Ok(l) => l,
        Err(e) => return Some(Err(wire(path, e))),
    };
    if conn::respond(stream, &Ok(Reply::Done)).await.is_err() {
        return None;
    }
    info!(op = which, %path, "reader attached");
    let (bytes, end) = copy_out(c, path, &mut lease, stream).await;
    info!(op = which, %path, bytes, end, "reader detached");
    None
}

async fn copy_out(
    c: &Container,
    path: &Path,
    lease: &mut Option<Output>,
    stream: &mut StreamHandle,
) -> (u64, &'static str) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut total = 0u64;
    loop {
        let Some(out) = lease.as_mut() else {
            // Ended earlier: the end again, for this reader.
            let _ = chunk::write_end(&mut wr).await;
            return (total, "end of file");
        };
        let item = tokio::select! {
            i = out.next() => i,
            _ = gone(&mut rd) => return (total, "client left"),
            _ = c.scrubbed() => {
                let _ = chunk::write_fail(&mut wr, &wire(path, DockerError::Aborted)).await;
                return (total, "scrubbed");
            }
        };
        let data = match item {
            None => {
                *lease = None;
                let _ = chunk::write_end(&mut wr).await;
                return (total, "end of file");
            }
            Some(Err(e)) => {
                *lease = None;
                let err = DockerError::Engine(format!("reading the container's output: {}", engine_message(&e)));
                let _ = chunk::write_fail(&mut wr, &wire(path, err)).await;
                return (total, "engine error");
            }
            Some(Ok(
                LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message },
            )) => message,
            Some(Ok(LogOutput::StdIn { .. })) => continue,
        };
        tokio::select! {
            r = chunk::write_data(&mut wr, &data) => if r.is_err() { return (total, "client left") },
            _ = gone(&mut rd) => return (total, "client left"),
            _ = c.scrubbed() => return (total, "scrubbed"),
        }
        total += data.len() as u64;
    }
}

/// `stdin` (see [`streams::write_in`]).
async fn write_in(c: &Container, path: &Path, stream: &mut StreamHandle) -> Option<Response> {
    match c.stdin() {
        Ok(lease) => streams::write_in(Stdin(lease), path, "container", c.scrubbed(), stream).await,
        Err(e) => Some(Err(wire(path, e))),
    }
}
