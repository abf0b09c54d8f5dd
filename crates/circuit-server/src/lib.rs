//! The circuit daemon. `Server::bind` claims the address and the server id;
//! `Server::run` serves until a `stop` request or a signal, then scrubs every
//! element and waits (with a deadline) until they have freed everything —
//! watchers stop their processes gracefully — before it returns.

pub mod clock;
pub mod config;
pub mod console;
pub mod elements;
pub mod events;
pub mod membership;
pub mod namespace;
pub mod net;
pub mod stats;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use circuit_proto::{CircuitUrl, Key, ServerId};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::namespace::Namespace;

/// How to run a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The cluster key; `None` means plain traffic.
    pub key: Option<Key>,
    /// Multicast group for discovery; `None` turns discovery off.
    pub discover: Option<SocketAddrV4>,
    /// The interface address that multicast goes through.
    pub multicast_if: Ipv4Addr,
    /// State directory; default `$TMPDIR/circuit-X<id>-P<pid>`, removed at exit.
    pub var_dir: Option<PathBuf>,
    /// A server of the cluster to join at start.
    pub join: Option<CircuitUrl>,
    /// Elements to make at boot and on `reloadconfig` (see [`config`]).
    pub config_file: Option<config::ConfigFile>,
    /// A client connection carrying no stream this long is closed
    /// ([`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// The most connections one client address may hold open
    /// ([`DEFAULT_MAX_CONNS_PER_ADDR`]); more are closed as they come.
    pub max_conns_per_addr: usize,
    /// Enable docker elements (`start -docker`), through the engine at
    /// `DOCKER_HOST` (default `unix:///var/run/docker.sock`).
    pub docker: bool,
    /// Serve the web console (`--http ADDR`); `None`: nothing listens.
    pub console: Option<console::ConsoleConfig>,
}

/// How long a connection may carry no stream before the server closes it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How many connections one client address may hold open at once.
pub const DEFAULT_MAX_CONNS_PER_ADDR: usize = 256;

/// What every session shares: the elements' context, and what only the
/// server itself uses (its stop signal, configuration, peer connections).
pub struct State {
    /// What elements see of the server: id, namespace, events, reaper, members.
    pub ctx: elements::Ctx,
    /// Notified when the server should stop.
    pub stop: Notify,
    /// The configuration it runs with.
    pub config: Config,
    /// Connections to other members, for forwarding.
    pub peers: net::peers::Peers,
}

/// A bound server, ready to run.
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
    var: VarDir,
    /// The web console's listener, when asked for.
    console: Option<TcpListener>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {err}")]
    Bind { addr: SocketAddr, err: std::io::Error },
    #[error("state directory {path}: {err}")]
    Var { path: String, err: String },
    #[error("discovery on {group}: {err}")]
    Discovery { group: SocketAddrV4, err: std::io::Error },
    #[error("{0}")]
    Console(String),
}

