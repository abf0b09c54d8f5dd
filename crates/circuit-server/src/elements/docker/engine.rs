//! The server's link to the Docker engine: the unix socket (`DOCKER_HOST`
//! honoured), the API version agreed with the engine, the spec → create-body
//! translation, container names and labels, and the sweep of containers
//! left by servers that are gone.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use circuit_proto::{DockerSpec, Path, ServerId};
use tracing::{info, warn};

use super::DockerError;

/// Where the engine listens when `DOCKER_HOST` does not say.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Labels on every container a server makes.
pub const LABEL_SERVER: &str = "circuit.server";
/// The element's path.
pub const LABEL_PATH: &str = "circuit.path";
/// The making server's state directory: who owns the container.
pub const LABEL_VAR: &str = "circuit.var";

/// How long a request may wait for the engine's answer to begin (a `wait`
/// or an attached stream is answered at once, then lasts as long as needed).
const REQUEST_TIMEOUT_S: u64 = 60;

/// The engine this server talks to. The connection and the API version
/// are settled at the first use that succeeds (at start, or at a later
/// `mkdkr` when the engine was not up yet); that first use also sweeps
/// containers left by servers that are gone.
pub struct Engine {
    socket: String,
    /// Why there is no socket to try (a `DOCKER_HOST` that is not `unix://`).
    refused: Option<String>,
    client: tokio::sync::OnceCell<bollard::Docker>,
    server: ServerId,
    var: PathBuf,
}

impl Engine {
    /// The engine named by `DOCKER_HOST` (or the default socket), for the
    /// server `server` whose state directory is `var`. Nothing is dialed yet.
    pub fn new(server: ServerId, var: PathBuf) -> Engine {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty());
        let (socket, refused) = match host {
            None => (DEFAULT_SOCKET.to_string(), None),
            Some(h) if h.starts_with("unix://") => (h, None),
            Some(h) => (
                h.clone(),
                Some(format!(
                    "DOCKER_HOST={h} is not a unix socket: circuit talks to the engine over its unix socket only (unix:///path)"
                )),
            ),
        };
        Engine {
            socket,
            refused,
            client: tokio::sync::OnceCell::new(),
            server,
            var: std::fs::canonicalize(&var).unwrap_or(var),
        }
    }

    /// The socket, as `unix:///path`.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The client, once the engine has answered; dials and agrees on the
    /// API version the first time (and again after a failure).
    pub async fn client(&self) -> Result<&bollard::Docker, DockerError> {
        if let Some(refused) = &self.refused {
            return Err(DockerError::Unreachable(refused.clone()));
        }
        self.client
            .get_or_try_init(|| async {
                let unreachable = |e: String| {
                    DockerError::Unreachable(format!("the Docker engine at {} is unreachable: {e}", self.socket))
                };
                let docker = bollard::Docker::connect_with_unix(
                    &self.socket,
                    REQUEST_TIMEOUT_S,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| unreachable(e.to_string()))?;
                // Engines refuse a newer API than theirs: take the lower of the two.
                let docker = docker.negotiate_version().await.map_err(|e| unreachable(e.to_string()))?;
                let v = docker.client_version();
                info!(socket = %self.socket, api = %format!("{}.{}", v.major_version, v.minor_version), "docker engine reachable");
                self.sweep(&docker).await;
                Ok(docker)
            })
            .await
    }

    /// The labels of the container of the element at `path`.
    pub fn labels(&self, path: &Path) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_SERVER.to_string(), self.server.to_string()),
            (LABEL_PATH.to_string(), path.to_string()),
            (LABEL_VAR.to_string(), self.var.display().to_string()),
        ])
    }

    /// Removes the containers made by servers that are gone: those labelled
    /// with a state directory whose lock no server holds (or that no longer
    /// exists), and those of an earlier run with this server's own
    /// directory. A restarted server has a new id, so its elements' paths
    /// are gone with the old one: nothing could adopt them.
    async fn sweep(&self, docker: &bollard::Docker) {
        let filters = HashMap::from([("label".to_string(), vec![LABEL_VAR.to_string()])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = match docker.list_containers(Some(opts)).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot list containers left by earlier servers");
                return;
            }
        };
        let me = self.server.to_string();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let (Some(var), Some(id)) = (labels.get(LABEL_VAR), c.id) else {
                continue;
            };
            if labels.get(LABEL_SERVER) == Some(&me) {
                continue;
            }
            let ours = FsPath::new(var) == self.var;
            if !ours && owner_alive(FsPath::new(var)) {
                continue;
            }
            let name = c.names.unwrap_or_default().join(",");
            let rm = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match docker.remove_container(&id, Some(rm)).await {
                Ok(()) => info!(
                    op = "sweep",
                    container = %name.trim_start_matches('/'),
                    server = labels.get(LABEL_SERVER).map_or("", String::as_str),
                    path = labels.get(LABEL_PATH).map_or("", String::as_str),
                    "removed a container left by a server that is gone"
                ),
                Err(e) => {
                    warn!(op = "sweep", container = %name, error = %e, "cannot remove a container left by a server that is gone")
                }
            }
        }
    }
}

