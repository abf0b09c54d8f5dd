//! Server ids and anchor paths: `/X<16 hex>/name/name...`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest anchor name, in bytes.
pub const MAX_NAME: usize = 255;

/// Most names a path may hold below its server (`/X…/a/b` holds two).
pub const MAX_DEPTH: usize = 64;

/// Longest path, in bytes of its printed form (`/X…/a/b`).
pub const MAX_PATH: usize = 4096;

/// How much of a refused input an error message shows.
const SHOWN: usize = 64;

/// `s` as an error message shows it: whole when short, else its first 64
/// characters and its length, so a huge input never floods a terminal or log.
pub fn shown(s: &str) -> String {
    if s.len() <= SHOWN {
        return s.to_string();
    }
    let cut = s.char_indices().nth(SHOWN).map_or(s.len(), |(i, _)| i);
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

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
        let bad = || PathError::ServerId(shown(s));
        let hex = s.strip_prefix('X').ok_or_else(bad)?;
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u64::from_str_radix(hex, 16).map(ServerId).map_err(|_| bad())
    }
}

/// Why a path or name was refused. The refused text is carried as
/// [`shown`] makes it: at most 64 characters and its length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} must start with /")]
    NotAbsolute(String),
    #[error("{0:?} is not a server id: expected X followed by 16 hex digits, as listed by `circuit ls /`")]
    ServerId(String),
    #[error("anchor name {0:?} is invalid: use 1-255 bytes of A-Z a-z 0-9 . _ @ - (not only dots)")]
    Name(String),
    #[error("path {0:?} is too deep: more than the limit of {MAX_DEPTH} names below the server")]
    TooDeep(String),
    #[error("path {0:?} is too long: over the limit of {MAX_PATH} bytes")]
    TooLong(String),
    #[error("the root path / holds no names; a path below it starts with a server id")]
    NoServer,
}

/// Checks one anchor name: 1-255 bytes of `[A-Za-z0-9._@-]`, not made only of dots.
pub fn check_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        && !name.bytes().all(|b| b == b'.');
    if ok { Ok(()) } else { Err(PathError::Name(shown(name))) }
}

/// Bytes `/X<16 hex>` takes in a printed path.
const SERVER_LEN: usize = 18;

/// Checks a path's names against every rule: each name, [`MAX_DEPTH`] and
/// [`MAX_PATH`]. Linear in the names' length; stops at the first fault.
fn check_names(id: ServerId, names: &[String]) -> Result<(), PathError> {
    let mut len = SERVER_LEN;
    for (i, n) in names.iter().enumerate() {
        check_name(n)?;
        len += 1 + n.len();
        if i >= MAX_DEPTH {
            return Err(PathError::TooDeep(shown(&Path::print(id, names))));
        }
        if len > MAX_PATH {
            return Err(PathError::TooLong(shown(&Path::print(id, names))));
        }
    }
    Ok(())
}

/// A path as it travels: the same fields as [`Path`], not yet checked.
/// Every decoded `Path` goes through it, so a bad one never gets in.
#[derive(Deserialize)]
struct RawPath {
    server: Option<ServerId>,
    names: Vec<String>,
}

impl TryFrom<RawPath> for Path {
    type Error = PathError;
    fn try_from(raw: RawPath) -> Result<Path, PathError> {
        let checked = match raw.server {
            None if raw.names.is_empty() => Ok(Path::root()),
            None => Err(PathError::NoServer),
            Some(id) => Path::from_names(id, raw.names),
        };
        if let Err(e) = &checked {
            REFUSED.with(|r| *r.borrow_mut() = Some(e.clone()));
        }
        checked
    }
}

thread_local! {
    /// The last path refused while decoding on this thread. postcard keeps
    /// no message for a refusal, so [`crate::frame::decode`] looks here to
    /// say which rule a path broke.
    static REFUSED: std::cell::RefCell<Option<PathError>> = const { std::cell::RefCell::new(None) };
}

/// Takes the last path refused while decoding on this thread (see `REFUSED`).
pub(crate) fn take_refused() -> Option<PathError> {
    REFUSED.with(|r| r.borrow_mut().take())
}

/// An absolute anchor path. The root `/` has no server; every other path
/// starts with the id of the server that hosts it. Every `Path` is valid:
/// its names pass [`check_name`], there are at most [`MAX_DEPTH`] of them
/// and it prints in at most [`MAX_PATH`] bytes, whether parsed, built or
/// decoded from the wire.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawPath")]
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

    /// The path `/<id>/names…`, checked in one pass (linear in its length).
    pub fn from_names(id: ServerId, names: Vec<String>) -> Result<Path, PathError> {
        check_names(id, &names)?;
        Ok(Path {
            server: Some(id),
            names,
        })
    }

    /// The printed form of a path that may be invalid (for error messages).
    fn print(id: ServerId, names: &[String]) -> String {
        let mut s = format!("/{id}");
        for n in names {
            s.push('/');
            s.push_str(n);
        }
        s
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

    /// This path with one more name; `name` and the path's limits are checked.
    pub fn child(&self, name: &str) -> Result<Path, PathError> {
        let Some(id) = self.server else {
            let id: ServerId = name.parse()?;
            return Ok(Path::server(id));
        };
        check_name(name)?;
        let mut names = self.names.clone();
        names.push(name.to_string());
        let len = SERVER_LEN + names.iter().map(|n| 1 + n.len()).sum::<usize>();
        if names.len() > MAX_DEPTH {
            return Err(PathError::TooDeep(shown(&Path::print(id, &names))));
        }
        if len > MAX_PATH {
            return Err(PathError::TooLong(shown(&Path::print(id, &names))));
        }
        Ok(Path {
            server: self.server,
            names,
        })
    }
}

