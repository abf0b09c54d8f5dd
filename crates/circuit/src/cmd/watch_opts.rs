//! Parsing of a watch spec's process options: `Stdout`/`Stderr`, `Uid`/`Gid`,
//! `Rlimits`, `InheritEnv` (Circus's `copy_env`) and `Hooks`. Called by
//! `cmd::watch::parse_spec` for those fields.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use circuit_client::{FileOutput, HooksSpec, OutputSpec};
use serde_json::Value;

const OUTPUT_FORMS: &str =
    r#""discard", {"File": "/var/log/app-$(WID).log", "MaxBytes": 1048576, "Backups": 5} or {"Ring": 65536}"#;
const KNOWN_HOOKS: &str = "BeforeStart, AfterStart, BeforeStop, AfterStop";

fn num(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| anyhow!("field {key:?} of the watch spec must be a whole number ≥ 0, not {v}"))
}

/// `Stdout` / `Stderr`.
pub fn output(key: &str, v: Value) -> Result<OutputSpec> {
    let bad = |v: &Value| anyhow!("field {key:?} of the watch spec must be {OUTPUT_FORMS}, not {v}");
    let m = match v {
        Value::Null => return Ok(OutputSpec::Discard),
        Value::String(s) if s.eq_ignore_ascii_case("discard") || s.eq_ignore_ascii_case("null") => {
            return Ok(OutputSpec::Discard);
        }
        Value::Object(m) => m,
        other => return Err(bad(&other)),
    };
    let mut file: Option<String> = None;
    let (mut ring, mut max_bytes, mut backups) = (None, 0u64, 0u32);
    for (k, v) in &m {
        let name = format!("{key}.{k}");
        match k.to_ascii_lowercase().replace('_', "").as_str() {
            "file" => match v {
                Value::String(s) if !s.trim().is_empty() => file = Some(s.clone()),
                other => bail!("field {name:?} of the watch spec must be a file path, not {other}"),
            },
            "ring" => ring = Some(num(&name, v)?),
            "maxbytes" => max_bytes = num(&name, v)?,
            "backups" => backups = u32::try_from(num(&name, v)?).map_err(|_| anyhow!("field {name:?} is too large"))?,
            _ => bail!("unknown field {k:?} in the watch spec's {key:?}; it must be {OUTPUT_FORMS}"),
        }
    }
    match (file, ring) {
        (Some(path), None) => Ok(OutputSpec::File(FileOutput {
            path,
            max_bytes,
            backups,
        })),
        (None, Some(n)) if max_bytes == 0 && backups == 0 => {
            if n == 0 {
                bail!("field \"{key}.Ring\" of the watch spec must be a number of bytes > 0");
            }
            Ok(OutputSpec::Ring(n))
        }
        _ => Err(bad(&Value::Object(m))),
    }
}

/// `Uid` / `Gid`: a name or a number.
pub fn ident(key: &str, v: Value) -> Result<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= u32::MAX as u64) => Ok(n.to_string()),
        other => bail!("field {key:?} of the watch spec must be a name or a number, not {other}"),
    }
}

/// `Rlimits`: `{"NOFILE": 1024, "CORE": 0, …}`.
pub fn rlimits(key: &str, v: Value) -> Result<BTreeMap<String, u64>> {
    let m = match v {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(m) => m,
        other => bail!("field {key:?} of the watch spec must be an object like {{\"NOFILE\": 1024}}, not {other}"),
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let n = num(&format!("{key}.{k}"), &v)?;
        let up = k.to_ascii_uppercase();
        out.insert(up.strip_prefix("RLIMIT_").unwrap_or(&up).to_string(), n);
    }
    Ok(out)
}

/// `InheritEnv` / `CopyEnv`.
pub fn boolean(key: &str, v: Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(b),
        other => bail!("field {key:?} of the watch spec must be true or false, not {other}"),
    }
}

fn argv(key: &str, v: Value) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => bail!("field {key:?} of the watch spec must be a command (a list of strings), not {other}"),
            })
            .collect(),
        other => {
            bail!("field {key:?} of the watch spec must be a command like [\"/bin/sh\", \"-c\", \"…\"], not {other}")
        }
    }
}

/// `Hooks`: `{"BeforeStart": [argv…], …}`.
pub fn hooks(key: &str, v: Value) -> Result<HooksSpec> {
    let m = match v {
        Value::Null => return Ok(HooksSpec::default()),
        Value::Object(m) => m,
        other => bail!(
            "field {key:?} of the watch spec must be an object like {{\"BeforeStart\": [\"/bin/true\"]}}, not {other}"
        ),
    };
    let mut h = HooksSpec::default();
    for (k, v) in m {
        let name = format!("{key}.{k}");
        match k.to_ascii_lowercase().replace('_', "").as_str() {
            "beforestart" => h.before_start = argv(&name, v)?,
            "afterstart" => h.after_start = argv(&name, v)?,
            "beforestop" => h.before_stop = argv(&name, v)?,
            "afterstop" => h.after_stop = argv(&name, v)?,
            _ => bail!("unknown field {k:?} in the watch spec's {key:?}; known: {KNOWN_HOOKS}"),
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