/// True while a server holds the lock of the state directory `var`.
fn owner_alive(var: &FsPath) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(var.join(".lock")) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// The container's name: `circuit-<server id>-<path names joined by dashes>`,
/// so an operator recognises it in `docker ps`. Names the engine would
/// refuse (`@`) or that could meet another path's name are made unique by a
/// hash of the full path; very long ones are cut.
pub fn container_name(path: &Path) -> String {
    let full = path.to_string();
    let joined = full.trim_start_matches('/').replace('/', "-");
    let clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A dash inside a name could meet the dash between two names.
    let ambiguous = clean != joined || path.names().iter().any(|n| n.contains('-'));
    let mut name = format!("circuit-{clean}");
    if name.len() > 120 || ambiguous {
        name.truncate(120);
        name.push_str(&format!("-{:016x}", fnv64(full.as_bytes())));
    }
    name
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The create body for `spec`: the command `[Path] + Args`, stdin open for
/// one attached writer, no TTY (stdout and stderr stay apart), and the
/// engine's init as PID 1 (`docker run --init`), so the command takes
/// signals as it would outside a container (a PID 1 ignores TERM unless it
/// handles it) and its orphans are reaped.
pub fn create_body(spec: &DockerSpec, labels: HashMap<String, String>) -> Result<ContainerCreateBody, DockerError> {
    let bad = |m: String| Err(DockerError::Spec(m));
    if spec.image.trim().is_empty() {
        return bad("the docker spec has no \"Image\"".into());
    }
    if spec.memory < 0 {
        return bad(format!("Memory {} must be a number of bytes ≥ 0", spec.memory));
    }
    if spec.cpu_shares < 0 {
        return bad(format!("CpuShares {} must be ≥ 0", spec.cpu_shares));
    }
    if let Some(e) = spec.env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        return bad(format!("Env entry {e:?} is not NAME=VALUE"));
    }
    if !spec.dir.is_empty() && !spec.dir.starts_with('/') {
        return bad(format!("Dir {:?} must be an absolute path", spec.dir));
    }
    let mut cpuset = None;
    for entry in &spec.lxc {
        cpuset = Some(lxc_cpuset(entry)?);
    }
    let (mut volumes, mut binds) = (Vec::new(), Vec::new());
    for v in &spec.volume {
        match volume(v)? {
            Volume::Anonymous(dir) => volumes.push(dir),
            Volume::Bind(b) => binds.push(b),
        }
    }
    let mut cmd: Vec<String> = Vec::new();
    if !spec.path.is_empty() {
        cmd.push(spec.path.clone());
    }
    cmd.extend(spec.args.iter().cloned());
    let some_vec = |v: Vec<String>| (!v.is_empty()).then_some(v);
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: some_vec(cmd),
        entrypoint: (!spec.entry.is_empty()).then(|| vec![spec.entry.clone()]),
        env: some_vec(spec.env.clone()),
        working_dir: (!spec.dir.is_empty()).then(|| spec.dir.clone()),
        volumes: some_vec(volumes),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            memory: (spec.memory > 0).then_some(spec.memory),
            cpu_shares: (spec.cpu_shares > 0).then_some(spec.cpu_shares),
            cpuset_cpus: cpuset,
            binds: some_vec(binds),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `lxc.cgroup.cpuset.cpus = 0,1` → `0,1`; any other LXC option is refused.
fn lxc_cpuset(entry: &str) -> Result<String, DockerError> {
    let refuse = || {
        DockerError::Spec(format!(
            "Lxc entry {entry:?} is not supported: LXC options are obsolete in today's engines; only \"lxc.cgroup.cpuset.cpus = CPUS\" is taken (as the container's cpuset)"
        ))
    };
    let (key, value) = entry.split_once('=').ok_or_else(refuse)?;
    if key.trim() != "lxc.cgroup.cpuset.cpus" {
        return Err(refuse());
    }
    let cpus = value.trim();
    if cpus.is_empty() || !cpus.bytes().all(|b| b.is_ascii_digit() || b == b',' || b == b'-') {
        return Err(DockerError::Spec(format!(
            "Lxc entry {entry:?}: the cpuset must be like 0,1 or 0-3"
        )));
    }
    Ok(cpus.to_string())
}

enum Volume {
    Anonymous(String),
    Bind(String),
}

/// `/dir` (an anonymous volume), or `SRC:/dir[:MODE]` (a host path or a
/// named volume, mounted at `/dir`).
fn volume(v: &str) -> Result<Volume, DockerError> {
    let bad = |why: &str| DockerError::Spec(format!("Volume {v:?}: {why}; give /dir or /host/dir:/dir[:ro]"));
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [dir] if dir.starts_with('/') => Ok(Volume::Anonymous(dir.to_string())),
        [_] => Err(bad("the directory in the container must be an absolute path")),
        [src, dst] | [src, dst, _] if src.is_empty() || !dst.starts_with('/') => Err(bad(
            "needs a host path (or volume name) and an absolute path in the container",
        )),
        [_, _] => Ok(Volume::Bind(v.to_string())),
        [_, _, mode] if !mode.is_empty() => Ok(Volume::Bind(v.to_string())),
        _ => Err(bad("too many colons")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn the_seed_spec_becomes_a_create_body() {
        let spec = DockerSpec {
            image: "ubuntu".into(),
            memory: 1_000_000_000,
            cpu_shares: 3,
            lxc: vec!["lxc.cgroup.cpuset.cpus = 0,1".into()],
            volume: vec!["/webapp".into(), "/src/webapp:/opt/webapp:ro".into()],
            dir: "/".into(),
            entry: String::new(),
            env: vec!["PATH=/usr/bin".into()],
            path: "/bin/ls".into(),
            args: vec!["/".into()],
            scrub: false,
        };
        let body = create_body(&spec, HashMap::new()).unwrap();
        assert_eq!(body.image.as_deref(), Some("ubuntu"));
        assert_eq!(body.cmd, Some(vec!["/bin/ls".to_string(), "/".to_string()]));
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.working_dir.as_deref(), Some("/"));
        assert_eq!(body.volumes, Some(vec!["/webapp".to_string()]));
        let host = body.host_config.unwrap();
        assert_eq!(host.binds, Some(vec!["/src/webapp:/opt/webapp:ro".to_string()]));
        assert_eq!(host.memory, Some(1_000_000_000));
        assert_eq!(host.cpu_shares, Some(3));
        assert_eq!(host.cpuset_cpus.as_deref(), Some("0,1"));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(host.init, Some(true));
        assert_eq!(body.tty, Some(false));
    }

    #[test]
    fn bad_specs_are_refused_clearly() {
        let base = DockerSpec::new("img", "/bin/true", Vec::<String>::new());
        let err = |f: &dyn Fn(&mut DockerSpec)| {
            let mut s = base.clone();
            f(&mut s);
            create_body(&s, HashMap::new()).unwrap_err().to_string()
        };
        assert!(err(&|s| s.image.clear()).contains("no \"Image\""));
        assert!(err(&|s| s.lxc = vec!["lxc.network.type = veth".into()]).contains("obsolete"));
        assert!(err(&|s| s.lxc = vec!["lxc.cgroup.cpuset.cpus = a".into()]).contains("cpuset"));
        assert!(err(&|s| s.volume = vec!["webapp".into()]).contains("absolute"));
        assert!(err(&|s| s.volume = vec!["/a:b".into()]).contains("absolute path in the container"));
        assert!(err(&|s| s.volume = vec!["/a:/b:ro:x".into()]).contains("too many colons"));
        assert!(err(&|s| s.env = vec!["PATH".into()]).contains("NAME=VALUE"));
        assert!(err(&|s| s.dir = "tmp".into()).contains("absolute"));
        assert!(err(&|s| s.memory = -1).contains("Memory"));
        // The image's own command: Args alone, or nothing.
        let mut s = base.clone();
        s.path.clear();
        assert_eq!(create_body(&s, HashMap::new()).unwrap().cmd, None);
        s.args = vec!["echo".into(), "hi".into()];
        s.entry = "/bin/sh".into();
        let body = create_body(&s, HashMap::new()).unwrap();
        assert_eq!(body.cmd.unwrap(), ["echo", "hi"]);
        assert_eq!(body.entrypoint.unwrap(), ["/bin/sh"]);
    }

    #[test]
    fn names_are_readable_valid_and_distinct() {
        assert_eq!(
            container_name(&path("/X0000000000000001/docky")),
            "circuit-X0000000000000001-docky"
        );
        assert_eq!(
            container_name(&path("/X0000000000000001/a/b")),
            "circuit-X0000000000000001-a-b"
        );
        let (a, b) = (
            container_name(&path("/X0000000000000001/a-b")),
            container_name(&path("/X0000000000000001/a/b")),
        );
        assert_ne!(a, b);
        let at = container_name(&path("/X0000000000000001/a@b"));
        assert!(at.starts_with("circuit-X0000000000000001-a_b-"), "{at}");
        assert_ne!(at, container_name(&path("/X0000000000000001/a_b")));
        let long = container_name(&path(&format!("/X0000000000000001/{}", "n".repeat(200))));
        assert!(long.len() <= 120 + 17);
        for n in [a, b, at, long] {
            assert!(
                n.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)),
                "{n}"
            );
        }
    }
}
