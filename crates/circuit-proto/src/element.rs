//! Element kinds and their statuses, typed on the wire. JSON exists only at
//! the edges: [`ElementStat`] serializes to JSON as the bare status of its
//! kind (what `circuit peek` prints), and travels in postcard as a tagged enum.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerStat;
use crate::chan::ChanStat;
use crate::dns::DnsStat;
use crate::docker::DockerStat;
use crate::proc::ProcStat;
use crate::subscription::{SubscriptionSource, SubscriptionStat};
use crate::watch::WatchStat;

/// The kind of element an anchor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ElementKind {
    /// A server's root, `/X…`.
    Server,
    /// An OS process.
    Proc,
    /// A channel of byte messages.
    Chan,
    /// A watcher keeping copies of a command running.
    Watch,
    /// A membership subscription, `@join` or `@leave`.
    Subscription(SubscriptionSource),
    /// A docker container.
    Docker,
    /// A DNS server.
    Dns,
    /// A circuit breaker.
    Breaker,
}

impl ElementKind {
    /// The name `ls -l` shows: `server`, `proc`, `chan`, `watch`, `dns`, `breaker`, `@join`, `@leave`, `docker`.
    pub fn as_str(self) -> &'static str {
        match self {
            ElementKind::Server => "server",
            ElementKind::Proc => "proc",
            ElementKind::Chan => "chan",
            ElementKind::Watch => "watch",
            ElementKind::Subscription(s) => s.kind(),
            ElementKind::Docker => "docker",
            ElementKind::Dns => "dns",
            ElementKind::Breaker => "breaker",
        }
    }
}

impl fmt::Display for ElementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `peek` says of a server. The field order is the JSON key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStat {
    /// The server's circuit URL.
    pub addr: String,
    /// When it started, RFC 3339.
    pub joined: String,
    /// Its version.
    pub version: String,
    /// Elements it holds, itself included.
    pub elements: u64,
    /// Members of the cluster it sees.
    pub members: u64,
}

/// The status of an element, one variant per kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum ElementStat {
    /// A server.
    Server(ServerStat),
    /// A process.
    Proc(ProcStat),
    /// A channel.
    Chan(ChanStat),
    /// A watcher.
    Watch(Box<WatchStat>),
    /// A subscription.
    Subscription(SubscriptionStat),
    /// A docker container: the engine's inspect data.
    Docker(DockerStat),
    /// A DNS server.
    Dns(DnsStat),
    /// A circuit breaker.
    Breaker(BreakerStat),
}

impl ElementStat {
    /// The kind of element it describes.
    pub fn kind(&self) -> ElementKind {
        match self {
            ElementStat::Server(_) => ElementKind::Server,
            ElementStat::Proc(_) => ElementKind::Proc,
            ElementStat::Chan(_) => ElementKind::Chan,
            ElementStat::Watch(_) => ElementKind::Watch,
            ElementStat::Subscription(s) => ElementKind::Subscription(s.source),
            ElementStat::Docker(_) => ElementKind::Docker,
            ElementStat::Dns(_) => ElementKind::Dns,
            ElementStat::Breaker(_) => ElementKind::Breaker,
        }
    }

    /// The status as `circuit peek` prints it: the kind's own JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            ElementStat::Server(s) => serde_json::to_value(s),
            ElementStat::Proc(s) => serde_json::to_value(s),
            ElementStat::Chan(s) => serde_json::to_value(s),
            ElementStat::Watch(s) => serde_json::to_value(s),
            ElementStat::Subscription(s) => serde_json::to_value(s),
            ElementStat::Docker(s) => return s.json(),
            ElementStat::Dns(s) => serde_json::to_value(s),
            ElementStat::Breaker(s) => serde_json::to_value(s),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

// Tagged in postcard (the wire); the bare status in JSON (the edge).
impl Serialize for ElementStat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return match self {
                ElementStat::Server(v) => v.serialize(s),
                ElementStat::Proc(v) => v.serialize(s),
                ElementStat::Chan(v) => v.serialize(s),
                ElementStat::Watch(v) => v.serialize(s),
                ElementStat::Subscription(v) => v.serialize(s),
                ElementStat::Docker(v) => v.serialize(s),
                ElementStat::Dns(v) => v.serialize(s),
                ElementStat::Breaker(v) => v.serialize(s),
            };
        }
        match self {
            ElementStat::Server(v) => s.serialize_newtype_variant("ElementStat", 0, "Server", v),
            ElementStat::Proc(v) => s.serialize_newtype_variant("ElementStat", 1, "Proc", v),
            ElementStat::Chan(v) => s.serialize_newtype_variant("ElementStat", 2, "Chan", v),
            ElementStat::Watch(v) => s.serialize_newtype_variant("ElementStat", 3, "Watch", v),
            ElementStat::Subscription(v) => s.serialize_newtype_variant("ElementStat", 4, "Subscription", v),
            ElementStat::Docker(v) => s.serialize_newtype_variant("ElementStat", 5, "Docker", v),
            ElementStat::Dns(v) => s.serialize_newtype_variant("ElementStat", 6, "Dns", v),
            ElementStat::Breaker(v) => s.serialize_newtype_variant("ElementStat", 7, "Breaker", v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_is_tagged_and_json_is_bare() {
        let stat = ElementStat::Chan(ChanStat {
            cap: 3,
            closed: false,
            aborted: false,
            num_send: 1,
            num_recv: 0,
        });
        let bytes = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<ElementStat>(&bytes).unwrap(), stat);
        assert_eq!(
            serde_json::to_string(&stat).unwrap(),
            r#"{"Cap":3,"Closed":false,"Aborted":false,"NumSend":1,"NumRecv":0}"#
        );
        assert_eq!(stat.to_json(), serde_json::to_value(&stat).unwrap());
        assert_eq!(stat.kind().to_string(), "chan");
        assert_eq!(
            ElementKind::Subscription(SubscriptionSource::Leave).to_string(),
            "@leave"
        );
    }
}
