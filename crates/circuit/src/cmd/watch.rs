//! Commands on watch elements: mkwatch, incr, decr, numprocs, watch
//! start|stop|restart|reload. (`signal`, `peek` and `scrub` are the generic
//! commands; the server dispatches on the element's kind.) The spec arrives
//! as JSON on stdin and is parsed here, at the edge; the wire carries a typed
//! `WatchSpec`.

use anyhow::{Context, Result, anyhow, bail};
use circuit_client::{Client, FlappingSpec, Path, SocketSpec, WatchAction, WatchSpec};
use clap::Subcommand;
use serde_json::{Map, Value};

use crate::cmd::{failed, watch_opts};
use crate::values;

/// The watcher commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a watcher at PATH keeping NumProcesses copies of a command running; its spec is JSON on stdin, like {"Path": "/bin/sleep", "Args": ["60"], "NumProcesses": 3}
    Mkwatch(Mkwatch),
    /// Add N processes (default 1) to the watcher at PATH; prints the new count
    Incr(Incr),
    /// Remove N processes (default 1, the highest slots, stopped gracefully) from the watcher at PATH; prints the new count
    Decr(Decr),
    /// Print the process count of the watcher at PATH, or set it to N
    Numprocs(Numprocs),
    /// Control the watcher at PATH: start, stop (graceful), restart (stop, then start), reload (start new processes, then stop the old ones)
    Watch(Control),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkwatch(a) => a.run(client).await,
            Cmd::Incr(a) => a.run(client).await,
            Cmd::Decr(a) => a.run(client).await,
            Cmd::Numprocs(a) => a.run(client).await,
            Cmd::Watch(a) => a.run(client).await,
        }
    }
}

const KNOWN: &str = "Path, Args, Env, Dir, NumProcesses, Respawn, WarmupDelay, GracefulTimeout, StopSignal, MaxAge, Flapping, Sockets, Stdout, Stderr, Uid, Gid, Rlimits, InheritEnv, Hooks";
const KNOWN_FLAPPING: &str = "Attempts, Window, RetryIn, MaxRetry";
const KNOWN_SOCKET: &str = "Name, Host, Port, Path, Backlog, Reuseport";
/// Circus options that this server's watchers do not have yet.
const NOT_YET: &[&str] = &[];
const EXAMPLE: &str = r#"{"Path": "/bin/sleep", "Args": ["3600"], "NumProcesses": 3}"#;

fn object(text: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        bail!("no watch spec on stdin; give JSON like {EXAMPLE}");
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let msg = full
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&full);
        anyhow!(
            "invalid JSON on stdin at line {} column {}: {msg}",
            e.line(),
            e.column()
        )
    })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => bail!("the watch spec must be a JSON object, like {EXAMPLE}"),
    }
}

/// A spec field that must be a list of strings (`what` names the spec in errors).
pub fn strings(what: &str, key: &str, v: Value) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(anyhow!(
                    "field {key:?} of the {what} must be a list of strings, not {other}"
                )),
            })
            .collect(),
        other => bail!("field {key:?} of the {what} must be a list of strings, not {other}"),
    }
}

fn string(key: &str, v: Value) -> Result<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => bail!("field {key:?} of the watch spec must be a string, not {other}"),
    }
}

fn count(key: &str, v: Value) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow!("field {key:?} of the watch spec must be a whole number ≥ 0, not {v}"))
}

fn seconds(key: &str, v: Value) -> Result<f64> {
    match v.as_f64() {
        Some(s) if s >= 0.0 && s.is_finite() && s < 1e9 => Ok(s),
        _ => bail!("field {key:?} of the watch spec must be a number of seconds ≥ 0, not {v}"),
    }
}

fn flapping(key: &str, v: Value) -> Result<FlappingSpec> {
    let mut f = FlappingSpec::default();
    let fields = match v {
        Value::Null => return Ok(f),
        Value::Object(m) => m,
        other => bail!(
            "field {key:?} of the watch spec must be an object like {{\"Attempts\": 2, \"Window\": 1, \"RetryIn\": 7, \"MaxRetry\": 5}}, not {other}"
        ),
    };
    for (k, v) in fields {
        let name = format!("{key}.{k}");
        match k.to_ascii_lowercase().as_str() {
            "attempts" => f.attempts = count(&name, v)?,
            "window" => f.window = seconds(&name, v)?,
            "retryin" | "retry_in" => f.retry_in = seconds(&name, v)?,
            "maxretry" | "max_retry" => f.max_retry = count(&name, v)?,
            _ => bail!("unknown field {k:?} in the watch spec's {key:?}; known: {KNOWN_FLAPPING}"),
        }
    }
    Ok(f)
}

