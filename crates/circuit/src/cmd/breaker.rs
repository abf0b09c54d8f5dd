//! Commands on breaker elements: `mkbreaker` and `breaker exec|reset|open|close`.
//! (`peek` and `scrub` work on any element: see `anchor`.)
//!
//! `breaker exec` runs a command on this host under the breaker and exits
//! with the command's status; it has statuses of its own for a rejection
//! ([`EXIT_REJECTED`]), an unreachable breaker under `--fail-closed`
//! ([`EXIT_UNREACHABLE`]) and a command that cannot start ([`EXIT_NOT_RUN`]).

use std::time::Duration;

use anyhow::{Context, Result};
use circuit_client::{Admission, Breaker, BreakerSpec, Client, FailurePolicy, Outcome, Path, Rejection};
use clap::Subcommand;

use crate::cmd::failed;
use crate::dial::DialArgs;
use crate::{lenient, values};

/// `breaker exec`: the breaker refused the call (open, or half-open with
/// every probe slot taken); stderr says when to retry. (EX_TEMPFAIL.)
pub const EXIT_REJECTED: i32 = 75;

/// `breaker exec --fail-closed` (the default): the breaker's server could
/// not be reached, so the command did not run. (EX_UNAVAILABLE.)
pub const EXIT_UNREACHABLE: i32 = 69;

/// `breaker exec`: the command could not be started (recorded as excluded).
pub const EXIT_NOT_RUN: i32 = 127;

/// An exit status a command wants, with its message already printed.
#[derive(Debug)]
pub struct ExitWith(pub i32);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// How `mkbreaker` reads its spec.
const SPEC: lenient::Kind = lenient::Kind {
    what: "breaker spec",
    example: r#"{"FailureThreshold": 5, "SuccessThreshold": 1, "HalfOpenMaxProbes": 1, "OpenTimeout": 60, "PermitTtl": 30}"#,
    aliases: &[],
    braceless: false,
};

/// Parses a breaker spec (field names case-insensitive) and checks it.
pub fn parse_spec(text: &str) -> Result<BreakerSpec> {
    let spec: BreakerSpec = SPEC.parse(text).map_err(anyhow::Error::msg)?;
    spec.validate()?;
    Ok(spec)
}

