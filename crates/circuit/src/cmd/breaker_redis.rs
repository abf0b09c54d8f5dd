//! The breaker commands over Redis, for hosts that run no circuit cluster:
//! `mkbreaker --redis URL NAME`, `breaker exec|reset|open|close|show
//! --redis URL NAME`. A command line with `--redis` (before any `--`) after
//! `mkbreaker` or `breaker`, or any `breaker show`, is parsed and run here,
//! without dialing a cluster; the exit statuses of `breaker exec` are those of the cluster
//! form (see [`crate::cmd::breaker`]).

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use circuit_client::{Admission, FailurePolicy, KeySnapshot, RedisBreaker};
use clap::{Parser, Subcommand};

use crate::cmd::breaker::{EXIT_REJECTED, EXIT_UNREACHABLE, ExitWith, parse_spec, rejection_text, run_command, say};

/// Told under `circuit breaker --help`: the Redis forms are parsed here.
pub const AFTER_HELP: &str = "Over Redis, for hosts that run no cluster: `circuit mkbreaker --redis URL NAME`, \
    `circuit breaker exec|reset|open|close|scrub --redis URL NAME …`, `circuit breaker show --redis URL NAME` \
    (see `circuit breaker show --help`).";

/// The `circuit` command line when it names `--redis`.
#[derive(Parser, Debug)]
#[command(name = "circuit", version)]
struct RedisCli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// Store a breaker's spec (JSON on stdin) in Redis as NAME
    #[command(
        long_about = "Store a circuit breaker named NAME in the Redis server at URL; its spec is \
        JSON on stdin, as for `mkbreaker PATH` (field names case-insensitive; `{}` takes every default). \
        A bad value is refused with the field, its value and what it takes. Made again, the breaker \
        takes the new spec from its next call; its keys keep their state.\n\n\
        Example:\n  echo '{\"FailureThreshold\": 3, \"OpenTimeout\": 30}' | circuit mkbreaker --redis redis://127.0.0.1:6379 payments"
    )]
    Mkbreaker(Target),
    /// Run a command under a breaker kept in Redis, change or show its keys
    #[command(subcommand)]
    Breaker(Verb),
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Run CMD on this host under the breaker NAME in Redis: exit 0 counts as a success, any other exit as a failure
    #[command(
        long_about = "Run CMD ARGS… on this host under the breaker NAME kept in the Redis server at URL, \
        for key K (default \"default\"): as `breaker exec PATH`, with the same exit statuses (75 rejected, \
        69 Redis unreachable under --fail-closed, 127 CMD could not start, CMD's own otherwise).\n\n\
        Example:\n  circuit breaker exec --redis redis://127.0.0.1:6379 payments --key tenant-42 -- curl -fsS https://api.example/charge"
    )]
    Exec(Exec),
    /// Close a key with cleared counts and a new generation
    Reset(KeyArgs),
    /// Open a key now, for its OpenTimeout
    Open(KeyArgs),
    /// Close a key if it is open or half-open
    Close(KeyArgs),
    /// Print the breaker's spec and its keys' state, generation and counts as JSON
    Show(ShowArgs),
    /// Delete the breaker from Redis: its spec and every key's state and permits
    Scrub(Target),
}

/// `--redis URL NAME`.
#[derive(clap::Args, Debug)]
struct Target {
    /// The Redis server: redis://[:PASSWORD@]HOST:PORT[/DB] or unix:///PATH
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The breaker's name (letters, digits, '.', '_', '-', '/')
    name: String,
}

#[derive(clap::Args, Debug)]
struct KeyArgs {
    #[command(flatten)]
    target: Target,
    /// The key (a tenant, a dependency)
    #[arg(long, short = 'k', default_value = "default")]
    key: String,
}

#[derive(clap::Args, Debug)]
struct ShowArgs {
    #[command(flatten)]
    target: Target,
    /// Only this key
    #[arg(long, short = 'k')]
    key: Option<String>,
}

#[derive(clap::Args, Debug)]
struct Exec {
    #[command(flatten)]
    target: Target,
    /// The key (a tenant, a dependency)
    #[arg(long, short = 'k', default_value = "default")]
    key: String,
    /// If Redis cannot be reached, run CMD anyway (unrecorded)
    #[arg(long, conflicts_with = "fail_closed")]
    fail_open: bool,
    /// If Redis cannot be reached, do not run CMD (exit 69; the default)
    #[arg(long)]
    fail_closed: bool,
    /// Seconds to wait for Redis before taking it as unreachable
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    timeout: f64,
    /// The command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

/// True if the command line is a breaker command over Redis: `mkbreaker`
/// or `breaker` first, then `--redis` before any `--`.
fn wants_redis(argv: &[OsString]) -> bool {
    let args: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_str().unwrap_or(""))
        .take_while(|a| *a != "--")
        .collect();
    let Some(verb) = args.iter().position(|a| *a == "mkbreaker" || *a == "breaker") else {
        return false;
    };
    // `breaker show` exists only over Redis (a breaker element has `peek`).
    let show = args[verb] == "breaker" && args.get(verb + 1) == Some(&"show");
    show || args[verb..]
        .iter()
        .any(|a| *a == "--redis" || a.starts_with("--redis="))
}

/// Runs the command line here if it names `--redis`; `None` leaves it to
/// the cluster client.
pub fn intercept(argv: &[OsString]) -> Option<ExitCode> {
    if !wants_redis(argv) {
        return None;
    }
    let cli = match RedisCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("circuit: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    Some(match rt.block_on(cli.cmd.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(c) => ExitCode::from(c.0.clamp(0, 255) as u8),
            None => {
                eprintln!("circuit: {e:#}");
                ExitCode::FAILURE
            }
        },
    })
}

