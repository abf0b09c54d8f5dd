//! The watch spec (`mkwatch`'s JSON, a config file's `[watch.NAME]`) as the
//! tool takes it, read through serde derives (see [`lenient`]): field names
//! match case-insensitively, and Circus's snake_case spellings (like
//! `num_processes`) and names (`cmd`, `working_dir`, `copy_env`) work too;
//! unknown fields are errors. The input types here turn into the typed
//! `WatchSpec` the wire carries.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use circuit_client::{FileOutput, FlappingSpec, HooksSpec, OutputSpec, SocketSpec, WatchSpec};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::lenient::{
    self, Bytes, Command, Count, FilePath, Flag, Ident, NonZeroBytes, Port, Seconds, SignalName, Strings, Text,
};

/// How `mkwatch` reads its spec.
const SPEC: lenient::Kind = lenient::Kind {
    what: "watch spec",
    example: r#"{"Path": "/bin/sleep", "Args": ["3600"], "NumProcesses": 3}"#,
    aliases: &[("cmd", "Path"), ("workingdir", "Dir"), ("copyenv", "InheritEnv")],
    braceless: false,
};

/// The fields, in the order messages list them (the order of [`WatchInput`]).
#[cfg(test)]
const KNOWN: &str = "Path, Args, Env, Dir, NumProcesses, Respawn, WarmupDelay, GracefulTimeout, StopSignal, MaxAge, Flapping, Sockets, Stdout, Stderr, Uid, Gid, Rlimits, InheritEnv, Hooks";

/// A watch spec as written; absent fields keep `WatchSpec`'s defaults.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct WatchInput {
    path: Text,
    args: Strings,
    env: Strings,
    dir: Text,
    num_processes: Option<Count>,
    respawn: Option<Flag>,
    warmup_delay: Option<Seconds>,
    graceful_timeout: Option<Seconds>,
    stop_signal: Option<SignalName>,
    max_age: Option<Seconds>,
    flapping: FlappingInput,
    sockets: Sockets,
    stdout: Output,
    stderr: Output,
    uid: Ident,
    gid: Ident,
    rlimits: BTreeMap<String, Bytes>,
    inherit_env: Option<Flag>,
    hooks: HooksInput,
}

/// `"Flapping": {"Attempts", "Window", "RetryIn", "MaxRetry"}`.
#[derive(Deserialize, Default)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "PascalCase",
    expecting = "an object like {\"Attempts\": 2, \"Window\": 1, \"RetryIn\": 7, \"MaxRetry\": 5}"
)]
struct FlappingInput {
    attempts: Option<Count>,
    window: Option<Seconds>,
    retry_in: Option<Seconds>,
    max_retry: Option<Count>,
}

/// One of `"Sockets"`: `{"Name", "Host", "Port"}` (TCP) or `{"Name", "Path"}` (unix).
#[derive(Deserialize, Default)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "PascalCase",
    expecting = "an object like {\"Name\": \"web\", \"Port\": 8080} or {\"Name\": \"web\", \"Path\": \"/run/web.sock\"}"
)]
struct SocketInput {
    name: Text,
    host: Option<Text>,
    port: Option<Port>,
    path: Text,
    backlog: Option<Count>,
    reuseport: Option<Flag>,
}

/// `"Sockets": [...]`; `null` is none.
#[derive(Default)]
struct Sockets(Vec<SocketInput>);

impl<'de> Deserialize<'de> for Sockets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Sockets;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a list like [{"Name": "web", "Host": "127.0.0.1", "Port": 8080}]"#)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Sockets, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element()? {
                    out.push(s);
                }
                Ok(Sockets(out))
            }
        }
        d.deserialize_seq(List)
    }
}

/// The forms of `"Stdout"`/`"Stderr"`, for messages.
const OUTPUT_FORMS: &str =
    r#""discard", {"File": "/var/log/app-$(WID).log", "MaxBytes": 1048576, "Backups": 5} or {"Ring": 65536}"#;

/// `"Stdout"` / `"Stderr"`: `"discard"` (or `null`), a file, or a ring.
#[derive(Default)]
struct Output(OutputSpec);