/// `"Sockets": [{"Name", "Host", "Port"} | {"Name", "Path"}, "Backlog", "Reuseport"}]`.
fn sockets(key: &str, v: Value) -> Result<Vec<SocketSpec>> {
    const LIKE: &str = r#"[{"Name": "web", "Host": "127.0.0.1", "Port": 8080}]"#;
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => bail!("field {key:?} of the watch spec must be a list like {LIKE}, not {other}"),
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Value::Object(fields) = item else {
            bail!(
                "{at} of the watch spec must be an object like {{\"Name\": \"web\", \"Port\": 8080}} or {{\"Name\": \"web\", \"Path\": \"/run/web.sock\"}}"
            );
        };
        let mut s = SocketSpec::default();
        let (mut tcp, mut port) = (false, false);
        for (k, v) in fields {
            let name = format!("{at}.{k}");
            match k.to_ascii_lowercase().replace('_', "").as_str() {
                "name" => s.name = string(&name, v)?,
                "host" => {
                    tcp = true;
                    s.host = string(&name, v)?;
                }
                "port" => {
                    (tcp, port) = (true, true);
                    s.port = v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| {
                        anyhow!("field {name:?} of the watch spec must be a port number from 0 to 65535, not {v}")
                    })?;
                }
                "path" => s.path = string(&name, v)?,
                "backlog" => s.backlog = count(&name, v)?,
                "reuseport" => {
                    s.reuseport = match v {
                        Value::Bool(b) => b,
                        other => bail!("field {name:?} of the watch spec must be true or false, not {other}"),
                    }
                }
                _ => bail!("unknown field {k:?} in the watch spec's {at}; known: {KNOWN_SOCKET}"),
            }
        }
        if s.name.is_empty() {
            bail!("{at} of the watch spec has no \"Name\" (used as $(socket.NAME.fd))");
        }
        if !s.path.is_empty() && tcp {
            bail!(
                "socket {:?} of the watch spec has a Path and a Host or Port; give Host and Port (TCP) or Path (unix)",
                s.name
            );
        }
        if s.path.is_empty() && !port {
            bail!(
                "socket {:?} of the watch spec has no \"Port\" (0 picks a free one) nor \"Path\" (a unix socket)",
                s.name
            );
        }
        out.push(s);
    }
    Ok(out)
}

/// Parses a watch spec: JSON field names match case-insensitively (and
/// Circus's snake_case spellings, like `num_processes`, work too); unknown
/// fields, and Circus options not supported yet, are errors.
pub fn parse_spec(text: &str) -> Result<WatchSpec> {
    let mut spec = WatchSpec::default();
    for (key, v) in object(text)? {
        let k = key.to_ascii_lowercase().replace('_', "");
        match k.as_str() {
            "path" | "cmd" => spec.path = string(&key, v)?,
            "args" => spec.args = strings("watch spec", &key, v)?,
            "env" => spec.env = strings("watch spec", &key, v)?,
            "dir" | "workingdir" => spec.dir = string(&key, v)?,
            "numprocesses" => spec.num_processes = count(&key, v)?,
            "respawn" => {
                spec.respawn = match v {
                    Value::Bool(b) => b,
                    other => bail!("field {key:?} of the watch spec must be true or false, not {other}"),
                }
            }
            "warmupdelay" => spec.warmup_delay = seconds(&key, v)?,
            "gracefultimeout" => spec.graceful_timeout = seconds(&key, v)?,
            "stopsignal" => {
                spec.stop_signal = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    other => bail!("field {key:?} of the watch spec must be a signal like \"TERM\" or 15, not {other}"),
                }
            }
            "maxage" => spec.max_age = seconds(&key, v)?,
            "flapping" => spec.flapping = flapping(&key, v)?,
            "stdout" => spec.stdout = watch_opts::output(&key, v)?,
            "stderr" => spec.stderr = watch_opts::output(&key, v)?,
            "uid" => spec.uid = watch_opts::ident(&key, v)?,
            "gid" => spec.gid = watch_opts::ident(&key, v)?,
            "rlimits" => spec.rlimits = watch_opts::rlimits(&key, v)?,
            "inheritenv" | "copyenv" => spec.inherit_env = watch_opts::boolean(&key, v)?,
            "hooks" => spec.hooks = watch_opts::hooks(&key, v)?,
            "sockets" => spec.sockets = sockets(&key, v)?,
            _ if NOT_YET.contains(&k.as_str()) => {
                bail!("field {key:?} of the watch spec is not supported yet; supported: {KNOWN}")
            }
            _ => bail!("unknown field {key:?} in the watch spec; known: {KNOWN}"),
        }
    }
    if spec.path.trim().is_empty() {
        bail!("the watch spec has no \"Path\"; give JSON like {EXAMPLE}");
    }
    Ok(spec)
}