/// Reads a breaker spec from the fields of a config-file table.
pub fn spec_from_fields(fields: serde_json::Map<String, serde_json::Value>) -> Result<BreakerSpec, String> {
    let spec: BreakerSpec = SPEC.read_object(fields)?;
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The breaker commands, on a breaker element of the cluster (TARGET a
/// PATH) or, with `--redis URL`, on a breaker kept in Redis (TARGET a NAME).
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a circuit breaker at PATH (or, with --redis URL, NAME in Redis); its spec is JSON on stdin, like {"FailureThreshold": 5, "OpenTimeout": 60}
    #[command(long_about = "Make a circuit breaker element at PATH. It holds one breaker per key \
        (a tenant, a dependency), each created closed on first use, shared by every client of the cluster. \
        Its spec is JSON on stdin (field names case-insensitive; `{}` takes every default):\n\n\
        \x20 FailureThreshold   consecutive failures that open it (≥ 1; default 5)\n\
        \x20 FailureRate        optional share of failures (0 < r ≤ 1) that opens it, once MinimumCalls outcomes are counted\n\
        \x20 MinimumCalls       (≥ 1; default 10)\n\
        \x20 Window             seconds after which the closed state's counts are cleared (0 = never; default 0)\n\
        \x20 SuccessThreshold   consecutive successful probes that close it (≥ 1; default 1)\n\
        \x20 HalfOpenMaxProbes  probes in flight at once in half-open, cluster-wide (≥ 1; default 1)\n\
        \x20 OpenTimeout        seconds it stays open before admitting probes (default 60)\n\
        \x20 PermitTtl          seconds a permit stays valid; an unrecorded probe then counts as a failure (default 30)\n\n\
        A bad value is refused with the field, its value and what it takes. With `start --var DIR` the \
        state survives a restart of the server. `circuit peek PATH` shows each key's state.\n\n\
        With --redis URL, for hosts that run no cluster: the breaker NAME is stored in the Redis server \
        at URL instead (no cluster is dialed). Made again, it takes the new spec from its next call; \
        its keys keep their state. `circuit breaker show --redis URL NAME` shows its keys.\n\n\
        Examples:\n  echo '{\"FailureThreshold\": 3, \"OpenTimeout\": 30}' | circuit mkbreaker /X88550014d4c82e4d/payments\n  \
        echo '{\"FailureThreshold\": 3, \"OpenTimeout\": 30}' | circuit mkbreaker --redis redis://127.0.0.1:6379 payments")]
    Mkbreaker(Target),
    /// Run a command under a breaker, reset, open or close one of its keys; over Redis also show or scrub it
    #[command(subcommand)]
    Breaker(BreakerCmd),
}

/// `breaker exec|reset|open|close|show|scrub`.
#[derive(Subcommand, Debug)]
pub enum BreakerCmd {
    /// Run CMD on this host under the breaker at PATH (or NAME in Redis): exit 0 counts as a success, any other exit as a failure
    #[command(long_about = "Run CMD ARGS… on this host under the breaker at PATH, for key K \
        (default \"default\"). The breaker is asked first; if it admits the call, CMD runs (stdin, stdout, \
        stderr are this command's), and its result is recorded: exit status 0 is a success, any other status \
        or a signal a failure. `breaker exec` then exits with CMD's status (128+N for signal N).\n\n\
        With --redis URL, the breaker is NAME kept in the Redis server at URL (made by `mkbreaker --redis`), \
        for hosts that run no cluster: no cluster is dialed, and \"server\" below means Redis.\n\n\
        Exit statuses of its own:\n\
        \x20 75   rejected by the breaker (open, or half-open with every probe slot taken): nothing ran; \
        stderr says why and when to retry\n\
        \x20 69   the breaker's server could not be reached and the policy is --fail-closed (the default): nothing ran\n\
        \x20 127  CMD could not be started (recorded as excluded, not as a failure)\n\
        \x20 1    any other error (no breaker at PATH or NAME, a bad key, path, name or URL)\n\n\
        With --fail-open, an unreachable server does not stop CMD: it runs, unrecorded, and stderr says so.\n\
        SIGINT and SIGTERM are passed on to CMD; a CMD ended that way is recorded as excluded.\n\n\
        Examples:\n  circuit breaker exec /X88550014d4c82e4d/payments --key tenant-42 -- curl -fsS https://api.example/charge\n  \
        circuit breaker exec --redis redis://127.0.0.1:6379 payments --key tenant-42 -- curl -fsS https://api.example/charge")]
    Exec(Exec),
    /// Close a key of the breaker at PATH (or NAME in Redis) with cleared counts and a new generation
    Reset(KeyArgs),
    /// Open a key of the breaker at PATH (or NAME in Redis) now, for its OpenTimeout
    Open(KeyArgs),
    /// Close a key of the breaker at PATH (or NAME in Redis) if it is open or half-open
    Close(KeyArgs),
    /// Print the spec and keys' state, generation and counts of the breaker NAME in Redis, as JSON (a breaker element: `circuit peek PATH`)
    Show(ShowArgs),
    /// Delete the breaker NAME from Redis: its spec and every key's state and permits (a breaker element: `circuit scrub PATH`)
    Scrub(RedisTarget),
}

/// `[--redis URL] PATH|NAME`: a breaker element, or a breaker in Redis.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Keep the breaker in the Redis server at URL (redis://[:PASSWORD@]HOST:PORT[/DB] or unix:///PATH) instead of the cluster; TARGET is then a NAME, and no cluster is dialed (the dial flags are refused)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Breaker element path (/X…/name); with --redis, the breaker's name (1 to 200 letters, digits, '.', '_', '-', '/')
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// `--redis URL NAME`: the forms that exist only over Redis.
#[derive(clap::Args, Debug)]
pub struct RedisTarget {
    /// The Redis server: redis://[:PASSWORD@]HOST:PORT[/DB] or unix:///PATH
    #[arg(long, value_name = "URL", required = true)]
    pub redis: String,
    /// The breaker's name (1 to 200 letters, digits, '.', '_', '-', '/')
    #[arg(value_name = "NAME", value_parser = values::redis_name)]
    pub name: String,
}

/// Where a breaker command's breaker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A breaker element of the cluster.
    Cluster(Path),
    /// A breaker kept in Redis.
    Redis { url: String, name: String },
}

impl Target {
    /// Checks TARGET as a path, or as a breaker name with `--redis`: a bad
    /// one is a one-line error, before anything is dialed.
    pub fn place(&self) -> Result<Place> {
        match &self.redis {
            None => Ok(Place::Cluster(values::path(&self.target)?)),
            Some(url) => Ok(Place::Redis {
                url: url.clone(),
                name: values::redis_name(&self.target)?,
            }),
        }
    }
}

/// `breaker reset|open|close [--redis URL] TARGET [--key K]`
#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub target: Target,
    /// The key (a tenant, a dependency)
    #[arg(long, short = 'k', default_value = "default")]
    pub key: String,
}

