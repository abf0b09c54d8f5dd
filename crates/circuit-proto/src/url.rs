//! Circuit URLs: `circuit://HOST:PORT/PID/X<16 hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::path::ServerId;

/// How to reach a server: its address, process id and server id.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CircuitUrl {
    /// `HOST:PORT` as given (an IPv6 host is in brackets).
    pub addr: String,
    /// The server's OS process id.
    pub pid: u32,
    /// The server's id.
    pub id: ServerId,
}

/// A string that is not a circuit URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a circuit URL: expected circuit://HOST:PORT/PID/X<16 hex>, as printed by `circuit start`")]
pub struct UrlError(pub String);

impl FromStr for CircuitUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<CircuitUrl, UrlError> {
        let bad = || UrlError(s.to_string());
        let rest = s.trim().strip_prefix("circuit://").ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(addr), Some(pid), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(CircuitUrl {
            addr: addr.to_string(),
            pid: pid.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for CircuitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit://{}/{}/{}", self.addr, self.pid, self.id)
    }
}

impl fmt::Debug for CircuitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = "circuit://127.0.0.1:21001/7231/X23f94ba89882514e";
        let u: CircuitUrl = s.parse().unwrap();
        assert_eq!(u.addr, "127.0.0.1:21001");
        assert_eq!(u.pid, 7231);
        assert_eq!(u.to_string(), s);
        let v6: CircuitUrl = "circuit://[::1]:80/1/X23f94ba89882514e".parse().unwrap();
        assert_eq!(v6.addr, "[::1]:80");
    }

    #[test]
    fn refuses() {
        for s in [
            "http://1.2.3.4:5/1/X23f94ba89882514e",
            "circuit://1.2.3.4/1/X23f94ba89882514e",
            "circuit://1.2.3.4:5/x/X23f94ba89882514e",
            "circuit://1.2.3.4:5/1/Q23f94ba89882514e",
            "circuit://1.2.3.4:5/1/X23f94ba89882514e/extra",
            "",
        ] {
            assert!(s.parse::<CircuitUrl>().is_err(), "{s}");
        }
    }
}
