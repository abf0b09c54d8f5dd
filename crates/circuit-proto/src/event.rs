//! Cluster events ([`crate::AnchorOp::Events`]) and their JSON shape.
//!
//! On the wire an [`Event`] is a postcard frame. At the command line's edge
//! it is one JSON object per line ([`Event::to_json`]), always starting with
//! the same four keys:
//!
//! ```text
//! {"Time":"2026-11-24T15:40:00.123456Z","Server":"X…","Path":"/X…/a","Event":"created","Kind":"proc"}
//! {"Time":…,"Server":…,"Path":"/X…/a","Event":"spawned","Pid":1234}
//! {"Time":…,"Server":…,"Path":"/X…/a","Event":"exited","Pid":1234,"Phase":"exited","Code":3,"Signal":null}
//! {"Time":…,"Server":…,"Path":"/X…/a","Event":"scrubbed","Kind":"proc"}
//! {"Time":…,"Server":…,"Path":"/X…","Event":"joined"}
//! {"Time":…,"Server":…,"Path":"/X…","Event":"left"}
//! {"Time":…,"Server":…,"Path":"/","Event":"lost","Count":12}
//! {"Time":…,"Server":…,"Path":"/X…/b","Event":"transition","Key":"t1","From":"closed","To":"open","Generation":1}
//! ```
//!
//! - `Time`: when the server that reports the event saw it (RFC 3339, UTC).
//! - `Server`: the id of that server (`X` + 16 hex digits).
//! - `Path`: the element the event is about; for `joined`/`left`, the root
//!   `/X…` of the server that joined or left (reported by the server the
//!   stream was opened on); for `lost`, the path the stream was asked for.
//! - `Event`: what happened; the other keys depend on it. An element kind's
//!   own events (watchers: `respawned`, `flapping`, …) are typed per kind
//!   ([`WatchEvent`]) and carry their own keys after `Event`.

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerEvent;
use crate::path::{Path, ServerId};
use crate::proc::ProcPhase;

/// One thing that happened on a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, RFC 3339 (UTC), by the clock of the reporting server.
    pub time: String,
    /// The server that reports it.
    pub server: ServerId,
    /// The element (or server) it is about.
    pub path: Path,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with what there is to say about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// An element was placed at the path; `kind` is what `ls -l` shows.
    Created { kind: String },
    /// The element at the path was removed.
    Scrubbed { kind: String },
    /// A process was started.
    Spawned { pid: u32 },
    /// A process ended: `phase` is `exited` (see `code`), `signaled` (see
    /// `signal`) or `unknown` (lost track of it).
    Exited {
        pid: Option<u32>,
        phase: ProcPhase,
        code: i32,
        signal: Option<i32>,
    },
    /// The server at the path joined the cluster.
    Joined,
    /// The server at the path left the cluster (or was declared dead).
    Left,
    /// `count` events were dropped because this stream's reader (or a
    /// server on the way) fell behind.
    Lost { count: u64 },
    /// A watcher's own events.
    Watch(WatchEvent),
    /// A breaker's own events (its transitions).
    Breaker(BreakerEvent),
}

/// What a watcher reports beyond `spawned`/`exited` of its processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// Slot `wid` is started again in `in_secs` (its `restarts`-th restart).
    Respawned { wid: u32, restarts: u32, in_secs: f64 },
    /// Slot `wid` could not be started.
    SpawnFailed { wid: u32, error: String },
    /// Process `pid` did not stop within the graceful timeout: SIGKILL.
    Killed { pid: u32, reason: String },
    /// Too many restarts in the window: paused for `retry_in` seconds, or,
    /// with `retry_in` `None`, stopped for good (no retry left).
    Flapping { retries: u32, retry_in: Option<f64> },
    /// The flapping pause is over.
    Resumed { retries: u32 },
    /// Process `pid` of slot `wid` reached MaxAge and is replaced.
    Recycled { wid: u32, pid: u32 },
    /// `watch start|stop|restart|reload` was asked.
    Control { action: String },
    /// The process count changed.
    NumProcs { from: u32, to: u32 },
    /// A hook failed.
    HookFailed { hook: String, wid: u32, error: String },
}

