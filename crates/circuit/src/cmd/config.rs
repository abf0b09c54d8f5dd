//! The config file of `circuit start --config FILE`, and `reloadconfig /X…`.
//!
//! The file is TOML; each table `[KIND.NAME]` declares one element made at
//! boot on this server, at `/X…/NAME` (or at `/X…/` + its `Anchor` key, like
//! `Anchor = "web/frontend"`):
//! - `[watch.NAME]`: a watcher; its keys are the fields of the `mkwatch`
//!   JSON spec (`Path`, `Args`, `NumProcesses`, …, matched the same way,
//!   case-insensitively), parsed by the same code;
//! - `[chan.NAME]`: a channel; `Cap` is its capacity (default 0);
//! - `[dns.NAME]`: a DNS server; `Address` is where it listens (`IP`,
//!   `IP:PORT` or `:PORT`; default: the server's IP, a free port) and
//!   `Records` its records in zone-file syntax. A reload with the same
//!   `Address` replaces the records on the same sockets.
//! - `[breaker.NAME]`: a circuit breaker; its keys are the fields of the
//!   `mkbreaker` JSON spec (`FailureThreshold`, `OpenTimeout`, …). A reload
//!   gives it the new spec in place: its keys keep their state.
//!
//! Reading the file is this binary's job; the server calls [`load`] at boot
//! and on every `reloadconfig` (see `circuit_server::config`).

use std::path::Path as FsPath;

use anyhow::{Context, Result};
use circuit_client::{Client, DnsSpec, Path, ServerId};
use circuit_server::config::{Declaration, Declared};
use clap::Subcommand;
use toml::de::{DeTable, DeValue};

use crate::cmd::print_json;
use crate::values;

const KINDS: &str = "[watch.NAME], [chan.NAME], [dns.NAME] and [breaker.NAME]";

/// A config error: where in the text (byte offset), and what.
type Located = (Option<usize>, String);

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Reads the config file at `file`: every error is one line, like
/// `cluster.toml:4:8: unknown field "Foo" in the watch spec; known: …`.
pub fn load(file: &FsPath) -> std::result::Result<Vec<Declaration>, String> {
    let show = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("config file {show}: {e}"))?;
    parse(&text).map_err(|(at, msg)| match at {
        Some(off) => {
            let (line, col) = line_col(&text, off);
            format!("config file {show}:{line}:{col}: {msg}")
        }
        None => format!("config file {show}: {msg}"),
    })
}

fn toml_error(e: toml::de::Error) -> Located {
    (e.span().map(|s| s.start), e.message().trim().replace('\n', "; "))
}