/// The object form of [`Output`].
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct OutputFields {
    file: Option<FilePath>,
    max_bytes: Option<Bytes>,
    backups: Option<Count>,
    ring: Option<NonZeroBytes>,
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The fields of [`OutputFields`], for matching keys.
        const FIELDS: &[&str] = &["File", "MaxBytes", "Backups", "Ring"];
        struct Forms;
        impl<'de> Visitor<'de> for Forms {
            type Value = Output;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(OUTPUT_FORMS)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Output, E> {
                if s.eq_ignore_ascii_case("discard") || s.eq_ignore_ascii_case("null") {
                    Ok(Output(OutputSpec::Discard))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Output, E> {
                Ok(Output(OutputSpec::Discard))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Output, M::Error> {
                let o = OutputFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let (max_bytes, backups) = (o.max_bytes.map(|b| b.0), o.backups.map(|b| b.0));
                let spec = match (o.file, o.ring) {
                    (None, None) => OutputSpec::Discard,
                    (Some(path), None) => OutputSpec::File(FileOutput {
                        path: path.0,
                        max_bytes: max_bytes.unwrap_or(0),
                        backups: backups.unwrap_or(0),
                    }),
                    (None, Some(n)) if max_bytes.unwrap_or(0) == 0 && backups.unwrap_or(0) == 0 => {
                        OutputSpec::Ring(n.0)
                    }
                    _ => return Err(de::Error::invalid_value(de::Unexpected::Map, &self)),
                };
                Ok(Output(spec))
            }
        }
        d.deserialize_struct("Output", FIELDS, Forms)
    }
}

/// `"Hooks": {"BeforeStart": [argv…], …}`.
#[derive(Deserialize, Default)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "PascalCase",
    expecting = "an object like {\"BeforeStart\": [\"/bin/true\"]}"
)]
struct HooksInput {
    before_start: Command,
    after_start: Command,
    before_stop: Command,
    after_stop: Command,
}

/// Parses a watch spec from JSON text.
pub fn parse_spec(text: &str) -> Result<WatchSpec> {
    spec(SPEC.parse(text).map_err(anyhow::Error::msg)?)
}

/// Reads a watch spec from the fields of an object (a config file's table).
pub fn from_fields(fields: Map<String, Value>) -> Result<WatchSpec> {
    spec(SPEC.read_object(fields).map_err(anyhow::Error::msg)?)
}

/// Checks what the types cannot, and fills in the defaults.
fn spec(w: WatchInput) -> Result<WatchSpec> {
    if w.path.0.trim().is_empty() {
        bail!("the watch spec has no \"Path\"; give JSON like {}", SPEC.example);
    }
    let d = WatchSpec::default();
    let f = FlappingSpec::default();
    let sockets = w
        .sockets
        .0
        .into_iter()
        .enumerate()
        .map(|(i, s)| socket(i, s))
        .collect::<Result<_>>()?;
    Ok(WatchSpec {
        path: w.path.0,
        args: w.args.0,
        env: w.env.0,
        dir: w.dir.0,
        num_processes: w.num_processes.map_or(d.num_processes, |n| n.0),
        respawn: w.respawn.map_or(d.respawn, |b| b.0),
        warmup_delay: w.warmup_delay.map_or(d.warmup_delay, |s| s.0),
        graceful_timeout: w.graceful_timeout.map_or(d.graceful_timeout, |s| s.0),
        stop_signal: w.stop_signal.map_or(d.stop_signal, |s| s.0),
        max_age: w.max_age.map_or(d.max_age, |s| s.0),
        flapping: FlappingSpec {
            attempts: w.flapping.attempts.map_or(f.attempts, |n| n.0),
            window: w.flapping.window.map_or(f.window, |s| s.0),
            retry_in: w.flapping.retry_in.map_or(f.retry_in, |s| s.0),
            max_retry: w.flapping.max_retry.map_or(f.max_retry, |n| n.0),
        },
        sockets,
        stdout: w.stdout.0,
        stderr: w.stderr.0,
        uid: w.uid.0,
        gid: w.gid.0,
        rlimits: w
            .rlimits
            .into_iter()
            .map(|(k, n)| {
                let up = k.to_ascii_uppercase();
                (up.strip_prefix("RLIMIT_").unwrap_or(&up).to_string(), n.0)
            })
            .collect(),
        inherit_env: w.inherit_env.map_or(d.inherit_env, |b| b.0),
        hooks: HooksSpec {
            before_start: w.hooks.before_start.0,
            after_start: w.hooks.after_start.0,
            before_stop: w.hooks.before_stop.0,
            after_stop: w.hooks.after_stop.0,
        },
    })
}