impl Server {
    /// Binds the listener, picks an id and locks the state directory.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|err| StartError::Bind { addr: config.addr, err })?;
        let local = listener
            .local_addr()
            .map_err(|err| StartError::Bind { addr: config.addr, err })?;
        let console = match &config.console {
            Some(c) => Some(
                console::bind(c, config.key.is_some())
                    .await
                    .map_err(StartError::Console)?,
            ),
            None => None,
        };
        let id = ServerId::random();
        let host = if local.ip().is_unspecified() {
            net::advertised_ip()
        } else {
            local.ip()
        };
        let url = CircuitUrl {
            addr: SocketAddr::new(host, local.port()).to_string(),
            pid: std::process::id(),
            id,
        };
        let var = VarDir::lock(config.var_dir.clone(), id)?;
        let udp = tokio::net::UdpSocket::bind(local)
            .await
            .and_then(membership::udp::Datagrams::new)
            .map_err(|err| StartError::Bind { addr: local, err })?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let me = membership::node::Node {
            id,
            addr: SocketAddr::new(host, local.port()),
            pid: url.pid,
            started,
            incarnation: 0,
        };
        let group = match config.discover {
            Some(group) => Some((
                membership::discovery::group_socket(group, config.multicast_if)
                    .and_then(membership::udp::Datagrams::new)
                    .map_err(|err| StartError::Discovery { group, err })?,
                group,
            )),
            None => None,
        };
        let seeds = config
            .join
            .iter()
            .filter(|u| u.id != id)
            .filter_map(membership::node::Node::from_url)
            .collect();
        let members = membership::swim::Membership::spawn(me, udp, config.key.clone(), seeds, group);
        let peers = net::peers::Peers::new(config.key.clone());
        let joined = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let bus = events::Bus::new(id);
        let mut ns = Namespace::default();
        ns.insert(&[], elements::Element::Server).expect("empty namespace");
        ns.observe(bus.clone());
        let clock = clock::Clock::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let reaper = Arc::new(elements::proc::Reaper::start_on(&tasks, clock));
        let rt = elements::Runtime {
            clock,
            tasks,
            shutdown,
            reaper: reaper.handle(),
        };
        let ctx = elements::Ctx {
            rt,
            id,
            ns: Arc::new(Mutex::new(ns)),
            events: bus,
            reaper,
            members: Arc::new(members),
            url: Arc::new(url),
            joined: joined.into(),
            started: clock.now(),
            docker: config
                .docker
                .then(|| Arc::new(elements::docker::Engine::new(id, var.path.clone()))),
            var: (!var.owned).then(|| Arc::new(var.path.clone())),
        };
        let state = Arc::new(State {
            ctx,
            stop: Notify::new(),
            config,
            peers,
        });
        // Last, so a server that cannot start says one line only.
        raise_fd_limit();
        Ok(Server {
            state,
            listener,
            var,
            console,
        })
    }

    /// Makes again the breakers saved under `--var DIR` at the last stop
    /// (after [`Server::boot_config`], which takes up the saved state of
    /// the breakers it declares).
    pub fn restore_breakers(&self) {
        elements::breaker::ops::restore_all(&self.state.ctx);
    }

    /// This server's URL, to print on stdout.
    pub fn url(&self) -> &CircuitUrl {
        &self.state.ctx.url
    }

    /// Where the web console listens, if it does.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until stopped by a `stop` request, SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), StartError> {
        let state = self.state;
        info!(id = %state.ctx.id, url = %state.ctx.url, var = %self.var.path.display(), "attaching /{} as server", state.ctx.id);
        if state.config.key.is_some() {
            info!(
                noise = circuit_proto::secure::NOISE_PATTERN,
                "traffic is authenticated and encrypted with the cluster key"
            );
        } else {
            warn!("no key given (-hmac FILE): traffic is neither authenticated nor encrypted");
        }
        if let Some(group) = state.config.discover {
            info!(%group, iface = %state.config.multicast_if, "using UDP multicast discovery");
        }
        match &state.config.join {
            Some(url) => info!(%url, "joining the cluster of {}", url.id),
            None if state.config.discover.is_none() => info!("singleton server"),
            None => {}
        }
        if let Some(engine) = state.ctx.docker.clone() {
            // Off the start path: says at once whether the engine answers,
            // and sweeps containers left by servers that are gone.
            state.ctx.rt.tasks.spawn(async move {
                match engine.client().await {
                    Ok(_) => info!(socket = %engine.socket(), "enabling docker elements"),
                    Err(e) => warn!(socket = %engine.socket(), error = %e, "docker elements are enabled, but the engine does not answer yet"),
                }
            });
        }
        if let (Some(listener), Some(config)) = (self.console, &state.config.console) {
            console::spawn(state.clone(), listener, config);
        }
        net::peers::forget_the_departed(state.clone());
        net::peers::hold_ring(state.clone());
        if let Some(seed) = state.config.join.as_ref().filter(|u| u.id != state.ctx.id)
            && let Some(seed) = membership::node::Node::from_url(seed)
        {
            net::peers::watch_join(state.clone(), seed);
        }
        elements::server::events::announce_members(state.ctx.clone());
        let accept = net::serve(state.clone(), self.listener);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = accept => {}
            _ = state.stop.notified() => info!("stopping on request"),
            _ = tokio::signal::ctrl_c() => info!("stopping on SIGINT"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => info!("stopping on SIGTERM"),
        }
        state.ctx.members.leave().await;
        drain(&state).await;
        drop(self.var);
        info!("stopped");
        Ok(())
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does), so
/// a burst of connections meets the limit the administrator set, not the
/// historical default of 1,024; logs the figure.
fn raise_fd_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut target = hard;
    if hard == RLIM_INFINITY {
        // Linux refuses more than fs.nr_open descriptors whatever the limit says.
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(soft);
    }
    if target > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => info!(from = soft, to = target, "raised the open-file limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        }
    } else {
        info!(open_files = soft, "open-file limit");
    }
}

/// The most the server waits at stop for its elements to free everything.
pub const STOP_DEADLINE_CAP: Duration = Duration::from_secs(60);

