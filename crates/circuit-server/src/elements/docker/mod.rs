//! The docker element: a container this server made through the Docker
//! Engine API (`start -docker`), held at an anchor like a process.
//!
//! - **Streams.** Stdin, stdout and stderr are three attachments to the
//!   container, made before it starts (so no output is missed) and held for
//!   its life. As with a process's pipes, the server reads an output
//!   attachment only while a client reads that stream, so a container whose
//!   output nobody reads blocks once the engine's buffer (about 1 MiB per
//!   stream) and the socket's are full. One reader (or writer) per stream
//!   at a time. Closing stdin (the client's end chunk) closes the
//!   container's stdin (`StdinOnce`).
//! - **Life.** One task per container waits for its exit (`wait` requests
//!   share its answer: the inspect data once it has stopped), reports
//!   `spawned` and `exited` events, and, with `Scrub`, scrubs it.
//! - **Scrub** removes the container (`docker rm -f`: SIGKILL, then
//!   removal with its anonymous volumes); for a graceful end, `signal TERM`
//!   and `wait` first. Stopping the server scrubs every container, so a
//!   server leaves none behind; one killed leaves them to the next server
//!   started on this host with `-docker` (see [`engine`]).

pub mod engine;
pub(crate) mod ops;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bollard::container::LogOutput;
use circuit_proto::{DockerSpec, DockerStat, ErrorKind};
use futures::Stream;
use tokio::io::AsyncWrite;
use tokio::sync::{OwnedMutexGuard, watch};
use tokio_util::sync::CancellationToken;

pub use engine::Engine;

use super::Scrubbed;

/// What can go wrong with a docker element.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The server was started without `-docker`.
    #[error("docker elements are not enabled on this server (start it with -docker)")]
    Disabled,
    /// The engine cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The spec cannot be run.
    #[error("{0}")]
    Spec(String),
    /// The image is not in the engine.
    #[error(
        "image {0:?} is not in this server's Docker engine (circuit never pulls images: load, import or build it on that host first)"
    )]
    NoImage(String),
    /// The stream already has its one reader or writer.
    #[error("{0} is busy: it already has a {1} (one at a time)")]
    Busy(&'static str, &'static str),
    /// The stream is gone (stdin was closed).
    #[error("{0} is closed")]
    Closed(&'static str),
    /// The element was scrubbed.
    #[error("aborted: the docker element was scrubbed")]
    Aborted,
    /// Not a signal this server knows.
    #[error("signal {0:?} not recognized; give a name like TERM or SIGTERM, or a number like 15")]
    BadSignal(String),
    /// The container is not running.
    #[error("no running container to signal")]
    NotRunning,
    /// The engine refused or failed.
    #[error("{0}")]
    Engine(String),
}

impl DockerError {
    /// The wire class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DockerError::Disabled | DockerError::Unreachable(_) => ErrorKind::Unsupported,
            DockerError::Spec(_) | DockerError::BadSignal(_) => ErrorKind::Invalid,
            DockerError::NoImage(_) => ErrorKind::NotFound,
            DockerError::Busy(..) => ErrorKind::Busy,
            DockerError::Closed(_) | DockerError::NotRunning => ErrorKind::Closed,
            DockerError::Aborted => ErrorKind::Aborted,
            DockerError::Engine(_) => ErrorKind::Io,
        }
    }

    /// The engine's own message for a failed request.
    pub fn engine(e: bollard::errors::Error) -> DockerError {
        DockerError::Engine(engine_message(&e))
    }
}

/// The engine's message, without bollard's wrapping.
pub fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The HTTP status of an engine's refusal, if it was one.
pub fn engine_status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An output attachment: the engine's frames of one stream.
pub type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The stdin attachment.
pub type Input = Pin<Box<dyn AsyncWrite + Send>>;

type Lock<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// How the container ended, once it has: its inspect data, or why it
/// could not be had.
pub type Ended = Result<DockerStat, String>;

