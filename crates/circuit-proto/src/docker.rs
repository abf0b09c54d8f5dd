//! The docker element's types, shared by the server and the client: what to
//! run ([`DockerSpec`], the original's `docker.Run`) and what the engine says
//! of the container ([`DockerStat`], its inspect data).
//!
//! Field names are PascalCase in JSON, as in the original tool.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A container to run: `Image`, with `[Path] + Args` as its command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerSpec {
    /// The image; it must be present in the server's engine (never pulled).
    pub image: String,
    /// Memory limit in bytes; 0 means none.
    pub memory: i64,
    /// Relative CPU weight (`docker run -c`); 0 means the engine's default.
    pub cpu_shares: i64,
    /// LXC options of the original; only `lxc.cgroup.cpuset.cpus = …` is
    /// still meaningful (it becomes the container's cpuset).
    pub lxc: Vec<String>,
    /// Volumes: `/dir` (a fresh anonymous volume) or `/host:/dir[:ro]`.
    pub volume: Vec<String>,
    /// Working directory inside the container; empty means the image's.
    pub dir: String,
    /// Entrypoint; empty means the image's.
    pub entry: String,
    /// `NAME=VALUE` entries added to the image's environment.
    pub env: Vec<String>,
    /// The command; empty means the image's (then `Args` alone, if given).
    pub path: String,
    /// Arguments after the command.
    pub args: Vec<String>,
    /// Remove the element (and the container) once the container has exited.
    pub scrub: bool,
}

impl DockerSpec {
    /// A spec that runs `path` with `args` in `image`.
    pub fn new<I, S>(image: impl Into<String>, path: impl Into<String>, args: I) -> DockerSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DockerSpec {
            image: image.into(),
            path: path.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..DockerSpec::default()
        }
    }
}

/// What the engine says of a container: its inspect document (`Id`,
/// `State`, `Config`, `HostConfig`, …), as `docker inspect` shows it. It
/// travels as JSON text inside postcard (whose format cannot carry an
/// arbitrary document) and serializes to JSON as the document itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerStat {
    json: String,
}

impl DockerStat {
    /// The stat of an inspect document given as JSON text.
    pub fn from_json_text(json: String) -> DockerStat {
        DockerStat { json }
    }

    /// The inspect document as JSON text.
    pub fn json_text(&self) -> &str {
        &self.json
    }

    /// The inspect document (`Null` if the text is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.json).unwrap_or(serde_json::Value::Null)
    }

    /// `State.Status`: `created`, `running`, `paused`, `exited`, ….
    pub fn status(&self) -> Option<String> {
        self.json()["State"]["Status"].as_str().map(str::to_string)
    }

    /// `State.Running`.
    pub fn running(&self) -> bool {
        self.json()["State"]["Running"].as_bool().unwrap_or(false)
    }

    /// `State.ExitCode`, once the container has exited.
    pub fn exit_code(&self) -> Option<i64> {
        let v = self.json();
        let state = &v["State"];
        if state["Running"].as_bool().unwrap_or(true) {
            return None;
        }
        state["ExitCode"].as_i64()
    }

    /// The container's id in the engine.
    pub fn id(&self) -> Option<String> {
        self.json()["Id"].as_str().map(str::to_string)
    }

    /// The container's name in the engine (without the leading `/`).
    pub fn name(&self) -> Option<String> {
        self.json()["Name"]
            .as_str()
            .map(|n| n.trim_start_matches('/').to_string())
    }
}

// JSON (the edge): the document itself. postcard (the wire): its text.
impl Serialize for DockerStat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let v: serde_json::Value = serde_json::from_str(&self.json).map_err(serde::ser::Error::custom)?;
            return v.serialize(s);
        }
        s.serialize_str(&self.json)
    }
}

impl<'de> Deserialize<'de> for DockerStat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DockerStat, D::Error> {
        if d.is_human_readable() {
            let v = serde_json::Value::deserialize(d)?;
            return Ok(DockerStat { json: v.to_string() });
        }
        Ok(DockerStat {
            json: String::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_the_document_in_json_and_text_on_the_wire() {
        let doc = r#"{"Id":"abc","Name":"/circuit-X1-a","State":{"Status":"exited","Running":false,"ExitCode":3}}"#;
        let stat = DockerStat::from_json_text(doc.into());
        let wire = postcard::to_stdvec(&stat).unwrap();
        assert_eq!(postcard::from_bytes::<DockerStat>(&wire).unwrap(), stat);
        let json = serde_json::to_value(&stat).unwrap();
        assert_eq!(json["State"]["ExitCode"], 3);
        assert_eq!(serde_json::from_value::<DockerStat>(json).unwrap().json(), stat.json());
        assert_eq!(stat.exit_code(), Some(3));
        assert_eq!(stat.status().as_deref(), Some("exited"));
        assert!(!stat.running());
        assert_eq!(stat.name().as_deref(), Some("circuit-X1-a"));
        assert_eq!(stat.id().as_deref(), Some("abc"));
    }

    #[test]
    fn spec_round_trips() {
        let mut spec = DockerSpec::new("ubuntu", "/bin/ls", ["/"]);
        spec.volume = vec!["/webapp".into(), "/src:/opt:ro".into()];
        spec.memory = 1_000_000_000;
        let wire = postcard::to_stdvec(&spec).unwrap();
        assert_eq!(postcard::from_bytes::<DockerSpec>(&wire).unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.starts_with(r#"{"Image":"ubuntu","Memory":1000000000,"CpuShares":0,"Lxc":[]"#),
            "{json}"
        );
    }
}
