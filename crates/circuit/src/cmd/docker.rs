//! `mkdkr`: a docker container element. Its spec arrives as JSON on stdin
//! (the seed's brace-less form too) and is parsed here, at the edge. The
//! other commands on a container are the process commands (stdin, stdout,
//! stderr, wait, signal) and peek, scrub: the server answers them by kind.

use anyhow::{Context as _, Result};
use circuit_client::{Client, DockerSpec, Path};
use clap::Subcommand;
use serde::Deserialize;

use crate::cmd::failed;
use crate::lenient::{self, BytesOrNull, FlagOrNull, Strings, Text};
use crate::values;

/// The docker commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and start a docker container at PATH (on a server started with -docker); its spec is JSON on stdin, like {"Image": "ubuntu", "Path": "/bin/ls", "Args": ["/"]}
    Mkdkr(Mkdkr),
}

impl Cmd {
    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkdkr(a) => a.run(client).await,
        }
    }
}

/// How `mkdkr` reads its spec.
const SPEC: lenient::Kind = lenient::Kind {
    what: "docker spec",
    example: r#"{"Image": "ubuntu", "Path": "/bin/ls", "Args": ["/"]}"#,
    aliases: &[],
    braceless: true,
};

/// A docker spec as the tool takes it: the original's `docker.Run`, field
/// names matched case-insensitively, unknown fields an error, `null` empty.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct DockerInput {
    image: Text,
    memory: BytesOrNull,
    cpu_shares: BytesOrNull,
    lxc: Strings,
    volume: Strings,
    dir: Text,
    entry: Text,
    env: Strings,
    path: Text,
    args: Strings,
    scrub: FlagOrNull,
}

/// Parses a docker spec (see [`lenient`]); the server checks the rest.
pub fn parse_spec(text: &str) -> Result<DockerSpec> {
    let input: DockerInput = SPEC.parse(text).map_err(anyhow::Error::msg)?;
    if input.image.0.trim().is_empty() {
        anyhow::bail!("the docker spec has no \"Image\"; give JSON like {}", SPEC.example);
    }
    let signed = |v: BytesOrNull, what: &str| -> Result<i64> {
        let n = v.0;
        i64::try_from(n).map_err(|_| anyhow::anyhow!("field \"{what}\" of the docker spec is too large: {n}"))
    };
    Ok(DockerSpec {
        image: input.image.0,
        memory: signed(input.memory, "Memory")?,
        cpu_shares: signed(input.cpu_shares, "CpuShares")?,
        lxc: input.lxc.0,
        volume: input.volume.0,
        dir: input.dir.0,
        entry: input.entry.0,
        env: input.env.0,
        path: input.path.0,
        args: input.args.0,
        scrub: input.scrub.0,
    })
}

/// `mkdkr [-scrub] PATH` with the spec on stdin.
#[derive(clap::Args, Debug)]
pub struct Mkdkr {
    /// Remove the element (and its container) when the container exits
    #[arg(long = "scrub")]
    scrub: bool,
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Mkdkr {
    /// Reads the spec and starts the container.
    pub async fn run(self, client: &Client) -> Result<()> {
        let input = crate::stdin::read_to_string()
            .await
            .context("reading the docker spec from stdin")?;
        let mut spec = parse_spec(&input)?;
        spec.scrub |= self.scrub;
        client
            .anchor(self.path.clone())
            .make_docker(spec)
            .await
            .map_err(|e| failed("mkdkr", &self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed README's example, exactly as typed there.
    const SEED: &str = r#"    "Image": "ubuntu",
    "Memory": 1000000000,
    "CpuShares": 3,
    "Lxc": ["lxc.cgroup.cpuset.cpus = 0,1"],
    "Volume": ["/webapp", "/src/webapp:/opt/webapp:ro"],
    "Dir": "/",
    "Entry": "",
    "Env": ["PATH=/usr/bin"],
    "Path": "/bin/ls",
    "Args": ["/"],
"#;

    #[test]
    fn the_seed_spec_parses() {
        let s = parse_spec(SEED).unwrap();
        assert_eq!(s.image, "ubuntu");
        assert_eq!(s.memory, 1_000_000_000);
        assert_eq!(s.cpu_shares, 3);
        assert_eq!(s.lxc, ["lxc.cgroup.cpuset.cpus = 0,1"]);
        assert_eq!(s.volume, ["/webapp", "/src/webapp:/opt/webapp:ro"]);
        assert_eq!((s.dir.as_str(), s.entry.as_str()), ("/", ""));
        assert_eq!(s.env, ["PATH=/usr/bin"]);
        assert_eq!(
            (s.path.as_str(), s.args.as_slice()),
            ("/bin/ls", &["/".to_string()][..])
        );
        assert!(!s.scrub);
    }

    #[test]
    fn names_are_case_insensitive_and_errors_clear() {
        let s = parse_spec(r#"{"image":"busybox","PATH":"/bin/true","scrub":true,"memory":null}"#).unwrap();
        assert_eq!(
            (s.image.as_str(), s.path.as_str(), s.scrub, s.memory),
            ("busybox", "/bin/true", true, 0)
        );
        let e = parse_spec(r#"{"Image":"x","Foo":1}"#).unwrap_err().to_string();
        assert!(
            e.starts_with(r#"unknown field "Foo" in the docker spec; known: Image, Memory"#),
            "{e}"
        );
        assert!(
            parse_spec(r#"{"Path":"/bin/ls"}"#)
                .unwrap_err()
                .to_string()
                .contains("no \"Image\"")
        );
        let e = parse_spec(r#"{"Image":"x","Memory":-1}"#).unwrap_err().to_string();
        assert!(e.contains("Memory") && e.contains("≥ 0"), "{e}");
    }
}