/// Parses the text of a config file.
pub fn parse(text: &str) -> std::result::Result<Vec<Declaration>, Located> {
    let spans = DeTable::parse(text).map_err(toml_error)?;
    let values: toml::Table = text.parse().map_err(toml_error)?;
    let mut out: Vec<(usize, Declaration)> = Vec::new();
    for (kind_key, kind_val) in spans.get_ref() {
        let kind = kind_key.get_ref().as_ref();
        let at = Some(kind_key.span().start);
        let lower = kind.to_ascii_lowercase();
        if lower == "console" {
            // The web console's settings, read by `start` ([`console_table`]).
            continue;
        }
        if !["watch", "chan", "dns", "breaker"].contains(&lower.as_str()) {
            return Err((at, format!("unknown element kind {kind:?}; this server knows {KINDS}")));
        }
        let (DeValue::Table(names), Some(toml::Value::Table(bodies))) = (kind_val.get_ref(), values.get(kind)) else {
            return Err((at, format!("{kind:?} must hold tables like [{lower}.NAME]")));
        };
        for (name_key, _) in names {
            let name = name_key.get_ref().as_ref();
            let at = name_key.span().start;
            let Some(toml::Value::Table(fields)) = bodies.get(name) else {
                return Err((
                    Some(at),
                    format!("{lower}.{name} must be a table, like [{lower}.{name}]"),
                ));
            };
            let decl =
                declaration(&lower, name, fields.clone()).map_err(|m| (Some(at), format!("[{lower}.{name}]: {m}")))?;
            out.push((at, decl));
        }
    }
    // In file order (the parsed tables are not).
    out.sort_by_key(|(at, _)| *at);
    for (i, (at, d)) in out.iter().enumerate() {
        if let Some((first, _)) = out[..i].iter().find(|(_, e)| e.names == d.names) {
            let (line, _) = line_col(text, *first);
            let anchor = d.names.join("/");
            return Err((Some(*at), format!("anchor {anchor} is already declared at line {line}")));
        }
    }
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

/// The anchor names of `spec` (`NAME`, or its `Anchor` key), checked.
fn anchor(name: &str, fields: &mut toml::Table) -> std::result::Result<Vec<String>, String> {
    let key = fields.keys().find(|k| k.eq_ignore_ascii_case("anchor")).cloned();
    let anchor = match key.and_then(|k| fields.remove(&k)) {
        None => name.to_string(),
        Some(toml::Value::String(s)) => s,
        Some(other) => return Err(format!("Anchor must be a string like \"web/frontend\", not {other}")),
    };
    let names: Vec<String> = anchor.split('/').filter(|n| !n.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Err(format!("anchor {anchor:?} is empty"));
    }
    let mut p = Path::server(ServerId::random());
    for n in &names {
        p = p.child(n).map_err(|e| format!("anchor {anchor:?}: {e}"))?;
    }
    Ok(names)
}

fn declaration(kind: &str, name: &str, mut fields: toml::Table) -> std::result::Result<Declaration, String> {
    let names = anchor(name, &mut fields)?;
    let element = match kind {
        "watch" => {
            let serde_json::Value::Object(fields) = serde_json::to_value(&fields).map_err(|e| e.to_string())? else {
                return Err("a watch must be a table".into());
            };
            Declared::Watch(Box::new(
                crate::cmd::watch_spec::from_fields(fields).map_err(|e| e.to_string())?,
            ))
        }
        "dns" => Declared::Dns(dns_spec(fields)?),
        "breaker" => {
            let serde_json::Value::Object(fields) = serde_json::to_value(&fields).map_err(|e| e.to_string())? else {
                return Err("a breaker must be a table".into());
            };
            Declared::Breaker(crate::cmd::breaker::spec_from_fields(fields)?)
        }
        _ => {
            let mut cap = 0;
            for (k, v) in fields {
                if !k.eq_ignore_ascii_case("cap") {
                    return Err(format!("unknown field {k:?} of a channel; known: Cap, Anchor"));
                }
                cap = match v {
                    toml::Value::Integer(n) if n >= 0 => n as u64,
                    other => return Err(format!("Cap must be a whole number ≥ 0, not {other}")),
                };
            }
            Declared::Chan(cap)
        }
    };
    Ok(Declaration { names, element })
}

fn dns_spec(fields: toml::Table) -> std::result::Result<DnsSpec, String> {
    let mut spec = DnsSpec::default();
    for (k, v) in fields {
        match (k.to_ascii_lowercase().as_str(), v) {
            ("address", toml::Value::String(a)) => spec.addr = Some(a),
            ("address", other) => return Err(format!("Address must be a string like \"127.0.0.1:53\", not {other}")),
            ("records", toml::Value::Array(rs)) => {
                for r in rs {
                    match r {
                        toml::Value::String(r) => spec.records.push(r),
                        other => return Err(format!("each of Records must be a string (one record), not {other}")),
                    }
                }
            }
            ("records", other) => return Err(format!("Records must be a list of strings, not {other}")),
            _ => {
                return Err(format!(
                    "unknown field {k:?} of a DNS server; known: Address, Records, Anchor"
                ));
            }
        }
    }
    Ok(spec)
}

/// The `[console]` table of a config file: `Http = "HOST:PORT"`,
/// `Insecure = true|false`.
#[derive(Debug, Default, PartialEq)]
pub struct ConsoleTable {
    /// Where the web console listens.
    pub http: Option<String>,
    /// Allow a non-loopback address without a key.
    pub insecure: bool,
}

/// Reads the `[console]` table of the config file at `file`, if it has one.
pub fn console_table(file: &FsPath) -> std::result::Result<Option<ConsoleTable>, String> {
    let show = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("config file {show}: {e}"))?;
    console_of(&text).map_err(|m| format!("config file {show}: {m}"))
}

fn console_of(text: &str) -> std::result::Result<Option<ConsoleTable>, String> {
    let values: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    let Some((_, v)) = values.iter().find(|(k, _)| k.eq_ignore_ascii_case("console")) else {
        return Ok(None);
    };
    let toml::Value::Table(t) = v else {
        return Err("console must be a table: [console] with Http = \"HOST:PORT\"".into());
    };
    let mut out = ConsoleTable::default();
    for (k, v) in t {
        match (k.to_ascii_lowercase().as_str(), v) {
            ("http", toml::Value::String(a)) => out.http = Some(a.clone()),
            ("http", other) => {
                return Err(format!(
                    "[console] Http must be a string like \"127.0.0.1:8080\", not {other}"
                ));
            }
            ("insecure", toml::Value::Boolean(b)) => out.insecure = *b,
            ("insecure", other) => return Err(format!("[console] Insecure must be true or false, not {other}")),
            _ => return Err(format!("unknown field {k:?} of [console]; known: Http, Insecure")),
        }
    }
    Ok(Some(out))
}

/// The config file of `start --config FILE`: checked now (a bad file fails
/// `start`), and read again by the server on every `reloadconfig`.
pub fn file(path: &FsPath) -> Result<circuit_server::config::ConfigFile> {
    let abs = std::path::absolute(path).with_context(|| format!("config file {}", path.display()))?;
    load(&abs).map_err(anyhow::Error::msg)?;
    Ok(circuit_server::config::ConfigFile::new(abs, load))
}

/// The config command.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make the server at SERVER-PATH read its --config file again and apply the changes; prints what it did as JSON
    Reloadconfig(Reload),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Reloadconfig(a) => a.run(client).await,
        }
    }
}

