//! Server ids and anchor paths: `/X<16 hex>/name/name...`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest anchor name, in bytes.
pub const MAX_NAME: usize = 255;

/// A server's random 64-bit identity, shown as `X` + 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerId(pub u64);

impl ServerId {
    /// A fresh id from the OS random source.
    pub fn random() -> ServerId {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("OS random source");
        ServerId(u64::from_le_bytes(b))
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X{:016x}", self.0)
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ServerId {
    type Err = PathError;
    fn from_str(s: &str) -> Result<ServerId, PathError> {
        let bad = || PathError::ServerId(s.to_string());
        let hex = s.strip_prefix('X').ok_or_else(bad)?;
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u64::from_str_radix(hex, 16).map(ServerId).map_err(|_| bad())
    }
}

/// Why a path or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} must start with /")]
    NotAbsolute(String),
    #[error("{0:?} is not a server id: expected X followed by 16 hex digits, as listed by `circuit ls /`")]
    ServerId(String),
    #[error("anchor name {0:?} is invalid: use 1-255 bytes of A-Z a-z 0-9 . _ @ - (not only dots)")]
    Name(String),
}

/// Checks one anchor name: 1-255 bytes of `[A-Za-z0-9._@-]`, not made only of dots.
pub fn check_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        && !name.bytes().all(|b| b == b'.');
    if ok {
        Ok(())
    } else {
        Err(PathError::Name(name.to_string()))
    }
}

/// An absolute anchor path. The root `/` has no server; every other path
/// starts with the id of the server that hosts it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Path {
    server: Option<ServerId>,
    names: Vec<String>,
}

impl Path {
    /// The cluster root, `/`.
    pub fn root() -> Path {
        Path {
            server: None,
            names: Vec::new(),
        }
    }

    /// The root anchor of one server, `/X…`.
    pub fn server(id: ServerId) -> Path {
        Path {
            server: Some(id),
            names: Vec::new(),
        }
    }

    /// The server that hosts this path; `None` for `/`.
    pub fn server_id(&self) -> Option<ServerId> {
        self.server
    }

    /// The names below the server component.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.server.is_none()
    }

    /// True for `/X…` itself.
    pub fn is_server_root(&self) -> bool {
        self.server.is_some() && self.names.is_empty()
    }

    /// This path with one more name; `name` is checked.
    pub fn child(&self, name: &str) -> Result<Path, PathError> {
        let Some(_) = self.server else {
            let id: ServerId = name.parse()?;
            return Ok(Path::server(id));
        };
        check_name(name)?;
        let mut p = self.clone();
        p.names.push(name.to_string());
        Ok(p)
    }
}

impl FromStr for Path {
    type Err = PathError;
    /// Parses `/X…/a/b`; repeated slashes are ignored, as in the original.
    fn from_str(s: &str) -> Result<Path, PathError> {
        if !s.starts_with('/') {
            return Err(PathError::NotAbsolute(s.to_string()));
        }
        let mut parts = s.split('/').filter(|p| !p.is_empty());
        let Some(first) = parts.next() else {
            return Ok(Path::root());
        };
        let server = Some(first.parse()?);
        let names = parts
            .map(|n| check_name(n).map(|_| n.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Path { server, names })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.server {
            None => f.write_str("/"),
            Some(id) => {
                write!(f, "/{id}")?;
                for n in &self.names {
                    write!(f, "/{n}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: Path = "/X00000000000000ff/a/b.c/@join".parse().unwrap();
        assert_eq!(p.server_id(), Some(ServerId(255)));
        assert_eq!(p.names(), ["a", "b.c", "@join"]);
        assert_eq!(p.to_string(), "/X00000000000000ff/a/b.c/@join");
        assert_eq!(
            "//X00000000000000ff//a/".parse::<Path>().unwrap().to_string(),
            "/X00000000000000ff/a"
        );
        assert!("/".parse::<Path>().unwrap().is_root());
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!("a/b".parse::<Path>(), Err(PathError::NotAbsolute(_))));
        assert!(matches!("/nosuch".parse::<Path>(), Err(PathError::ServerId(_))));
        assert!(matches!("/X123".parse::<Path>(), Err(PathError::ServerId(_))));
        assert!(matches!(
            "/X00000000000000fg".parse::<Path>(),
            Err(PathError::ServerId(_))
        ));
        assert!(matches!(
            "/X00000000000000ff/a b".parse::<Path>(),
            Err(PathError::Name(_))
        ));
        assert!(matches!(
            "/X00000000000000ff/..".parse::<Path>(),
            Err(PathError::Name(_))
        ));
        let long = format!("/X00000000000000ff/{}", "a".repeat(256));
        assert!(matches!(long.parse::<Path>(), Err(PathError::Name(_))));
        let ok = format!("/X00000000000000ff/{}", "a".repeat(255));
        assert!(ok.parse::<Path>().is_ok());
    }

    #[test]
    fn ids_round_trip() {
        let id = ServerId::random();
        assert_eq!(id.to_string().parse::<ServerId>().unwrap(), id);
        assert_eq!(id.to_string().len(), 17);
    }
}
