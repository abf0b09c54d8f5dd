//! The original tool took Go-style flags (`-dial URL`, `-hmac FILE`); clap
//! takes `--dial`. This rewrites the Go spellings before clap sees them.

use std::ffi::OsString;

/// Flags that may be spelled with one dash.
const LONG: &[&str] = &[
    "dial",
    "hmac",
    "addr",
    "join",
    "discover",
    "docker",
    "if",
    "var",
    "long",
    "depth",
    "scrub",
    "log-format",
    "json",
    "help",
    "version",
];

/// Rewrites `-name[=v]` into `--name[=v]` for the known long flags, `-de`
/// into `--depth`, and binds a multicast address (or '') following
/// `-discover` to it, so that `ls -discover /...` keeps `/...` as the path.
pub fn go_style(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter().peekable();
    if let Some(prog) = it.next() {
        out.push(prog);
    }
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            out.extend(it);
            break;
        }
        let mut s = s.to_string();
        if s.starts_with('-') && !s.starts_with("--") && s.len() > 2 {
            let (name, value) = match s[1..].split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (s[1..].to_string(), None),
            };
            let name = if name == "de" { "depth".to_string() } else { name };
            if LONG.contains(&name.as_str()) {
                s = match value {
                    Some(v) => format!("--{name}={v}"),
                    None => format!("--{name}"),
                };
            }
        }
        if s == "--discover"
            && let Some(next) = it.peek().and_then(|n| n.to_str())
            && (next.is_empty() || (next.contains(':') && !next.starts_with('/') && !next.starts_with('-')))
        {
            s = format!("--discover={next}");
            it.next();
        }
        out.push(s.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Vec<String> {
        let v = std::iter::once("circuit")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        go_style(v)
            .into_iter()
            .skip(1)
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn rewrites_go_flags() {
        assert_eq!(rw(&["ls", "-dial", "U", "-l", "/"]), ["ls", "--dial", "U", "-l", "/"]);
        assert_eq!(
            rw(&["ls", "-hmac=k", "-de", "/..."]),
            ["ls", "--hmac=k", "--depth", "/..."]
        );
        assert_eq!(rw(&["ls", "-discover", "/..."]), ["ls", "--discover", "/..."]);
        assert_eq!(
            rw(&["start", "-discover", "228.8.8.8:8822"]),
            ["start", "--discover=228.8.8.8:8822"]
        );
        assert_eq!(rw(&["start", "-discover", ""]), ["start", "--discover="]);
        assert_eq!(
            rw(&["start", "-if", "eth0", "-discover"]),
            ["start", "--if", "eth0", "--discover"]
        );
        assert_eq!(rw(&["mkchan", "/X/a", "-1"]), ["mkchan", "/X/a", "-1"]);
        assert_eq!(rw(&["x", "--", "-dial"]), ["x", "--", "-dial"]);
    }
}
