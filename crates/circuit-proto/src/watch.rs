//! The watch element's types, shared by the server and the client: what to
//! keep running ([`WatchSpec`], postcard on the wire), how to control it
//! ([`WatchAction`], [`ScaleOp`]) and what `peek` says of it ([`WatchStat`],
//! JSON with PascalCase names).

use serde::{Deserialize, Serialize};

/// Flapping detection: more than `attempts` restarts within `window` seconds
/// pause the watcher for `retry_in` seconds, at most `max_retry` times; the
/// next flap stops it for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlappingSpec {
    /// Restarts tolerated within the window.
    pub attempts: u32,
    /// The window, in seconds.
    pub window: f64,
    /// The pause after a flap, in seconds.
    pub retry_in: f64,
    /// Pauses before the watcher stops for good.
    pub max_retry: u32,
}

impl Default for FlappingSpec {
    /// Circus's defaults: 2 restarts within 1 s, retry in 7 s, 5 retries.
    fn default() -> Self {
        FlappingSpec {
            attempts: 2,
            window: 1.0,
            retry_in: 7.0,
            max_retry: 5,
        }
    }
}

/// What a watcher keeps running: `num_processes` copies of
/// `argv = [path] + args`. `$(WID)` in `args` and `env` becomes the 1-based
/// slot number of each copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchSpec {
    /// The program: an absolute path, or a name looked up in `PATH`.
    pub path: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// `NAME=VALUE` entries, added to the server's environment (or, with
    /// `inherit_env` false, the whole environment).
    pub env: Vec<String>,
    /// Working directory; empty means the server's.
    pub dir: String,
    /// Copies to keep running.
    pub num_processes: u32,
    /// Replace a process that exits.
    pub respawn: bool,
    /// Seconds to wait before respawning a process that exited.
    pub warmup_delay: f64,
    /// Seconds between the stop signal and SIGKILL.
    pub graceful_timeout: f64,
    /// The signal that asks a process to stop (`TERM`, `INT`, `15`, …).
    pub stop_signal: String,
    /// Seconds after which a process is recycled (replaced); 0 turns it off.
    pub max_age: f64,
    /// Flapping detection.
    pub flapping: FlappingSpec,
    /// Listening sockets the server binds once, for every process of the
    /// watcher to inherit.
    #[serde(default)]
    pub sockets: Vec<SocketSpec>,
    /// Where the processes' stdout goes.
    #[serde(default)]
    pub stdout: OutputSpec,
    /// Where the processes' stderr goes.
    #[serde(default)]
    pub stderr: OutputSpec,
    /// Run the processes as this user (a name or a number); empty: the server's.
    #[serde(default)]
    pub uid: String,
    /// Run the processes with this group (a name or a number); empty: the server's.
    #[serde(default)]
    pub gid: String,
    /// Resource limits set in each process (soft and hard), by name without
    /// `RLIMIT_`: `NOFILE`, `NPROC`, `CORE`, …
    #[serde(default)]
    pub rlimits: std::collections::BTreeMap<String, u64>,
    /// Start from the server's environment (then add `env`); false: only `env`.
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Commands the server runs around starts and stops.
    #[serde(default)]
    pub hooks: HooksSpec,
}

fn yes() -> bool {
    true
}

/// Where a stream of the watcher's processes goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum OutputSpec {
    /// Nowhere (`/dev/null`).
    #[default]
    Discard,
    /// A file (`$(WID)` allowed in its path), rotated by size.
    File(FileOutput),
    /// The last so many bytes of each process, in memory, for `circuit stdout`.
    Ring(u64),
}

/// A log file with size rotation: when a write would take `path` past
/// `max_bytes`, `path` becomes `path.1`, `path.1` becomes `path.2`, … up to
/// `path.BACKUPS`, and the oldest is dropped. `max_bytes` 0: never rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileOutput {
    /// The file; `$(WID)` becomes the slot number.
    pub path: String,
    /// Size at which the file is rotated; 0 means never.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub backups: u32,
}

/// Commands (argv) the server runs around a watcher's processes; empty: none.
/// Each runs with `CIRCUIT_WATCH` (the watcher's path) and `CIRCUIT_WID`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HooksSpec {
    /// Before a process starts; failing (non-zero exit) aborts that start.
    pub before_start: Vec<String>,
    /// After a process has started.
    pub after_start: Vec<String>,
    /// Before a process is sent its stop signal.
    pub before_stop: Vec<String>,
    /// After a process the watcher stopped has ended.
    pub after_stop: Vec<String>,
}

impl Default for WatchSpec {
    fn default() -> Self {
        WatchSpec {
            path: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            dir: String::new(),
            num_processes: 1,
            respawn: true,
            warmup_delay: 0.0,
            graceful_timeout: 30.0,
            stop_signal: "TERM".into(),
            max_age: 0.0,
            flapping: FlappingSpec::default(),
            sockets: Vec::new(),
            stdout: OutputSpec::Discard,
            stderr: OutputSpec::Discard,
            uid: String::new(),
            gid: String::new(),
            rlimits: Default::default(),
            inherit_env: true,
            hooks: HooksSpec::default(),
        }
    }
}

impl WatchSpec {
    /// A spec that keeps one copy of `path` with `args` running, with every
    /// other field at its default.
    pub fn new<I, S>(path: impl Into<String>, args: I) -> WatchSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WatchSpec {
            path: path.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..WatchSpec::default()
        }
    }
}