/// `mkwatch PATH` with the spec on stdin.
#[derive(clap::Args, Debug)]
pub struct Mkwatch {
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Mkwatch {
    /// Reads the spec and makes the watcher.
    pub async fn run(self, client: &Client) -> Result<()> {
        let input = crate::stdin::read_to_string()
            .await
            .context("reading the watch spec from stdin")?;
        let spec = parse_spec(&input)?;
        client
            .anchor(self.path.clone())
            .make_watch(spec)
            .await
            .map_err(|e| failed("mkwatch", &self.path, e))?;
        Ok(())
    }
}

/// What `incr`/`decr`/`numprocs` do.
#[derive(Debug, Clone, Copy)]
pub enum ScaleOp {
    /// `incr PATH [N]`
    Incr(u32),
    /// `decr PATH [N]`
    Decr(u32),
    /// `numprocs PATH N`
    Set(u32),
    /// `numprocs PATH`
    Get,
}

/// `incr PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Incr {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// How many to add
    n: Option<u32>,
}

/// `decr PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Decr {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// How many to remove
    n: Option<u32>,
}

/// `numprocs PATH [N]`
#[derive(clap::Args, Debug)]
pub struct Numprocs {
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
    /// The new count
    n: Option<u32>,
}

/// `incr`, `decr`, `numprocs`: prints the count after.
async fn scale(client: &Client, verb: &str, path: Path, op: ScaleOp) -> Result<()> {
    let w = client.anchor(path.clone()).watch();
    let n = match op {
        ScaleOp::Incr(n) => w.incr(n).await,
        ScaleOp::Decr(n) => w.decr(n).await,
        ScaleOp::Set(n) => w.set_numprocs(n).await,
        ScaleOp::Get => w.numprocs().await,
    }
    .map_err(|e| failed(verb, &path, e))?;
    println!("{n}");
    Ok(())
}

impl Incr {
    /// Adds N processes (default 1).
    pub async fn run(self, client: &Client) -> Result<()> {
        scale(client, "incr", self.path, ScaleOp::Incr(self.n.unwrap_or(1))).await
    }
}

impl Decr {
    /// Removes N processes (default 1).
    pub async fn run(self, client: &Client) -> Result<()> {
        scale(client, "decr", self.path, ScaleOp::Decr(self.n.unwrap_or(1))).await
    }
}

impl Numprocs {
    /// Prints the count, or sets it.
    pub async fn run(self, client: &Client) -> Result<()> {
        let op = match self.n {
            Some(n) => ScaleOp::Set(n),
            None => ScaleOp::Get,
        };
        scale(client, "numprocs", self.path, op).await
    }
}