/// `reloadconfig /X…`
#[derive(clap::Args, Debug)]
pub struct Reload {
    /// Server path, /X…
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Reload {
    /// Prints what the server did, as JSON.
    pub async fn run(self, client: &Client) -> Result<()> {
        let report = client
            .anchor(self.path.clone())
            .server()
            .reload_config()
            .await
            .with_context(|| format!("reloadconfig {}", self.path))?;
        print_json(&report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let (at, msg) = parse(text).unwrap_err();
        match at {
            Some(off) => {
                let (l, c) = line_col(text, off);
                format!("{l}:{c}: {msg}")
            }
            None => msg,
        }
    }

    #[test]
    fn the_console_table_is_read_apart_from_the_elements() {
        let text = "[console]\nHttp = \"127.0.0.1:8080\"\n[chan.jobs]\nCap = 1\n";
        assert_eq!(parse(text).unwrap().len(), 1);
        assert_eq!(
            console_of(text).unwrap(),
            Some(ConsoleTable {
                http: Some("127.0.0.1:8080".into()),
                insecure: false
            })
        );
        assert_eq!(console_of("[chan.a]\n").unwrap(), None);
        assert!(
            console_of("[console]\nHttp = 8080\n")
                .unwrap_err()
                .contains("must be a string")
        );
        assert!(
            console_of("[console]\nPort = 1\n")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn declarations_parse() {
        let d = parse(
            "[watch.web]\nPath = \"/bin/sleep\"\nargs = [\"60\"]\nNumProcesses = 2\n\n\
             [watch.api]\nAnchor = \"svc/api\"\ncmd = \"/bin/true\"\n\n[chan.jobs]\nCap = 3\n[chan.sync]\n",
        )
        .unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].names, ["web"]);
        let Declared::Watch(w) = &d[0].element else {
            panic!("{d:?}")
        };
        assert_eq!(
            (w.path.as_str(), w.num_processes, w.args.clone()),
            ("/bin/sleep", 2, vec!["60".to_string()])
        );
        assert_eq!(d[1].names, ["svc", "api"]);
        assert_eq!(d[2].element, Declared::Chan(3));
        assert_eq!(d[3].element, Declared::Chan(0));
        let d = parse(
            "[dns.home]\nAddress = \"127.0.0.1:5353\"\nrecords = [\"a. A 192.0.2.1\", \"b. TXT hi\"]\n[dns.free]\n",
        )
        .unwrap();
        assert_eq!(
            d[0].element,
            Declared::Dns(DnsSpec {
                addr: Some("127.0.0.1:5353".into()),
                records: vec!["a. A 192.0.2.1".into(), "b. TXT hi".into()],
            })
        );
        assert_eq!(d[1].element, Declared::Dns(DnsSpec::default()));
        let d = parse("[breaker.pay]\nfailurethreshold = 3\nOpenTimeout = 2.5\n[breaker.dflt]\n").unwrap();
        let Declared::Breaker(b) = &d[0].element else {
            panic!("{d:?}")
        };
        assert_eq!((b.failure_threshold, b.open_timeout), (3, 2.5));
        assert_eq!(d[1].element, Declared::Breaker(circuit_client::BreakerSpec::default()));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            err("[watch.web]\nPath = \"/bin/ls\"\n\n[dnss.home]\nx = 1\n"),
            format!("4:2: unknown element kind \"dnss\"; this server knows {KINDS}")
        );
        let e = err("[watch.web]\nPath = \"/bin/ls\"\n\n[watch.bad]\nPath = \"/bin/ls\"\nFoo = 1\n");
        assert!(
            e.starts_with("4:8: [watch.bad]: unknown field \"Foo\" in the watch spec"),
            "{e}"
        );
        let e = err("[watch.web]\nPath = \"/bin/ls\"\nArgs = [\n");
        assert!(e.starts_with("3:"), "{e}");
        assert!(err("[chan.c]\nCap = -1\n").contains("Cap must be a whole number"));
        assert!(err("[chan.c]\nSize = 1\n").contains("unknown field \"Size\""));
        assert!(err("[watch.w]\nArgs = []\n").contains("no \"Path\""));
        assert!(
            err("[watch.w]\nPath = \"/bin/ls\"\nAnchor = \"a//\"\n[chan.a]\n").contains("already declared at line 1")
        );
        assert!(err("[watch.w]\nPath = \"/bin/ls\"\nAnchor = \"bad name\"\n").contains("anchor \"bad name\""));
        assert!(err("watch = 3\n").contains("must hold tables"));
        assert!(err("[dns.d]\nx = 1\n").contains("unknown field \"x\" of a DNS server"));
        assert!(err("[dns.d]\nRecords = [1]\n").contains("must be a string"));
        assert!(err("[dns.d]\nAddress = 53\n").contains("Address must be a string"));
        let e = err("[breaker.b]\nFailureThreshold = 0\n");
        assert!(e.contains("[breaker.b]: bad breaker spec: FailureThreshold = 0"), "{e}");
    }
}