/// `breaker show --redis URL NAME [--key K]`
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: RedisTarget,
    /// Only this key
    #[arg(long, short = 'k')]
    pub key: Option<String>,
}

/// `breaker exec [--redis URL] TARGET [--key K] [--fail-open|--fail-closed] -- CMD ARGS…`
#[derive(clap::Args, Debug)]
pub struct Exec {
    #[command(flatten)]
    pub target: Target,
    /// The key (a tenant, a dependency)
    #[arg(long, short = 'k', default_value = "default")]
    pub key: String,
    /// If the breaker's server (or Redis) cannot be reached, run CMD anyway (unrecorded)
    #[arg(long, conflicts_with = "fail_closed")]
    pub fail_open: bool,
    /// If the breaker's server (or Redis) cannot be reached, do not run CMD (exit 69; the default)
    #[arg(long)]
    pub fail_closed: bool,
    /// Seconds to wait for the breaker's server (or Redis) before taking it as unreachable
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    pub timeout: f64,
    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

impl Cmd {
    /// Where the command's breaker is (its TARGET checked).
    fn place(&self) -> Result<Place> {
        let t = match self {
            Cmd::Mkbreaker(t) => t,
            Cmd::Breaker(BreakerCmd::Exec(e)) => &e.target,
            Cmd::Breaker(BreakerCmd::Reset(a) | BreakerCmd::Open(a) | BreakerCmd::Close(a)) => &a.target,
            Cmd::Breaker(BreakerCmd::Show(ShowArgs { target: t, .. }) | BreakerCmd::Scrub(t)) => {
                return Ok(Place::Redis {
                    url: t.redis.clone(),
                    name: t.name.clone(),
                });
            }
        };
        t.place()
    }

    /// Runs the command: over Redis without dialing, else on the cluster
    /// as `dial` says (`breaker exec` answers an unreachable server by its
    /// failure policy).
    pub async fn run(self, dial: &DialArgs) -> Result<()> {
        let path = match self.place()? {
            Place::Redis { url, name } => {
                if let Some(flag) = dial.given.first() {
                    anyhow::bail!("{flag} dials a cluster: it cannot be used with --redis");
                }
                return crate::cmd::breaker_redis::run(self, &url, &name).await;
            }
            Place::Cluster(path) => path,
        };
        if let Cmd::Breaker(BreakerCmd::Exec(e)) = self {
            return e.run(&path, dial.connect().await).await;
        }
        let client = dial.connect().await?;
        match self {
            Cmd::Mkbreaker(_) => {
                let input = crate::stdin::read_to_string()
                    .await
                    .context("reading the breaker spec from stdin")?;
                let spec = parse_spec(&input)?;
                client
                    .anchor(path.clone())
                    .make_breaker(spec)
                    .await
                    .map_err(|e| failed("mkbreaker", &path, e))?;
                Ok(())
            }
            Cmd::Breaker(BreakerCmd::Reset(a)) => a.change("reset", &path, &client).await,
            Cmd::Breaker(BreakerCmd::Open(a)) => a.change("open", &path, &client).await,
            Cmd::Breaker(BreakerCmd::Close(a)) => a.change("close", &path, &client).await,
            // Exec is run above; show and scrub are Redis-only (place()).
            Cmd::Breaker(BreakerCmd::Exec(_) | BreakerCmd::Show(_) | BreakerCmd::Scrub(_)) => {
                unreachable!("handled above")
            }
        }
    }
}

impl KeyArgs {
    async fn change(self, verb: &str, path: &Path, client: &Client) -> Result<()> {
        let b = client.anchor(path.clone()).breaker();
        let r = match verb {
            "reset" => b.reset(&self.key).await,
            "open" => b.open(&self.key).await,
            _ => b.close(&self.key).await,
        };
        r.map_err(|e| failed(&format!("breaker {verb}"), path, e))?;
        Ok(())
    }
}

pub fn say(msg: std::fmt::Arguments<'_>) {
    eprintln!("circuit: {msg}");
}

pub fn rejection_text(r: &Rejection) -> String {
    match r {
        Rejection::Open { retry_after } => format!("is open: retry after {:.3} s", retry_after.as_secs_f64()),
        Rejection::HalfOpenFull { retry_after } => format!(
            "is half-open and every probe slot is taken: retry after {:.3} s at the latest",
            retry_after.as_secs_f64()
        ),
        other => format!("refused the call: {other}"),
    }
}

impl Exec {
    /// The policy for an unreachable server (or Redis).
    pub fn policy(&self) -> FailurePolicy {
        if self.fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailClosed
        }
    }