/// A container made by this server.
pub struct Container {
    engine: Arc<Engine>,
    /// Its name in the engine (`circuit-X…-…`).
    name: String,
    spec: DockerSpec,
    /// Its init process's pid on the host, while it runs (0: unknown).
    pid: AtomicU32,
    stdin: Lock<Input>,
    stdout: Lock<Output>,
    stderr: Lock<Output>,
    ended: watch::Sender<Option<Ended>>,
    scrubbed: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Container {
    fn new(
        engine: Arc<Engine>,
        name: String,
        spec: DockerSpec,
        streams: (Input, Output, Output),
        tasks: tokio_util::task::TaskTracker,
    ) -> Container {
        fn lock<T>(s: T) -> Lock<T> {
            Arc::new(tokio::sync::Mutex::new(Some(s)))
        }
        Container {
            engine,
            name,
            spec,
            pid: AtomicU32::new(0),
            stdin: lock(streams.0),
            stdout: lock(streams.1),
            stderr: lock(streams.2),
            ended: watch::channel(None).0,
            scrubbed: CancellationToken::new(),
            tasks,
        }
    }

    /// Its name in the engine.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec it was made with.
    pub fn spec(&self) -> &DockerSpec {
        &self.spec
    }

    /// Its init process's pid on the host while it runs.
    pub fn pid(&self) -> Option<u32> {
        let pid = self.pid.load(Ordering::Relaxed);
        (pid != 0 && self.ended.borrow().is_none()).then_some(pid)
    }

    /// Takes the stdin attachment (one writer at a time).
    fn stdin(&self) -> Result<OwnedMutexGuard<Option<Input>>, DockerError> {
        let guard = self
            .stdin
            .clone()
            .try_lock_owned()
            .map_err(|_| DockerError::Busy("stdin", "writer"))?;
        if guard.is_none() {
            return Err(DockerError::Closed("stdin"));
        }
        Ok(guard)
    }

    /// Takes an output attachment (one reader at a time).
    fn output(&self, which: &'static str) -> Result<OwnedMutexGuard<Option<Output>>, DockerError> {
        let lock = if which == "stderr" { &self.stderr } else { &self.stdout };
        lock.clone()
            .try_lock_owned()
            .map_err(|_| DockerError::Busy(which, "reader"))
    }

    /// Resolves once the element is scrubbed.
    async fn scrubbed(&self) {
        self.scrubbed.cancelled().await
    }

    /// Waits for the container's end (at once if it has ended).
    async fn wait(&self) -> Result<DockerStat, DockerError> {
        let mut rx = self.ended.subscribe();
        tokio::select! {
            r = rx.wait_for(Option::is_some) => match r.map(|v| v.clone()) {
                Ok(Some(Ok(stat))) => Ok(stat),
                Ok(Some(Err(e))) => Err(DockerError::Engine(e)),
                Ok(None) | Err(_) => Err(DockerError::Aborted),
            },
            _ = self.scrubbed() => Err(DockerError::Aborted),
        }
    }

    /// Removes the container from the engine (`rm -f`): at once, on the
    /// server's tracker; the future resolves when it is gone.
    pub fn scrub(&self) -> Scrubbed {
        if self.scrubbed.is_cancelled() {
            return Scrubbed::done();
        }
        self.scrubbed.cancel();
        let (engine, name) = (self.engine.clone(), self.name.clone());
        let task = self.tasks.spawn(async move {
            let docker = match engine.client().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(op = "scrub", container = %name, error = %e, "cannot remove the container");
                    return;
                }
            };
            let rm = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match docker.remove_container(&name, Some(rm)).await {
                Ok(()) => tracing::info!(op = "scrub", container = %name, "container removed"),
                Err(e) if engine_status(&e) == Some(404) => {
                    tracing::info!(op = "scrub", container = %name, "container already gone")
                }
                Err(e) => {
                    tracing::warn!(op = "scrub", container = %name, error = %engine_message(&e), "cannot remove the container")
                }
            }
        });
        Scrubbed::when(async move {
            let _ = task.await;
        })
    }
}

/// A container's stdin, leased to one writer.
pub(crate) struct Stdin(pub(crate) tokio::sync::OwnedMutexGuard<Option<Input>>);

impl crate::elements::streams::StdinLease for Stdin {
    type Writer = Input;

    fn writer(&mut self) -> Option<&mut Input> {
        self.0.as_mut()
    }

    async fn close(&mut self) -> std::io::Result<()> {
        match self.0.take() {
            Some(mut input) => tokio::io::AsyncWriteExt::shutdown(&mut input).await,
            None => Ok(()),
        }
    }

    fn error(path: &circuit_proto::Path, end: crate::elements::streams::StdinEnd) -> circuit_proto::WireError {
        use crate::elements::streams::StdinEnd;
        let e = match end {
            StdinEnd::Aborted => DockerError::Aborted,
            StdinEnd::Closed => DockerError::Closed("stdin"),
            StdinEnd::Failed(what) => DockerError::Engine(what),
        };
        ops::wire(path, e)
    }
}
