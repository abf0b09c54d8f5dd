//! Commands on process elements: mkproc, stdin, stdout, stderr, wait,
//! waitall, signal. The process spec arrives as JSON on stdin and is parsed
//! here, at the edge; the wire carries a typed `ProcSpec`.

use std::io::Write;

use anyhow::{Context as _, Result, bail};
use circuit_client::{Client, Path, ProcSpec};
use clap::Subcommand;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::cmd::{failed, print_json};
use crate::lenient::{self, FlagOrNull, Strings, Text};
use crate::values;

/// The process commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Start a process at PATH; its spec is JSON on stdin, like {"Path": "/bin/ls", "Args": ["/"]}
    Mkproc(Mkproc),
    /// Copy this tool's stdin into the process (or container) at PATH, then close its stdin
    Stdin(Stdin),
    /// Copy the stdout of the process (or container) at PATH to this tool's stdout, until it ends; on a watch, print the kept stdout of its processes, each line prefixed by "[WID] "
    Stdout(Output),
    /// Copy the stderr of the process (or container) at PATH to this tool's stdout, until it ends; on a watch, as stdout
    Stderr(Output),
    /// Wait until the process (or container) at PATH exits; print its status as JSON (a container's: the engine's inspect data)
    Wait(Wait),
    /// Wait until every process (or container) named on stdin (one path a line) has exited
    Waitall(Waitall),
    /// Send a signal to the process (or container) at PATH (to every process of a watch): `signal TERM PATH` (or `signal PATH TERM`; SIGTERM, term, 15 work too)
    Signal(Signal),
}

impl Cmd {
    /// Checks what clap cannot before anything is dialed: a `signal` whose
    /// arguments are unclear exits at once with a usage error.
    pub fn check(&self) {
        if let Cmd::Signal(s) = self {
            signal_args(s.first.clone(), s.second.clone());
        }
    }

    /// Runs the command.
    pub async fn run(self, client: &Client) -> Result<()> {
        match self {
            Cmd::Mkproc(a) => a.run(client).await,
            Cmd::Stdin(a) => a.run(client).await,
            Cmd::Stdout(a) => a.run(client, false).await,
            Cmd::Stderr(a) => a.run(client, true).await,
            Cmd::Wait(a) => a.run(client).await,
            Cmd::Waitall(a) => a.run(client).await,
            Cmd::Signal(a) => a.run(client).await,
        }
    }
}

/// How `mkproc` reads its spec.
const SPEC: lenient::Kind = lenient::Kind {
    what: "process spec",
    example: r#"{"Path": "/bin/ls", "Args": ["/"]}"#,
    aliases: &[],
    braceless: true,
};

/// A process spec as the tool takes it: field names match
/// case-insensitively; unknown fields are an error; `null` leaves a field
/// empty. The field order is the order error messages list them in.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
struct ProcInput {
    env: Strings,
    dir: Text,
    path: Text,
    args: Strings,
    scrub: FlagOrNull,
}

/// Parses a process spec as the original tool took it (see [`lenient`]). For
/// the seed README's example, which lost its braces, text that does not
/// start with `{` is wrapped in braces, and a trailing comma before the
/// closing brace is tolerated.
pub fn parse_spec(text: &str) -> Result<ProcSpec> {
    let input: ProcInput = SPEC.parse(text).map_err(anyhow::Error::msg)?;
    if input.path.0.trim().is_empty() {
        bail!("the process spec has no \"Path\"; give JSON like {}", SPEC.example);
    }
    Ok(ProcSpec {
        env: input.env.0,
        dir: input.dir.0,
        path: input.path.0,
        args: input.args.0,
        scrub: input.scrub.0,
    })
}

