//! The process element's types, shared by the server and the client: what
//! to run ([`ProcSpec`], carried in postcard on the wire) and what it is doing
//! ([`ProcStat`], sent as JSON by `peek` and `wait`).
//!
//! Field names are PascalCase in JSON, as in the original tool's output.
//! Only renames are used, so the types also round-trip through postcard.

use serde::{Deserialize, Serialize};

/// What to run: `argv = [path] + args`, in `dir`, with `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcSpec {
    /// `NAME=VALUE` entries; empty means the server's own environment.
    pub env: Vec<String>,
    /// Working directory; empty means the server's.
    pub dir: String,
    /// The program: an absolute path, or a name looked up in `PATH`.
    pub path: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Remove the element once the process has exited.
    pub scrub: bool,
}

impl ProcSpec {
    /// A spec that runs `path` with `args` in the server's environment.
    pub fn new<I, S>(path: impl Into<String>, args: I) -> ProcSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProcSpec {
            path: path.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..ProcSpec::default()
        }
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcPhase {
    /// Started and not (yet) seen to stop or end.
    Running,
    /// Ended by calling exit; see [`ProcExit::code`].
    Exited,
    /// Ended by a signal; see [`ProcExit::signal`].
    Signaled,
    /// Stopped by a signal (SIGSTOP, SIGTSTP, …).
    Stopped,
    /// Resumed by SIGCONT after a stop.
    Continued,
    /// Never started (see [`ProcExit::error`]), or lost track of.
    Unknown,
}

impl ProcPhase {
    /// True once the process will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, ProcPhase::Exited | ProcPhase::Signaled | ProcPhase::Unknown)
    }

    /// The name shown in `peek`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcPhase::Running => "running",
            ProcPhase::Exited => "exited",
            ProcPhase::Signaled => "signaled",
            ProcPhase::Stopped => "stopped",
            ProcPhase::Continued => "continued",
            ProcPhase::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ProcPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended (or why it never started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcExit {
    /// The exit status; -1 when killed by a signal or never started (as Go's
    /// `ExitCode()`).
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Why it could not be started, or was lost track of.
    pub error: Option<String>,
}

/// The status of a process element, as `peek` and `wait` print it.
/// Keys come out in this order: Cmd, Phase, Pid, Exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcStat {
    /// The spec it was made with.
    pub cmd: ProcSpec,
    /// Where it is in its life.
    pub phase: ProcPhase,
    /// Its OS process id; `None` if it never started.
    pub pid: Option<u32>,
    /// How it ended; `None` while it has not.
    pub exit: Option<ProcExit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_json_order_and_round_trips() {
        let stat = ProcStat {
            cmd: ProcSpec::new("/bin/ls", ["/"]),
            phase: ProcPhase::Signaled,
            pid: Some(42),
            exit: Some(ProcExit {
                code: -1,
                signal: Some(15),
                error: None,
            }),
        };
        let json = serde_json::to_string(&stat).unwrap();
        assert_eq!(
            json,
            r#"{"Cmd":{"Env":[],"Dir":"","Path":"/bin/ls","Args":["/"],"Scrub":false},"Phase":"signaled","Pid":42,"Exit":{"Code":-1,"Signal":15,"Error":null}}"#
        );
        assert_eq!(serde_json::from_str::<ProcStat>(&json).unwrap(), stat);
        let wire = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<ProcStat>(&wire).unwrap(), stat);
        assert!(ProcPhase::Exited.is_final() && !ProcPhase::Stopped.is_final());
    }
}
