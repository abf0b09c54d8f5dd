//! Commands on anchors of any kind: ls, peek, scrub, stop.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use circuit_client::{Client, Entry, Path};

/// Splits `PATH/...` into the path and the recursive flag.
pub fn parse_glob(arg: &str) -> Result<(Path, bool)> {
    let (path, recursive) = match arg.strip_suffix("...") {
        Some(p) if p.ends_with('/') || p.is_empty() => (if p.is_empty() { "/" } else { p }, true),
        _ => (arg, false),
    };
    Ok((
        path.parse()
            .with_context(|| format!("bad path {:?}", circuit_proto::path::shown(arg)))?,
        recursive,
    ))
}

/// Parses a plain path argument.
pub fn parse_path(arg: &str) -> Result<Path> {
    arg.parse()
        .with_context(|| format!("bad path {:?}", circuit_proto::path::shown(arg)))
}

/// Children before parents, siblings by name (`ls -depth`).
fn depth_first(a: &Entry, b: &Entry) -> Ordering {
    let (x, y) = (a.path.to_string(), b.path.to_string());
    let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split('/').collect(), y.split('/').collect());
    for (p, q) in xs.iter().zip(&ys) {
        match p.cmp(q) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    ys.len().cmp(&xs.len())
}

/// `ls [-l] [-depth] PATH[/...]`
pub async fn ls(client: &Client, arg: &str, long: bool, depth: bool) -> Result<()> {
    let (path, recursive) = parse_glob(arg)?;
    let anchor = client.anchor(path.clone());
    let mut entries = if recursive {
        anchor.list_all().await
    } else {
        anchor.list().await
    }
    .with_context(|| format!("ls {path}"))?;
    if depth {
        entries.sort_by(depth_first);
    }
    let mut out = String::new();
    for e in entries {
        if long {
            let kind = if e.kind.is_empty() { "·" } else { &e.kind };
            out.push_str(&format!("{kind:<15} {}\n", e.path));
        } else {
            out.push_str(&format!("{}\n", e.path));
        }
    }
    print!("{out}");
    Ok(())
}

/// Prints JSON the way the original did: tab-indented.
pub fn print_json(text: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(text).context("server sent malformed JSON")?;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&v, &mut ser)?;
    println!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// `peek PATH`
pub async fn peek(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    let text = client
        .anchor(path.clone())
        .peek_json()
        .await
        .with_context(|| format!("peek {path}"))?;
    print_json(&text)
}

/// `scrub PATH`
pub async fn scrub(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    client
        .anchor(path.clone())
        .scrub()
        .await
        .with_context(|| format!("scrub {path}"))
}

/// `join /X… URL`: merge that server's cluster with the one at URL.
pub async fn join(client: &Client, arg: &str, url: &str) -> Result<()> {
    let path = parse_path(arg)?;
    client
        .anchor(path.clone())
        .server()
        .join(url)
        .await
        .with_context(|| format!("join {path}"))
}

/// `stop /X…` (alias `suicide`)
pub async fn stop(client: &Client, arg: &str) -> Result<()> {
    let path = parse_path(arg)?;
    client
        .anchor(path.clone())
        .server()
        .stop()
        .await
        .with_context(|| format!("stop {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert_eq!(parse_glob("/...").unwrap(), (Path::root(), true));
        assert_eq!(parse_glob("/").unwrap(), (Path::root(), false));
        let (p, r) = parse_glob("/X0000000000000001/this/...").unwrap();
        assert_eq!((p.to_string().as_str(), r), ("/X0000000000000001/this", true));
        // Only a whole trailing `...` component means recursion; `a...` is a name.
        let (p, r) = parse_glob("/X0000000000000001/a...").unwrap();
        assert_eq!((p.names(), r), (&["a...".to_string()][..], false));
    }

    #[test]
    fn depth_order() {
        let e = |p: &str| Entry {
            path: p.parse().unwrap(),
            kind: String::new(),
        };
        let mut v = [
            e("/X0000000000000001"),
            e("/X0000000000000001/a"),
            e("/X0000000000000001/a/b"),
            e("/X0000000000000002"),
        ];
        v.sort_by(depth_first);
        let got: Vec<_> = v.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(
            got,
            [
                "/X0000000000000001/a/b",
                "/X0000000000000001/a",
                "/X0000000000000001",
                "/X0000000000000002"
            ]
        );
    }
}
