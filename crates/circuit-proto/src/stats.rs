//! What [`crate::AnchorOp::Stats`] answers ([`crate::Reply::Stats`]), shown as JSON:
//!
//! ```text
//! {"Servers": [
//!   {"Server": "X…", "Pid": 4242, "Uptime": 12.5, "Cpu": 0.1, "Rss": 5242880, "Error": null,
//!    "Processes": [{"Path": "/X…/a", "Pid": 4250, "Label": "", "Uptime": 3.0, "Cpu": 99.5, "Rss": 1048576}]}
//! ]}
//! ```
//!
//! `Cpu` is percent of one CPU over a short sample the server takes when
//! asked ([`SAMPLE_MS`]); `Rss` is resident memory in bytes; `Uptime` is in
//! seconds. A member that could not answer is listed with `Error` set.

use serde::{Deserialize, Serialize};

/// Length of the CPU sample a server takes for each `stats` request, in ms.
pub const SAMPLE_MS: u64 = 200;

/// Statistics of a set of servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterStats {
    /// One entry per server, sorted by id.
    pub servers: Vec<ServerStats>,
}

/// One server: its own process, and the processes of its elements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStats {
    /// The server id, `X…`.
    pub server: String,
    /// The server's OS process id.
    pub pid: u32,
    /// Seconds since the server started.
    pub uptime: f64,
    /// CPU use of the server process, percent of one CPU.
    pub cpu: f64,
    /// Resident memory of the server process, bytes.
    pub rss: u64,
    /// Why the server could not answer (then the rest is empty).
    #[serde(default)]
    pub error: Option<String>,
    /// Processes of the elements asked for, sorted by path then label.
    #[serde(default)]
    pub processes: Vec<ProcessStats>,
}

/// One process of an element (a `proc`, or a process of a watcher).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessStats {
    /// The element's path.
    pub path: String,
    /// OS process id.
    pub pid: u32,
    /// Which process of the element (e.g. a watcher's slot); empty for a proc.
    #[serde(default)]
    pub label: String,
    /// Seconds since the process started.
    pub uptime: f64,
    /// CPU use, percent of one CPU, over the sample.
    pub cpu: f64,
    /// Resident memory, bytes.
    pub rss: u64,
}
