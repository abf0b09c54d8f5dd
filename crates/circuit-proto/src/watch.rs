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
    /// `NAME=VALUE` entries; empty means the server's own environment.
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
        };
        let json = serde_json::to_string(&stat).unwrap();
        assert!(
            json.starts_with(r#"{"Spec":{"Path":"/bin/sleep","Args":["60"]"#),
            "{json}"
        );
        assert!(json.contains(r#""State":"flapping","Retries":1,"Processes":[{"Wid":1,"Pid":42,"StartedAt""#));
        assert!(json.contains(r#""Flapping":{"Attempts":2,"Window":1.0,"RetryIn":7.0,"MaxRetry":5}"#));
        assert_eq!(serde_json::from_str::<WatchStat>(&json).unwrap(), stat);
        let wire = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<WatchStat>(&wire).unwrap(), stat);
        assert_eq!("Reload".parse::<WatchAction>().unwrap(), WatchAction::Reload);
        assert!("nope".parse::<WatchAction>().is_err());
    }
}