/// Socket `i`, checked: a name, and either a port (TCP) or a path (unix).
fn socket(i: usize, s: SocketInput) -> Result<SocketSpec> {
    let d = SocketSpec::default();
    let (name, path) = (s.name.0, s.path.0);
    if name.is_empty() {
        bail!("Sockets[{i}] of the watch spec has no \"Name\" (used as $(socket.NAME.fd))");
    }
    let tcp = s.host.is_some() || s.port.is_some();
    if !path.is_empty() && tcp {
        bail!(
            "socket {name:?} of the watch spec has a Path and a Host or Port; give Host and Port (TCP) or Path (unix)"
        );
    }
    if path.is_empty() && s.port.is_none() {
        bail!("socket {name:?} of the watch spec has no \"Port\" (0 picks a free one) nor \"Path\" (a unix socket)");
    }
    Ok(SocketSpec {
        name,
        host: s.host.map_or(d.host, |h| h.0),
        port: s.port.map_or(d.port, |p| p.0),
        path,
        backlog: s.backlog.map_or(d.backlog, |n| n.0),
        reuseport: s.reuseport.map_or(d.reuseport, |b| b.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The spec `{"Path": "/bin/ls", key: v}`.
    fn with(key: &str, v: Value) -> Result<WatchSpec> {
        let mut m = Map::new();
        m.insert("Path".into(), json!("/bin/ls"));
        m.insert(key.into(), v);
        from_fields(m)
    }

    fn output(key: &str, v: Value) -> Result<OutputSpec> {
        with(key, v).map(|s| s.stdout)
    }

    fn ident(key: &str, v: Value) -> Result<String> {
        with(key, v).map(|s| s.uid)
    }

    fn rlimits(key: &str, v: Value) -> Result<BTreeMap<String, u64>> {
        with(key, v).map(|s| s.rlimits)
    }

    fn hooks(key: &str, v: Value) -> Result<HooksSpec> {
        with(key, v).map(|s| s.hooks)
    }

    fn boolean(key: &str, v: Value) -> Result<bool> {
        with(key, v).map(|s| s.inherit_env)
    }

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

    #[test]
    fn outputs_parse() {
        assert_eq!(output("Stdout", json!("discard")).unwrap(), OutputSpec::Discard);
        assert_eq!(output("Stdout", json!({"Ring": 100})).unwrap(), OutputSpec::Ring(100));
        assert_eq!(
            output(
                "Stdout",
                json!({"File": "/tmp/$(WID).log", "MaxBytes": 10, "Backups": 2})
            )
            .unwrap(),
            OutputSpec::File(FileOutput {
                path: "/tmp/$(WID).log".into(),
                max_bytes: 10,
                backups: 2
            })
        );
        assert!(output("Stdout", json!({"Ring": 1, "File": "/x"})).is_err());
        assert!(output("Stdout", json!({"Ring": 0})).is_err());
        assert!(
            output("Stdout", json!("file"))
                .unwrap_err()
                .to_string()
                .contains("Ring")
        );
        assert!(output("Stdout", json!({"File": "/x", "Size": 1})).is_err());
    }

    #[test]
    fn identity_limits_and_hooks_parse() {
        assert_eq!(ident("Uid", json!(65534)).unwrap(), "65534");
        assert_eq!(ident("Uid", json!("nobody")).unwrap(), "nobody");
        assert!(ident("Uid", json!(-1)).is_err());
        let r = rlimits("Rlimits", json!({"nofile": 64, "RLIMIT_CORE": 0})).unwrap();
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            [("CORE".to_string(), 0), ("NOFILE".to_string(), 64)]
        );
        assert!(rlimits("Rlimits", json!({"NOFILE": -1})).is_err());
        let h = hooks(
            "Hooks",
            json!({"before_start": ["/bin/false"], "AfterStop": ["/bin/true", "x"]}),
        )
        .unwrap();
        assert_eq!(h.before_start, ["/bin/false"]);
        assert_eq!(h.after_stop, ["/bin/true", "x"]);
        assert!(hooks("Hooks", json!({"BeforeStart": []})).is_err());
        assert!(hooks("Hooks", json!({"Before": ["/bin/true"]})).is_err());
        assert!(!boolean("InheritEnv", json!(false)).unwrap());
        assert!(boolean("InheritEnv", json!(1)).is_err());
    }
}
