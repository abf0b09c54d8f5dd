//! The DNS element: what a client asks of one and what `peek` says of one.
//! Records travel as text in zone-file syntax; the server parses them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Records one DNS element holds at most.
pub const MAX_RECORDS: usize = 100_000;

/// Longest record text `set` takes, in bytes.
pub const MAX_RECORD_TEXT: usize = 16 * 1024;

/// Operations on a DNS element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DnsOp {
    /// Start a DNS server (UDP and TCP on one port) and hold it at the path.
    Make(DnsSpec),
    /// Add one record, in zone-file syntax (`miek.nl. 3600 IN MX 10 mx.miek.nl.`).
    Set(String),
    /// Remove every record of a name (case-insensitive, trailing dot optional).
    Unset(String),
    /// Replace the whole record set at once (the config file's reload): all
    /// the records are checked first, and nothing changes if one is bad.
    Replace(Vec<String>),
}

/// What makes a DNS element: where it listens and its first records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSpec {
    /// `IP`, `IP:PORT` or `:PORT`; `None` (or an empty string) binds the
    /// server's own IP on a free port.
    pub addr: Option<String>,
    /// Records in zone-file syntax, one each.
    pub records: Vec<String>,
}

/// What `peek` says of a DNS element: `{"Address": "IP:PORT", "Records":
/// {name: [record text, …]}}`, names in lower case and sorted, records in
/// the order they were set, as `name\tTTL\tclass\ttype\tdata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsStat {
    /// Where it listens, UDP and TCP.
    pub address: String,
    /// Its records by owner name.
    pub records: BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_originals() {
        let mut s = DnsStat {
            address: "127.0.0.1:7711".into(),
            records: BTreeMap::new(),
        };
        s.records
            .insert("miek.nl.".into(), vec!["miek.nl.\t3600\tIN\tMX\t10 mx.miek.nl.".into()]);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"Address":"127.0.0.1:7711","Records":{"miek.nl.":["miek.nl.\t3600\tIN\tMX\t10 mx.miek.nl."]}}"#
        );
        let op = DnsOp::Make(DnsSpec {
            addr: Some(":53".into()),
            records: vec![],
        });
        let bytes = postcard::to_stdvec(&op).unwrap();
        assert_eq!(postcard::from_bytes::<DnsOp>(&bytes).unwrap(), op);
    }
}
