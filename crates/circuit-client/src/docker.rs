//! Docker elements: run a container on a server started with `-docker`,
//! talk to its standard streams, signal it and wait for it, as for a
//! process. `peek` and `wait` answer the engine's inspect data.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::DockerSpec;
//!
//! let anchor = client.walk("/X88550014d4c82e4d/docky")?;
//! let docky = anchor.make_docker(DockerSpec::new("ubuntu", "/bin/ls", ["/"])).await?;
//! let listing = docky.stdout().await?.read_all().await?;
//! let end = docky.wait().await?;
//! println!("{} exited with {:?}", String::from_utf8_lossy(&listing), end.exit_code());
//! docky.scrub().await?;
//! # Ok(()) }
//! ```

use circuit_proto::{DockerOp, DockerSpec, DockerStat, ElementStat, Path, ProcOp, Reply};

use crate::anchor::Anchor;
use crate::error::Error;
use crate::proc::{ProcOutput, ProcStdin};

impl Anchor {
    /// Creates and starts a container on the anchor's server and places it
    /// here. Fails if docker elements are not enabled there, if its engine
    /// does not answer, if the image is not in that engine (nothing is
    /// pulled), or if the container cannot start; nothing is left then.
    pub async fn make_docker(&self, spec: DockerSpec) -> Result<Docker, Error> {
        self.ask_done(DockerOp::Make(Box::new(spec))).await?;
        Ok(self.docker())
    }

    /// A handle on the container held here. Nothing is checked until it is used.
    pub fn docker(&self) -> Docker {
        Docker(self.clone())
    }

    /// Waits until the process or container held here has ended and returns
    /// its final status: [`ElementStat::Proc`] or [`ElementStat::Docker`].
    pub async fn wait(&self) -> Result<ElementStat, Error> {
        match self.ask(ProcOp::Wait).await? {
            Reply::Exit(stat) => Ok(ElementStat::Proc(*stat)),
            Reply::Stat(Some(stat)) => Ok(stat),
            r => Err(Error::unexpected(&r)),
        }
    }
}

/// A handle on a docker element. Cheap to clone.
#[derive(Clone)]
pub struct Docker(Anchor);

impl Docker {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The anchor that holds the container.
    pub fn anchor(&self) -> &Anchor {
        &self.0
    }

    /// The engine's inspect data now (`State`, `Config`, `HostConfig`, …).
    pub async fn peek(&self) -> Result<DockerStat, Error> {
        match self.0.stat().await? {
            Some(ElementStat::Docker(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(
                self.path(),
                "container",
                "docker",
                other.as_ref(),
            )),
        }
    }

    /// Waits until the container has exited and returns its inspect data
    /// then (at once if it has exited already). Fails with
    /// [`crate::ErrorKind::Aborted`] if the element is scrubbed meanwhile.
    pub async fn wait(&self) -> Result<DockerStat, Error> {
        match self.0.wait().await? {
            ElementStat::Docker(s) => Ok(s),
            other => Err(Error::missing_or_wrong(
                self.path(),
                "container",
                "docker",
                Some(&other),
            )),
        }
    }

    /// Sends a signal through the engine: a name (`TERM`, `SIGTERM`,
    /// `term`) or a number (`15`).
    pub async fn signal(&self, signal: &str) -> Result<(), Error> {
        self.0.ask_done(ProcOp::Signal(signal.to_string())).await
    }

    /// Removes the element and its container (killed if it runs).
    pub async fn scrub(&self) -> Result<(), Error> {
        self.0.scrub().await
    }

    /// Takes the container's stdin for writing (one writer at a time);
    /// closing it closes the container's stdin.
    pub async fn stdin(&self) -> Result<ProcStdin, Error> {
        self.0.proc().stdin().await
    }

    /// Reads the container's stdout (one reader at a time), until it ends.
    pub async fn stdout(&self) -> Result<ProcOutput, Error> {
        self.0.proc().stdout().await
    }

    /// Reads the container's stderr, as [`Docker::stdout`].
    pub async fn stderr(&self) -> Result<ProcOutput, Error> {
        self.0.proc().stderr().await
    }
}