/// `mkproc [-scrub] PATH` with the spec on stdin.
#[derive(clap::Args, Debug)]
pub struct Mkproc {
    /// Remove the element when the process exits
    #[arg(long = "scrub")]
    scrub: bool,
    /// Anchor path, /X…/name
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Mkproc {
    /// Reads the spec and starts the process.
    pub async fn run(self, client: &Client) -> Result<()> {
        let input = crate::stdin::read_to_string()
            .await
            .context("reading the process spec from stdin")?;
        let mut spec = parse_spec(&input)?;
        spec.scrub |= self.scrub;
        client
            .anchor(self.path.clone())
            .make_proc(spec)
            .await
            .map_err(|e| failed("mkproc", &self.path, e))?;
        Ok(())
    }
}

/// `stdin PATH`: the tool's stdin into the process, then close it.
#[derive(clap::Args, Debug)]
pub struct Stdin {
    /// Anchor path of a process
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Stdin {
    /// Copies the tool's stdin in, then closes the process's stdin.
    pub async fn run(self, client: &Client) -> Result<()> {
        let path = self.path;
        let proc = client.anchor(path.clone()).proc();
        let writer = proc.stdin().await.map_err(|e| failed("stdin", &path, e))?;
        writer
            .copy_from(crate::stdin::StdinThread::start())
            .await
            .map_err(|e| failed("stdin", &path, e))?;
        Ok(())
    }
}

/// `stdout PATH` / `stderr PATH`.
#[derive(clap::Args, Debug)]
pub struct Output {
    /// Anchor path of a process or a watch
    #[arg(value_parser = values::path)]
    path: Path,
    /// On a watch: only the process in this slot, without prefixes
    #[arg(long)]
    wid: Option<u32>,
}

impl Output {
    /// The process's stream to the tool's stdout. On a watch the server sends
    /// its processes' rings, each line prefixed by `[WID] `; with `wid`, only
    /// that slot's lines are printed, unprefixed.
    pub async fn run(self, client: &Client, stderr: bool) -> Result<()> {
        let path = self.path;
        let (name, proc) = (
            if stderr { "stderr" } else { "stdout" },
            client.anchor(path.clone()).proc(),
        );
        let mut out = if stderr {
            proc.stderr().await
        } else {
            proc.stdout().await
        }
        .map_err(|e| failed(name, &path, e))?;
        if let Some(wid) = self.wid {
            let mut all = Vec::new();
            out.read_to_end(&mut all)
                .await
                .with_context(|| format!("{name} {path}: reading"))?;
            let mut sink = std::io::stdout().lock();
            let _ = sink.write_all(&one_slot(&all, wid)).and_then(|_| sink.flush());
            return Ok(());
        }
        let mut buf = vec![0u8; 32 * 1024];
        let sink = std::io::stdout();
        loop {
            let n = out
                .read(&mut buf)
                .await
                .with_context(|| format!("{name} {path}: reading"))?;
            if n == 0 {
                return Ok(());
            }
            let mut sink = sink.lock();
            match sink.write_all(&buf[..n]).and_then(|_| sink.flush()) {
                Ok(()) => {}
                // Whoever reads our output has gone (`| head`): stop quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e).context("writing to stdout"),
            }
        }
    }
}

/// The lines of slot `wid` in a watch's `[WID] `-prefixed output, unprefixed.
fn one_slot(all: &[u8], wid: u32) -> Vec<u8> {
    let prefix = format!("[{wid}] ");
    all.split_inclusive(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(prefix.as_bytes()))
        .flatten()
        .copied()
        .collect()
}

/// `wait PATH`: blocks until the process ends, prints its status.
#[derive(clap::Args, Debug)]
pub struct Wait {
    /// Anchor path of a process
    #[arg(value_parser = values::path)]
    path: Path,
}

impl Wait {
    /// Waits for the end, then prints the final status.
    pub async fn run(self, client: &Client) -> Result<()> {
        let stat = client
            .anchor(self.path.clone())
            .wait()
            .await
            .map_err(|e| failed("wait", &self.path, e))?;
        print_json(&stat)
    }
}

/// `waitall` with paths on stdin.
#[derive(clap::Args, Debug)]
pub struct Waitall {}

impl Waitall {
    /// Waits for all of them, in parallel. Prints nothing; fails at the first
    /// anchor that is not a process.
    pub async fn run(self, client: &Client) -> Result<()> {
        let input = crate::stdin::read_to_string()
            .await
            .context("waitall: reading the paths from stdin")?;
        let paths = input
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(values::path)
            .collect::<Result<Vec<_>, _>>()?;
        let mut set = tokio::task::JoinSet::new();
        for path in paths {
            let anchor = client.anchor(path.clone());
            set.spawn(async move { anchor.wait().await.map_err(|e| failed("waitall", &path, e)) });
        }
        while let Some(done) = set.join_next().await {
            done.context("waitall")??;
        }
        Ok(())
    }
}

/// `signal SIG PATH` (or `signal PATH SIG`).
#[derive(clap::Args, Debug)]
pub struct Signal {
    /// The signal (TERM, SIGTERM, term, 15), or the path
    #[arg(value_name = "SIG")]
    first: String,
    /// The path (or the signal)
    #[arg(value_name = "PATH")]
    second: String,
}

impl Signal {
    /// Sends the signal.
    pub async fn run(self, client: &Client) -> Result<()> {
        let (sig, arg) = signal_args(self.first, self.second);
        let path = values::path(&arg)?;
        client
            .anchor(path.clone())
            .proc()
            .signal(&sig)
            .await
            .map_err(|e| failed("signal", &path, e))
    }
}

/// Sorts `signal SIG PATH` / `signal PATH SIG`: the path is the argument
/// that starts with `/`. Exits with a usage error (2) when that is unclear.
pub fn signal_args(a: String, b: String) -> (String, String) {
    match (a.starts_with('/'), b.starts_with('/')) {
        (false, true) => (a, b),
        (true, false) => (b, a),
        _ => clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("signal needs a signal and an anchor path, like `signal TERM /X…/name`; got {a:?} and {b:?}\n"),
        )
        .exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_leniently() {
        let s = parse_spec(r#"{"Path":"/bin/ls","Args":["/"]}"#).unwrap();
        assert_eq!(s, ProcSpec::new("/bin/ls", ["/"]));
        // The seed README's form: no braces, a trailing comma.
        let s = parse_spec("    \"Path\": \"/bin/ls\", \n").unwrap();
        assert_eq!(s, ProcSpec::new("/bin/ls", Vec::<String>::new()));
        let s = parse_spec("{\n \"path\": \"/bin/sh\",\n \"ARGS\": [\"-c\", \"true\"], \"env\": [\"A=1\"],\n \"Dir\": \"/tmp\", \"scrub\": true,\n}\n").unwrap();
        assert_eq!(s.args, ["-c", "true"]);
        assert_eq!(s.env, ["A=1"]);
        assert_eq!(s.dir, "/tmp");
        assert!(s.scrub);
        let s = parse_spec(r#"{"Path":"/bin/ls","Env":null,"Args":null,"Dir":null,"Scrub":null}"#).unwrap();
        assert!(s.env.is_empty() && s.args.is_empty());
    }

    #[test]
    fn spec_errors_are_clear() {
        let e = parse_spec(r#"{"Path":"/bin/ls","Foo":1}"#).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"unknown field "Foo" in the process spec; known: Env, Dir, Path, Args, Scrub"#
        );
        let e = parse_spec("{\n\"Path\": \"/bin/ls\",\n\"Args\" [\"/\"]\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid JSON on stdin at line 3 column 8: expected `:`"),
            "{e}"
        );
        let e = parse_spec("\"Path\" \"/bin/ls\"").unwrap_err().to_string();
        assert!(e.starts_with("invalid JSON on stdin at line 1 column 8:"), "{e}");
        assert!(parse_spec("").unwrap_err().to_string().contains("no process spec"));
        assert!(parse_spec("[1]").unwrap_err().to_string().contains("invalid JSON"));
        assert!(
            parse_spec(r#"{"Args":["/"]}"#)
                .unwrap_err()
                .to_string()
                .contains("no \"Path\"")
        );
        let e = parse_spec(r#"{"Path":"/bin/ls","Args":"/"}"#).unwrap_err().to_string();
        assert!(
            e.contains(r#"field "Args" of the process spec must be a list of strings"#),
            "{e}"
        );
        let e = parse_spec(r#"{"Path":"/bin/ls","Scrub":"yes"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn signal_argument_order() {
        assert_eq!(
            signal_args("TERM".into(), "/X1/a".into()),
            ("TERM".to_string(), "/X1/a".to_string())
        );
        assert_eq!(
            signal_args("/X1/a".into(), "15".into()),
            ("15".to_string(), "/X1/a".to_string())
        );
    }
}