impl FromStr for Path {
    type Err = PathError;
    /// Parses `/X…/a/b`; repeated slashes are ignored, as in the original.
    /// Limits are checked as names are read, so a huge input costs one scan.
    fn from_str(s: &str) -> Result<Path, PathError> {
        if !s.starts_with('/') {
            return Err(PathError::NotAbsolute(shown(s)));
        }
        let mut parts = s.split('/').filter(|p| !p.is_empty());
        let Some(first) = parts.next() else {
            return Ok(Path::root());
        };
        let server = Some(first.parse()?);
        let mut names = Vec::new();
        let mut len = SERVER_LEN;
        for n in parts {
            check_name(n)?;
            len += 1 + n.len();
            if names.len() == MAX_DEPTH {
                return Err(PathError::TooDeep(shown(s)));
            }
            if len > MAX_PATH {
                return Err(PathError::TooLong(shown(s)));
            }
            names.push(n.to_string());
        }
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

    const ID: &str = "/X00000000000000ff";

    #[test]
    fn limits_depth_and_length() {
        let deep = |n: usize| format!("{ID}{}", "/a".repeat(n));
        assert_eq!(deep(MAX_DEPTH).parse::<Path>().unwrap().names().len(), MAX_DEPTH);
        assert!(matches!(
            deep(MAX_DEPTH + 1).parse::<Path>(),
            Err(PathError::TooDeep(_))
        ));
        // 18 bytes of server, then 17 names of 1 + 236 bytes, then one to fill up to 4096.
        let mut long = format!("{ID}{}", format!("/{}", "b".repeat(236)).repeat(17));
        long.push_str(&format!("/{}", "c".repeat(MAX_PATH - long.len() - 1)));
        assert_eq!(long.len(), MAX_PATH);
        let p: Path = long.parse().unwrap();
        assert_eq!(p.to_string(), long);
        assert!(matches!(format!("{long}c").parse::<Path>(), Err(PathError::TooLong(_))));
        // child() keeps the same limits.
        let at_max: Path = deep(MAX_DEPTH).parse().unwrap();
        assert!(matches!(at_max.child("a"), Err(PathError::TooDeep(_))));
        assert!(matches!(p.child("d"), Err(PathError::TooLong(_))));
        let id = ServerId(255);
        let names = |n: usize| vec!["a".to_string(); n];
        assert!(Path::from_names(id, names(MAX_DEPTH)).is_ok());
        assert!(matches!(
            Path::from_names(id, names(MAX_DEPTH + 1)),
            Err(PathError::TooDeep(_))
        ));
        assert!(matches!(
            Path::from_names(id, vec!["..".into()]),
            Err(PathError::Name(_))
        ));
    }

    #[test]
    fn errors_show_a_bounded_excerpt() {
        // A 10 KB path: the message names the limit and stays one short line.
        let huge = format!("{ID}{}", "/a".repeat(5000));
        let e = huge.parse::<Path>().unwrap_err().to_string();
        assert!(e.contains("limit of 64 names"), "{e}");
        assert!(e.contains("(10018 bytes)"), "{e}");
        assert!(e.len() < 200 && !e.contains('\n'), "{e}");
        let name = "x".repeat(70_000);
        let e = format!("{ID}/{name}").parse::<Path>().unwrap_err().to_string();
        assert!(e.contains("(70000 bytes)") && e.len() < 200, "{e}");
        let e = format!("/{name}").parse::<Path>().unwrap_err().to_string();
        assert!(e.contains("(70000 bytes)") && e.len() < 250, "{e}");
        let e = name.parse::<Path>().unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        // Cut at a character boundary, control characters escaped.
        let e = check_name(&format!("\n{}", "é".repeat(100))).unwrap_err().to_string();
        assert!(e.contains("\\n") && e.contains("(201 bytes)"), "{e}");
    }

    /// The same fields as `Path`, with nothing checked: what a hostile client can send.
    #[derive(Serialize)]
    struct Forged {
        server: Option<ServerId>,
        names: Vec<String>,
    }

    fn decode(server: Option<u64>, names: &[&str]) -> Result<Path, postcard::Error> {
        let f = Forged {
            server: server.map(ServerId),
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        postcard::from_bytes(&postcard::to_allocvec(&f).unwrap())
    }

    #[test]
    fn decoding_checks_every_rule() {
        assert_eq!(decode(Some(255), &["a", "b"]).unwrap().to_string(), format!("{ID}/a/b"));
        assert!(decode(None, &[]).unwrap().is_root());
        let long = "a".repeat(70_000);
        let deep = vec!["a"; MAX_DEPTH + 1];
        for bad in [&["..", "b"][..], &[""], &["a/b"], &["a\0"], &["a\nb"], &[&long], &deep] {
            assert!(decode(Some(255), bad).is_err(), "{bad:?}");
        }
        assert!(decode(None, &["a"]).is_err(), "names below / without a server");
        // A valid path encodes exactly as the unchecked form, so the wire is unchanged.
        let p: Path = format!("{ID}/a/b").parse().unwrap();
        let f = Forged {
            server: Some(ServerId(255)),
            names: vec!["a".into(), "b".into()],
        };
        assert_eq!(postcard::to_allocvec(&p).unwrap(), postcard::to_allocvec(&f).unwrap());
    }

    #[test]
    fn ids_round_trip() {
        let id = ServerId::random();
        assert_eq!(id.to_string().parse::<ServerId>().unwrap(), id);
        assert_eq!(id.to_string().len(), 17);
    }
}