    /// The `--timeout`, checked.
    pub fn wait(&self) -> Result<Duration> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            anyhow::bail!("--timeout {}: give seconds above 0 and at most 3600", self.timeout);
        }
        Ok(Duration::from_secs_f64(self.timeout))
    }

    async fn run(self, path: &Path, client: Result<Client>) -> Result<()> {
        let timeout = self.wait()?;
        let policy = self.policy();
        let key = &self.key;
        let admission = match client {
            Ok(client) => {
                let b: Breaker = client
                    .anchor(path.clone())
                    .breaker()
                    .with_policy(policy)
                    .with_timeout(timeout);
                let a = b.allow(key).await.map_err(|e| failed("breaker exec", path, e))?;
                Some((b, a))
            }
            Err(e) => {
                // A dial failure that is not about reaching the server (no
                // URL given, a bad key file) stays an error.
                let reach = e
                    .downcast_ref::<circuit_client::Error>()
                    .is_some_and(circuit_client::is_unreachable);
                if !reach {
                    return Err(e);
                }
                say(format_args!("breaker {path}: cannot reach the cluster: {e:#}"));
                None
            }
        };
        let (breaker, permit) = match admission {
            Some((b, Admission::Permit(p))) => (Some(b), Some(p)),
            Some((_, Admission::Rejected(r))) => {
                say(format_args!("breaker {path} key {key:?} {}", rejection_text(&r)));
                return Err(ExitWith(EXIT_REJECTED).into());
            }
            Some((_, Admission::Unreachable { error, .. })) => {
                say(format_args!("breaker {path}: server unreachable: {error}"));
                (None, None)
            }
            None => (None, None),
        };
        if permit.is_none() {
            if policy == FailurePolicy::FailClosed {
                say(format_args!("not running {:?} (--fail-closed)", self.cmd[0]));
                return Err(ExitWith(EXIT_UNREACHABLE).into());
            }
            say(format_args!(
                "running {:?} anyway (--fail-open); its outcome is not recorded",
                self.cmd[0]
            ));
        }
        let (status, outcome) = run_command(&self.cmd).await;
        if let (Some(b), Some(p)) = (breaker, permit)
            && let Err(e) = b.record(&p, outcome).await
        {
            say(format_args!(
                "breaker {path}: the {outcome} of {:?} could not be recorded: {e}",
                self.cmd[0]
            ));
        }
        if status == 0 {
            Ok(())
        } else {
            Err(ExitWith(status).into())
        }
    }
}

/// Runs the command with this process's stdio, passing SIGINT and SIGTERM
/// on; its exit status (128+N for signal N) and the outcome to record.
pub async fn run_command(cmd: &[String]) -> (i32, Outcome) {
    use std::os::unix::process::ExitStatusExt;
    use tokio::signal::unix::{SignalKind, signal};
    let mut child = match tokio::process::Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            say(format_args!("cannot run {:?}: {e}", cmd[0]));
            return (EXIT_NOT_RUN, Outcome::Excluded);
        }
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut passed = false;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            Some(()) = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                passed = true;
                if let Some(pid) = pid { let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT); }
            }
            Some(()) = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                passed = true;
                if let Some(pid) = pid { let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM); }
            }
        }
    };
    match status {
        Ok(s) => {
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            let outcome = if passed && code != 0 {
                Outcome::Excluded
            } else if code == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            (code, outcome)
        }
        Err(e) => {
            say(format_args!("waiting for {:?}: {e}", cmd[0]));
            (EXIT_NOT_RUN, Outcome::Excluded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_case_insensitively_and_are_checked() {
        let s = parse_spec(r#"{"failurethreshold": 3, "OpenTimeout": 0.5, "half_open_max_probes": 2}"#).unwrap();
        assert_eq!((s.failure_threshold, s.half_open_max_probes), (3, 2));
        assert_eq!(s.open_timeout, 0.5);
        let e = parse_spec(r#"{"FailureThreshold": 0}"#).unwrap_err().to_string();
        assert_eq!(
            e,
            "bad breaker spec: FailureThreshold = 0: must be an integer from 1 to 1000000"
        );
        let e = parse_spec(r#"{"Bogus": 1}"#).unwrap_err().to_string();
        assert!(e.contains("Bogus"), "{e}");
        assert!(
            parse_spec("")
                .unwrap_err()
                .to_string()
                .contains("no breaker spec on stdin")
        );
        assert_eq!(parse_spec("{}").unwrap(), BreakerSpec::default());
    }
}