impl WatchEvent {
    /// The value of the `Event` key.
    pub fn name(&self) -> &'static str {
        match self {
            WatchEvent::Respawned { .. } => "respawned",
            WatchEvent::SpawnFailed { .. } => "spawnfailed",
            WatchEvent::Killed { .. } => "killed",
            WatchEvent::Flapping { .. } => "flapping",
            WatchEvent::Resumed { .. } => "resumed",
            WatchEvent::Recycled { .. } => "recycled",
            WatchEvent::Control { .. } => "control",
            WatchEvent::NumProcs { .. } => "numprocs",
            WatchEvent::HookFailed { .. } => "hookfailed",
        }
    }

    /// Its keys after `Event`, in order.
    fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        match self {
            WatchEvent::Respawned { wid, restarts, in_secs } => {
                vec![
                    ("Wid", json!(wid)),
                    ("Restarts", json!(restarts)),
                    ("In", json!(in_secs)),
                ]
            }
            WatchEvent::SpawnFailed { wid, error } => vec![("Wid", json!(wid)), ("Error", json!(error))],
            WatchEvent::Killed { pid, reason } => vec![("Pid", json!(pid)), ("Reason", json!(reason))],
            WatchEvent::Flapping {
                retries,
                retry_in: Some(t),
            } => {
                vec![
                    ("State", json!("paused")),
                    ("Retries", json!(retries)),
                    ("RetryIn", json!(t)),
                ]
            }
            WatchEvent::Flapping {
                retries,
                retry_in: None,
            } => {
                vec![("State", json!("stopped")), ("Retries", json!(retries))]
            }
            WatchEvent::Resumed { retries } => vec![("Retries", json!(retries))],
            WatchEvent::Recycled { wid, pid } => vec![("Wid", json!(wid)), ("Pid", json!(pid))],
            WatchEvent::Control { action } => vec![("Action", json!(action))],
            WatchEvent::NumProcs { from, to } => vec![("From", json!(from)), ("To", json!(to))],
            WatchEvent::HookFailed { hook, wid, error } => {
                vec![("Hook", json!(hook)), ("Wid", json!(wid)), ("Error", json!(error))]
            }
        }
    }
}

impl EventKind {
    /// The value of the `Event` key.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::Scrubbed { .. } => "scrubbed",
            EventKind::Spawned { .. } => "spawned",
            EventKind::Exited { .. } => "exited",
            EventKind::Joined => "joined",
            EventKind::Left => "left",
            EventKind::Lost { .. } => "lost",
            EventKind::Watch(w) => w.name(),
            EventKind::Breaker(b) => b.name(),
        }
    }
}

impl Event {
    /// True if the event is about `prefix` or something below it (`/`
    /// takes everything).
    pub fn is_under(&self, prefix: &Path) -> bool {
        is_under(&self.path, prefix)
    }

    /// The event's JSON keys and values, in their order (see the module
    /// docs for the shape).
    pub fn fields(&self) -> Vec<(String, serde_json::Value)> {
        use serde_json::{Value, json};
        let mut m: Vec<(String, Value)> = vec![
            ("Time".into(), json!(self.time)),
            ("Server".into(), json!(self.server.to_string())),
            ("Path".into(), json!(self.path.to_string())),
            ("Event".into(), json!(self.kind.name())),
        ];
        match &self.kind {
            EventKind::Created { kind } | EventKind::Scrubbed { kind } => m.push(("Kind".into(), json!(kind))),
            EventKind::Spawned { pid } => m.push(("Pid".into(), json!(pid))),
            EventKind::Exited {
                pid,
                phase,
                code,
                signal,
            } => {
                m.push(("Pid".into(), json!(pid)));
                m.push(("Phase".into(), json!(phase.as_str())));
                m.push(("Code".into(), json!(code)));
                m.push(("Signal".into(), json!(signal)));
            }
            EventKind::Joined | EventKind::Left => {}
            EventKind::Lost { count } => m.push(("Count".into(), json!(count))),
            EventKind::Watch(w) => m.extend(w.fields().into_iter().map(|(k, v)| (k.to_string(), v))),
            EventKind::Breaker(b) => m.extend(b.fields().into_iter().map(|(k, v)| (k.to_string(), v))),
        }
        m
    }