impl Target {
    fn breaker(&self) -> Result<RedisBreaker> {
        Ok(RedisBreaker::new(&self.redis, &self.name)?)
    }
}

impl Top {
    async fn run(self) -> Result<()> {
        match self {
            Top::Mkbreaker(t) => {
                let input = crate::stdin::read_to_string()
                    .await
                    .context("reading the breaker spec from stdin")?;
                let spec = parse_spec(&input)?;
                RedisBreaker::make(&t.redis, &t.name, spec)
                    .await
                    .with_context(|| format!("mkbreaker {} in {}", t.name, t.redis))?;
                Ok(())
            }
            Top::Breaker(Verb::Exec(e)) => e.run().await,
            Top::Breaker(Verb::Reset(a)) => a.change("reset").await,
            Top::Breaker(Verb::Open(a)) => a.change("open").await,
            Top::Breaker(Verb::Close(a)) => a.change("close").await,
            Top::Breaker(Verb::Show(a)) => a.show().await,
            Top::Breaker(Verb::Scrub(t)) => {
                let b = t.breaker()?;
                // Refuse a name that holds nothing, as `scrub PATH` does.
                b.spec().await.with_context(|| format!("breaker scrub {}", t.name))?;
                b.scrub().await.with_context(|| format!("breaker scrub {}", t.name))?;
                Ok(())
            }
        }
    }
}

impl KeyArgs {
    async fn change(self, verb: &str) -> Result<()> {
        let b = self.target.breaker()?;
        let r = match verb {
            "reset" => b.reset(&self.key).await,
            "open" => b.open(&self.key).await,
            _ => b.close(&self.key).await,
        };
        r.with_context(|| format!("breaker {verb} {}", self.target.name))?;
        Ok(())
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

fn key_json(s: &KeySnapshot) -> serde_json::Value {
    let c = &s.counts;
    serde_json::json!({
        "Key": s.key,
        "State": s.state.as_str(),
        "Generation": s.generation,
        "Counts": {
            "Requests": c.requests,
            "Successes": c.successes,
            "Failures": c.failures,
            "Excluded": c.excluded,
            "ConsecutiveSuccesses": c.consecutive_successes,
            "ConsecutiveFailures": c.consecutive_failures,
        },
        "ProbesInFlight": s.probes_in_flight,
        "PermitsInFlight": s.permits_in_flight,
        "OpenRemaining": s.open_remaining.map(secs),
    })
}

impl ShowArgs {
    async fn show(self) -> Result<()> {
        let b = self.target.breaker()?;
        let what = || format!("breaker show {}", self.target.name);
        let spec = b.spec().await.with_context(what)?;
        let keys = match &self.key {
            Some(k) => b.snapshot(k).await.with_context(what)?.into_iter().collect(),
            None => b.snapshots().await.with_context(what)?,
        };
        let out = serde_json::json!({
            "Name": b.name(),
            "Redis": b.addr(),
            "Spec": spec,
            "Keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        });
        crate::cmd::print_json(&out)
    }
}

impl Exec {
    async fn run(self) -> Result<()> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            anyhow::bail!("--timeout {}: give seconds above 0 and at most 3600", self.timeout);
        }
        let policy = if self.fail_open {
            FailurePolicy::FailOpen
        } else {
            FailurePolicy::FailClosed
        };
        let name = &self.target.name;
        let key = &self.key;
        let b = self
            .target
            .breaker()?
            .with_policy(policy)
            .with_timeout(Duration::from_secs_f64(self.timeout));
        let permit = match b.allow(key).await.with_context(|| format!("breaker exec {name}"))? {
            Admission::Permit(p) => Some(p),
            Admission::Rejected(r) => {
                say(format_args!("breaker {name} key {key:?} {}", rejection_text(&r)));
                return Err(ExitWith(EXIT_REJECTED).into());
            }
            Admission::Unreachable { error, .. } => {
                say(format_args!("breaker {name}: Redis unreachable: {error}"));
                if policy == FailurePolicy::FailClosed {
                    say(format_args!("not running {:?} (--fail-closed)", self.cmd[0]));
                    return Err(ExitWith(EXIT_UNREACHABLE).into());
                }
                say(format_args!(
                    "running {:?} anyway (--fail-open); its outcome is not recorded",
                    self.cmd[0]
                ));
                None
            }
        };
        let (status, outcome) = run_command(&self.cmd).await;
        if let Some(p) = permit
            && let Err(e) = b.record(&p, outcome).await
        {
            say(format_args!(
                "breaker {name}: the {outcome} of {:?} could not be recorded: {e}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn only_breaker_commands_naming_redis_are_taken() {
        assert!(wants_redis(&argv("circuit mkbreaker --redis redis://h:1 b")));
        assert!(wants_redis(&argv("circuit breaker exec --redis=redis://h:1 b -- true")));
        assert!(wants_redis(&argv("circuit breaker show b --redis redis://h:1")));
        // --redis after `--` belongs to CMD; other commands never.
        assert!(!wants_redis(&argv("circuit breaker exec /X1/b -- prog --redis x")));
        assert!(!wants_redis(&argv("circuit ls --redis /")));
        assert!(!wants_redis(&argv("circuit mkbreaker /X1/b")));
        assert!(wants_redis(&argv("circuit breaker show --help")));
        let cli = RedisCli::try_parse_from(argv("circuit breaker exec --redis redis://h:1 b -k t -- true x")).unwrap();
        let Top::Breaker(Verb::Exec(e)) = cli.cmd else { panic!() };
        assert_eq!((e.target.name.as_str(), e.key.as_str(), e.cmd.len()), ("b", "t", 2));
        assert!(RedisCli::try_parse_from(argv("circuit breaker reset b")).is_err());
    }
}