/// A listening socket of a watcher (Circus's sockets): bound by the server
/// when the watcher is made, kept open for its life, and inherited by each
/// of its processes, which find its descriptor number in
/// `$(socket.NAME.fd)`. TCP on `host:port`, or a unix stream socket at
/// `path` when that is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SocketSpec {
    /// The name in `$(socket.NAME.fd)`: letters, digits, `_` and `-`.
    pub name: String,
    /// TCP: the address or host name to bind (default 127.0.0.1).
    pub host: String,
    /// TCP: the port; 0 picks a free one (`peek` shows which).
    pub port: u16,
    /// Unix: the socket file's path; when set, `host` and `port` are unused.
    pub path: String,
    /// Connections queued while no process accepts (default 128).
    pub backlog: u32,
    /// Sets SO_REUSEPORT, so that other sockets may bind the same port.
    pub reuseport: bool,
}

impl Default for SocketSpec {
    fn default() -> Self {
        SocketSpec {
            name: String::new(),
            host: "127.0.0.1".into(),
            port: 0,
            path: String::new(),
            backlog: 128,
            reuseport: false,
        }
    }
}

/// A bound socket of a watcher, as `peek` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SocketStat {
    /// Its name.
    pub name: String,
    /// What it is bound to: `IP:PORT` (the actual port), or the unix path.
    pub address: String,
    /// The descriptor number its processes get (`$(socket.NAME.fd)`).
    pub fd: i32,
}

/// `watch start|stop|restart|reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchAction {
    /// Start the missing processes (also after a flap gave up).
    Start,
    /// Stop every process gracefully; none is respawned until `Start`.
    Stop,
    /// Stop every process gracefully, then start each slot again once its old
    /// process has exited.
    Restart,
    /// Start new processes first, then stop the old ones gracefully.
    Reload,
}

impl WatchAction {
    /// The word on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WatchAction::Start => "start",
            WatchAction::Stop => "stop",
            WatchAction::Restart => "restart",
            WatchAction::Reload => "reload",
        }
    }
}

impl std::str::FromStr for WatchAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "start" => Ok(WatchAction::Start),
            "stop" => Ok(WatchAction::Stop),
            "restart" => Ok(WatchAction::Restart),
            "reload" => Ok(WatchAction::Reload),
            _ => Err(format!(
                "unknown watch action {s:?}; give start, stop, restart or reload"
            )),
        }
    }
}

/// A change (or a reading) of a watcher's process count. The answer is
/// always the count after the change, as JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleOp {
    /// Read the count.
    Get,
    /// Set the count.
    Set(u32),
    /// Add to the count.
    Incr(u32),
    /// Subtract from the count (not below 0).
    Decr(u32),
}

/// Where a watcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchState {
    /// Keeping its processes running.
    Active,
    /// Stopped, by request or because flapping retries ran out.
    Stopped,
    /// Paused after flapping; it starts again by itself.
    Flapping,
}

/// One process of a watcher, as `peek` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchProcStat {
    /// Its 1-based slot number.
    pub wid: u32,
    /// Its OS process id.
    pub pid: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How many times its slot was respawned.
    pub restarts: u32,
    /// CPU use since the previous peek (or since it started), in percent of
    /// one core.
    pub cpu_percent: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

/// What `peek` says of a watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchStat {
    /// The spec, with the current process count.
    pub spec: WatchSpec,
    /// Where the watcher is.
    pub state: WatchState,
    /// Flapping pauses so far.
    pub retries: u32,
    /// Its running processes (not those being stopped), by slot.
    pub processes: Vec<WatchProcStat>,
    /// Its sockets, with their actual addresses.
    #[serde(default)]
    pub sockets: Vec<SocketStat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_postcard() {
        let stat = WatchStat {
            spec: WatchSpec::new("/bin/sleep", ["60"]),
            state: WatchState::Flapping,
            retries: 1,
            processes: vec![WatchProcStat {
                wid: 1,
                pid: 42,
                started_at: "2026-01-01T00:00:00Z".into(),
                restarts: 0,
                cpu_percent: 0.5,
                rss_bytes: 4096,
            }],
            sockets: vec![SocketStat {
                name: "web".into(),
                address: "127.0.0.1:8080".into(),
                fd: 7,
            }],
        };
        let json = serde_json::to_string(&stat).unwrap();
        assert!(
            json.starts_with(r#"{"Spec":{"Path":"/bin/sleep","Args":["60"]"#),
            "{json}"
        );
        assert!(json.contains(r#""State":"flapping","Retries":1,"Processes":[{"Wid":1,"Pid":42,"StartedAt""#));
        assert!(json.contains(r#""Flapping":{"Attempts":2,"Window":1.0,"RetryIn":7.0,"MaxRetry":5}"#));
        assert!(
            json.contains(r#""Sockets":[{"Name":"web","Address":"127.0.0.1:8080","Fd":7}]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<WatchStat>(&json).unwrap(), stat);
        let wire = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<WatchStat>(&wire).unwrap(), stat);
        assert_eq!("Reload".parse::<WatchAction>().unwrap(), WatchAction::Reload);
        assert!("nope".parse::<WatchAction>().is_err());
    }
}