    /// The event as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.fields().into_iter().collect())
    }

    /// The event as one line of JSON text, keys in the documented order,
    /// without the newline.
    pub fn to_json_line(&self) -> String {
        let body: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

/// True if `path` is `prefix` or below it; everything is below `/`.
pub fn is_under(path: &Path, prefix: &Path) -> bool {
    prefix.is_root() || (path.server_id() == prefix.server_id() && path.names().starts_with(prefix.names()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(path: &str, kind: EventKind) -> Event {
        Event {
            time: "2026-11-24T15:40:00Z".into(),
            server: ServerId(1),
            path: path.parse().unwrap(),
            kind,
        }
    }

    #[test]
    fn subtree_filter() {
        let p = |s: &str| s.parse::<Path>().unwrap();
        let e = ev("/X0000000000000001/web/a", EventKind::Spawned { pid: 7 });
        assert!(e.is_under(&Path::root()));
        assert!(e.is_under(&p("/X0000000000000001")));
        assert!(e.is_under(&p("/X0000000000000001/web")));
        assert!(e.is_under(&p("/X0000000000000001/web/a")));
        assert!(!e.is_under(&p("/X0000000000000001/web/a/b")));
        assert!(!e.is_under(&p("/X0000000000000001/we")));
        assert!(!e.is_under(&p("/X0000000000000001/db")));
        assert!(!e.is_under(&p("/X0000000000000002")));
        assert!(!e.is_under(&p("/X0000000000000002/web")));
        let join = ev("/X0000000000000002", EventKind::Joined);
        assert!(join.is_under(&Path::root()));
        assert!(!join.is_under(&p("/X0000000000000001")));
    }

    #[test]
    fn json_shape() {
        let line = ev(
            "/X0000000000000001/a",
            EventKind::Exited {
                pid: Some(9),
                phase: ProcPhase::Signaled,
                code: -1,
                signal: Some(9),
            },
        )
        .to_json_line();
        assert_eq!(
            line,
            r#"{"Time":"2026-11-24T15:40:00Z","Server":"X0000000000000001","Path":"/X0000000000000001/a","Event":"exited","Pid":9,"Phase":"signaled","Code":-1,"Signal":9}"#
        );
        let v = ev("/X0000000000000001/a", EventKind::Created { kind: "proc".into() }).to_json();
        assert_eq!(
            (v["Event"].as_str(), v["Kind"].as_str()),
            (Some("created"), Some("proc"))
        );
        let v = ev("/", EventKind::Lost { count: 3 }).to_json();
        assert_eq!((v["Event"].as_str(), v["Count"].as_u64()), (Some("lost"), Some(3)));
        let v = ev("/X0000000000000002", EventKind::Joined).to_json();
        assert_eq!(v.as_object().unwrap().len(), 4);
        // A kind's own events: their fields follow, in order.
        let kind = EventKind::Watch(WatchEvent::Respawned {
            wid: 2,
            restarts: 5,
            in_secs: 0.5,
        });
        let v = ev("/X0000000000000001/w", kind.clone()).to_json();
        assert_eq!(v["Event"], "respawned");
        assert_eq!((v["Restarts"].as_u64(), v["Wid"].as_u64()), (Some(5), Some(2)));
        assert_eq!(v["Path"], "/X0000000000000001/w");
        let line = ev(
            "/X0000000000000001/w",
            EventKind::Watch(WatchEvent::Flapping {
                retries: 1,
                retry_in: None,
            }),
        )
        .to_json_line();
        assert!(
            line.ends_with(r#""Event":"flapping","State":"stopped","Retries":1}"#),
            "{line}"
        );
        // The line is the object, keys in order.
        let e = ev("/X0000000000000001/w", kind.clone());
        let parsed: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(parsed, e.to_json());
        assert!(e.to_json_line().starts_with(r#"{"Time":"#));
        // Every kind round-trips through the wire format.
        for k in [
            kind,
            EventKind::Joined,
            EventKind::Lost { count: 1 },
            EventKind::Spawned { pid: 1 },
        ] {
            let e = ev("/X0000000000000001/w", k);
            let wire = postcard::to_stdvec(&e).unwrap();
            assert_eq!(postcard::from_bytes::<Event>(&wire).unwrap(), e);
        }
    }
}