/// What the stop deadline allows for the engine to remove the containers
/// (`rm -f`, all at once), beyond [`STOP_MARGIN`].
pub const DOCKER_STOP: Duration = Duration::from_secs(10);

/// What the stop deadline allows beyond the longest GracefulTimeout (for
/// the SIGKILL, the reaping and the hooks around them).
pub const STOP_MARGIN: Duration = Duration::from_secs(2);

/// The server's last steps: scrubs every element and waits until each has
/// freed everything (watchers: every process stopped gracefully, per its
/// GracefulTimeout; containers: removed by the engine) and every task on
/// the tracker has ended — at most the longest GracefulTimeout (or
/// [`DOCKER_STOP`] with containers) plus [`STOP_MARGIN`], capped at
/// [`STOP_DEADLINE_CAP`] — then stops the reaper.
async fn drain(state: &State) {
    let (ctx, rt) = (&state.ctx, &state.ctx.rt);
    // Tasks that only serve a running server (drains of detached processes) end now.
    rt.shutdown.cancel();
    let elements = ctx.ns.lock().unwrap().drain();
    let longest = elements
        .iter()
        .filter_map(|el| match el {
            elements::Element::Watch(w) => Some(w.graceful_timeout()),
            elements::Element::Docker(_) => Some(DOCKER_STOP),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    let deadline = (longest + STOP_MARGIN).min(STOP_DEADLINE_CAP);
    let scrubs: Vec<_> = elements.into_iter().map(elements::Element::scrub).collect();
    // Watchers scrubbed earlier, still stopping, run on the tracker too.
    rt.tasks.close();
    let all = async {
        futures::future::join_all(scrubs).await;
        rt.tasks.wait().await;
    };
    if rt.clock.timeout(deadline, all).await.is_none() {
        warn!(
            tasks = rt.tasks.len(),
            ?deadline,
            "stopping before every element has freed everything"
        );
    }
    ctx.reaper.stop();
    // The last events (a watcher's `killed`, `exited`) reach their listeners
    // before the connections go with the runtime: a moment, at most.
    if ctx.events.listeners() > 0 {
        let flush = async {
            while ctx.events.pending() > 0 {
                rt.clock.sleep(Duration::from_millis(5)).await;
            }
            rt.clock.sleep(FLUSH_PAUSE).await;
        };
        let _ = rt.clock.timeout(Duration::from_secs(1), flush).await;
    }
}

/// How long the stopping server gives its listeners' connections to send
/// the last events they took.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// The locked state directory; removed on drop when it was our default.
struct VarDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
    owned: bool,
}

impl VarDir {
    fn lock(path: Option<PathBuf>, id: ServerId) -> Result<VarDir, StartError> {
        use std::os::unix::fs::DirBuilderExt;
        let owned = path.is_none();
        if owned {
            // Off the start path: thousands of them take seconds to remove.
            tokio::task::spawn_blocking(|| sweep_stale_dirs(&std::env::temp_dir()));
        }
        let path = path.unwrap_or_else(|| std::env::temp_dir().join(format!("circuit-{id}-P{}", std::process::id())));
        let err = |err: String| StartError::Var {
            path: path.display().to_string(),
            err,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| err(e.to_string()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(".lock"))
            .map_err(|e| err(e.to_string()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| err("locked by another running server; give each server its own --var DIR".into()))?;
        Ok(VarDir {
            path,
            _lock: lock,
            owned,
        })
    }
}

/// Removes the default state directories (`circuit-X<id>-P<pid>`) that
/// servers killed before their clean exit left in `tmp`: those whose lock is
/// free and whose process is gone (or that are older than a minute, should
/// the pid have been reused). A directory a server is creating right now is
/// younger than that and its pid alive, so it is never taken.
fn sweep_stale_dirs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    let mut removed = 0u32;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_name_pid(&name.to_string_lossy()) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let alive =
            pid == std::process::id() as i32 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default() > Duration::from_secs(60);
        if alive && !old {
            continue;
        }
        // Held by a running server: its lock says so, whatever its pid.
        let lock = std::fs::OpenOptions::new().write(true).open(path.join(".lock"));
        let _held = match lock {
            Ok(f) => match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => Some(l),
                Err(_) => continue,
            },
            Err(_) => None,
        };
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(removed, dir = %tmp.display(), "removed state directories of servers that were killed");
    }
}

/// The pid in a default state directory's name, `circuit-X<16 hex>-P<pid>`.
fn stale_name_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("circuit-X")?;
    let (id, pid) = rest.split_once("-P")?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

impl Drop for VarDir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
