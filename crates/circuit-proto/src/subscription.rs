//! Membership subscriptions (`@join`, `@leave`): what a client names when it
//! makes one, and what `peek` says of one.

use serde::{Deserialize, Serialize};

/// Which membership events a subscription delivers. On the wire (postcard)
/// it is a variant index; in JSON it is `"join"` or `"leave"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionSource {
    /// Servers that joined the cluster (`@join`).
    Join,
    /// Servers that left the cluster or were declared dead (`@leave`).
    Leave,
}

impl SubscriptionSource {
    /// The word in `peek`'s `Source` field: `join` or `leave`.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionSource::Join => "join",
            SubscriptionSource::Leave => "leave",
        }
    }

    /// The element kind `ls -l` shows: `@join` or `@leave`.
    pub fn kind(self) -> &'static str {
        match self {
            SubscriptionSource::Join => "@join",
            SubscriptionSource::Leave => "@leave",
        }
    }

    /// The command that makes one: `mk@join` or `mk@leave`.
    pub fn verb(self) -> &'static str {
        match self {
            SubscriptionSource::Join => "mk@join",
            SubscriptionSource::Leave => "mk@leave",
        }
    }
}

impl std::fmt::Display for SubscriptionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `peek` says of a subscription. The field order is the JSON key
/// order: `{"Source", "Pending", "Dropped", "Closed"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionStat {
    /// Which events it delivers.
    pub source: SubscriptionSource,
    /// Events waiting for a receiver.
    pub pending: u64,
    /// Events lost because nobody received them in time: the oldest ones
    /// beyond the buffer, and any the server itself fell behind on.
    pub dropped: u64,
    /// No more events will come: the element was scrubbed or its server is
    /// stopping. Pending events can still be received (unless scrubbed).
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_wire() {
        let s = SubscriptionStat {
            source: SubscriptionSource::Leave,
            pending: 2,
            dropped: 7,
            closed: false,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"Source":"leave","Pending":2,"Dropped":7,"Closed":false}"#);
        assert_eq!(serde_json::from_str::<SubscriptionStat>(&json).unwrap(), s);
        for src in [SubscriptionSource::Join, SubscriptionSource::Leave] {
            let bytes = postcard::to_allocvec(&src).unwrap();
            assert_eq!(postcard::from_bytes::<SubscriptionSource>(&bytes).unwrap(), src);
        }
        assert_eq!(SubscriptionSource::Join.kind(), "@join");
        assert_eq!(SubscriptionSource::Leave.verb(), "mk@leave");
    }
}
