//! Typed command-line values: the clap value parsers of paths and counts.
//!
//! A value these parsers refuse is a mistake in the command, yet the tool
//! reports it as it reports a refused request: one line, `circuit: …`, exit
//! status 1 (see [`refused`]); clap's other usage errors keep exit status 2.

use std::fmt;

use circuit_client::Path;

/// A command-line value refused by one of these parsers; its text is the
/// whole one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

/// The message of a clap error raised by one of these parsers, if it is one.
pub fn refused(e: &clap::Error) -> Option<&BadValue> {
    std::error::Error::source(e)?.downcast_ref::<BadValue>()
}

/// An anchor path argument: `/`, `/X…`, `/X…/a/b`.
pub fn path(arg: &str) -> Result<Path, BadValue> {
    arg.parse()
        .map_err(|e| BadValue(format!("bad path {:?}: {e}", circuit_proto::path::shown(arg))))
}

/// The name of a breaker kept in Redis (`--redis URL NAME`), checked as
/// the Redis store checks it.
pub fn redis_name(arg: &str) -> Result<String, BadValue> {
    match circuit_client::check_redis_name(arg) {
        Ok(()) => Ok(arg.to_string()),
        Err(circuit_client::Error::Remote(w)) => Err(BadValue(w.message)),
        Err(e) => Err(BadValue(e.to_string())),
    }
}

/// The argument of `ls`: a path, and whether a trailing `/...` asks for every
/// descendant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The anchor listed.
    pub path: Path,
    /// `PATH/...`: every descendant, not only the children.
    pub recursive: bool,
}

/// `PATH` or `PATH/...` (only a whole trailing `...` component recurses;
/// `a...` is a name).
pub fn glob(arg: &str) -> Result<Glob, BadValue> {
    let (p, recursive) = match arg.strip_suffix("...") {
        Some(p) if p.ends_with('/') || p.is_empty() => (if p.is_empty() { "/" } else { p }, true),
        _ => (arg, false),
    };
    let path = p
        .parse()
        .map_err(|e| BadValue(format!("bad path {:?}: {e}", circuit_proto::path::shown(arg))))?;
    Ok(Glob { path, recursive })
}

/// The scope of `events` and `stats`: a path, with or without a trailing
/// `/...` (the same thing here); empty means the whole cluster.
pub fn scope(arg: &str) -> Result<Path, BadValue> {
    match arg.strip_suffix("/...").unwrap_or(arg) {
        "" => Ok(Path::root()),
        p => p
            .parse()
            .map_err(|e| BadValue(format!("bad path {:?}: {e}", circuit_proto::path::shown(arg)))),
    }
}

/// The capacity of `mkchan`: a whole number ≥ 0.
pub fn capacity(arg: &str) -> Result<u64, BadValue> {
    arg.parse::<u64>()
        .map_err(|_| BadValue("second argument to mkchan must be a non-negative integral capacity".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path("/").unwrap(), Path::root());
        assert_eq!(
            path("/X0000000000000001//a/b").unwrap().to_string(),
            "/X0000000000000001/a/b"
        );
        assert_eq!(
            path("relative").unwrap_err().to_string(),
            "bad path \"relative\": path \"relative\" must start with /"
        );
        let e = path("/nosuch").unwrap_err().to_string();
        assert!(
            e.starts_with("bad path \"/nosuch\": \"nosuch\" is not a server id"),
            "{e}"
        );
        let e = path("/X0000000000000001/bad name").unwrap_err().to_string();
        assert!(e.contains("anchor name \"bad name\" is invalid"), "{e}");
    }

    #[test]
    fn globs() {
        let g = |s: &str| glob(s).map(|g| (g.path.to_string(), g.recursive)).unwrap();
        assert_eq!(g("/..."), ("/".to_string(), true));
        assert_eq!(g("/"), ("/".to_string(), false));
        assert_eq!(g("..."), ("/".to_string(), true));
        assert_eq!(
            g("/X0000000000000001/this/..."),
            ("/X0000000000000001/this".to_string(), true)
        );
        // Only a whole trailing `...` component means recursion; `a...` is a name.
        let a = glob("/X0000000000000001/a...").unwrap();
        assert_eq!((a.path.names(), a.recursive), (&["a...".to_string()][..], false));
        assert!(glob("x/...").unwrap_err().0.starts_with("bad path \"x/...\":"));
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("").unwrap(), Path::root());
        assert_eq!(scope("/...").unwrap(), Path::root());
        assert_eq!(
            scope("/X0000000000000001/a/...").unwrap().to_string(),
            "/X0000000000000001/a"
        );
        assert!(scope("a").is_err());
    }

    #[test]
    fn capacities() {
        assert_eq!(capacity("0").unwrap(), 0);
        assert_eq!(capacity("3").unwrap(), 3);
        for bad in ["-1", "x", "", "1.5", " 3"] {
            assert_eq!(
                capacity(bad).unwrap_err().to_string(),
                "second argument to mkchan must be a non-negative integral capacity",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refusals_are_found_in_clap_errors() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct T {
            #[arg(value_parser = path)]
            p: Path,
        }
        let e = T::try_parse_from(["t", "rel"]).unwrap_err();
        assert_eq!(
            refused(&e).unwrap().0,
            "bad path \"rel\": path \"rel\" must start with /"
        );
        let e = T::try_parse_from(["t"]).unwrap_err();
        assert!(refused(&e).is_none());
        assert_eq!(T::try_parse_from(["t", "/"]).unwrap().p, Path::root());
    }
}