/// `watch start|stop|restart|reload PATH`.
#[derive(clap::Args, Debug)]
pub struct Control {
    /// start, stop, restart or reload
    #[arg(value_name = "ACTION", value_parser = ["start", "stop", "restart", "reload"], ignore_case = true)]
    action: String,
    /// Watch path
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Control {
    /// Starts, stops, restarts or reloads the watcher.
    pub async fn run(self, client: &Client) -> Result<()> {
        let action: WatchAction = self.action.parse().map_err(|e: String| anyhow!(e))?;
        client
            .anchor(self.path.clone())
            .watch()
            .control(action)
            .await
            .map_err(|e| failed(&format!("watch {}", action.name()), &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_parse() {
        let s = parse_spec(
            r#"{"Path":"/bin/srv","Args":["--fd=$(socket.web.fd)"],
               "Sockets":[{"Name":"web","Host":"0.0.0.0","Port":8080,"Backlog":512,"reuse_port":true},
                          {"name":"admin","PATH":"/run/admin.sock"}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.sockets,
            vec![
                SocketSpec {
                    name: "web".into(),
                    host: "0.0.0.0".into(),
                    port: 8080,
                    backlog: 512,
                    reuseport: true,
                    ..SocketSpec::default()
                },
                SocketSpec {
                    name: "admin".into(),
                    path: "/run/admin.sock".into(),
                    ..SocketSpec::default()
                }
            ]
        );
        assert_eq!((s.sockets[1].host.as_str(), s.sockets[1].backlog), ("127.0.0.1", 128));
        let e = |t: &str| parse_spec(t).unwrap_err().to_string();
        assert!(e(r#"{"Path":"/bin/ls","Sockets":{}}"#).contains("must be a list"));
        assert!(e(r#"{"Path":"/bin/ls","Sockets":[{"Port":1}]}"#).contains("has no \"Name\""));
        assert!(e(r#"{"Path":"/bin/ls","Sockets":[{"Name":"a"}]}"#).contains("no \"Port\""));
        assert!(e(r#"{"Path":"/bin/ls","Sockets":[{"Name":"a","Port":70000}]}"#).contains("0 to 65535"));
        assert!(
            e(r#"{"Path":"/bin/ls","Sockets":[{"Name":"a","Port":1,"Path":"/x"}]}"#)
                .contains("a Path and a Host or Port")
        );
        assert!(
            e(r#"{"Path":"/bin/ls","Sockets":[{"Name":"a","Port":1,"Type":"udp"}]}"#)
                .contains("known: Name, Host, Port")
        );
    }

    #[test]
    fn specs_parse_with_defaults() {
        let s = parse_spec(r#"{"Path":"/bin/sleep","Args":["60"]}"#).unwrap();
        assert_eq!(s, WatchSpec::new("/bin/sleep", ["60"]));
        assert_eq!((s.num_processes, s.respawn, s.graceful_timeout), (1, true, 30.0));
        assert_eq!(s.stop_signal, "TERM");
        let s = parse_spec(
            r#"{"path":"/bin/sh","ARGS":["-c","echo $(WID)"],"numprocesses":3,"Respawn":false,
               "warmup_delay":0.5,"GracefulTimeout":1,"StopSignal":2,"MaxAge":60,
               "flapping":{"attempts":5,"WINDOW":2.5,"RetryIn":0.1,"MaxRetry":0},"Env":["A=$(WID)"],"Dir":"/"}"#,
        )
        .unwrap();
        assert_eq!(s.num_processes, 3);
        assert!(!s.respawn);
        assert_eq!((s.warmup_delay, s.graceful_timeout, s.max_age), (0.5, 1.0, 60.0));
        assert_eq!(s.stop_signal, "2");
        assert_eq!(
            s.flapping,
            FlappingSpec {
                attempts: 5,
                window: 2.5,
                retry_in: 0.1,
                max_retry: 0
            }
        );
        assert_eq!((s.env[0].as_str(), s.dir.as_str()), ("A=$(WID)", "/"));
    }

    #[test]
    fn spec_errors_are_clear() {
        let e = |t: &str| parse_spec(t).unwrap_err().to_string();
        assert_eq!(
            e(r#"{"Path":"/bin/ls","Foo":1}"#),
            format!("unknown field \"Foo\" in the watch spec; known: {KNOWN}")
        );
        assert!(e(r#"{"Path":"/bin/ls","uid":-3}"#).contains("name or a number"));
        assert!(e(r#"{"Path":"/bin/ls","NumProcesses":-1}"#).contains("whole number"));
        assert!(e(r#"{"Path":"/bin/ls","NumProcesses":1.5}"#).contains("whole number"));
        assert!(e(r#"{"Path":"/bin/ls","GracefulTimeout":-1}"#).contains("seconds ≥ 0"));
        assert!(e(r#"{"Path":"/bin/ls","Flapping":{"Tries":1}}"#).contains("unknown field \"Tries\""));
        assert!(e(r#"{"Args":[]}"#).contains("no \"Path\""));
        assert!(e("").contains("no watch spec"));
        assert!(e("{\n\"Path\" 1}").starts_with("invalid JSON on stdin at line 2"));
    }
}
