//! The breaker commands over Redis, for hosts that run no circuit cluster:
//! `mkbreaker --redis URL NAME`, `breaker exec|reset|open|close|show|scrub
//! --redis URL NAME`. They are parsed with the cluster forms (see
//! [`crate::cmd::breaker`], which calls [`run`] when `--redis` is given) and
//! run here without dialing a cluster; `breaker exec` has the exit statuses
//! of the cluster form.

use std::time::Duration;

use anyhow::{Context, Result};
use circuit_client::{Admission, KeySnapshot, RedisBreaker};

use crate::cmd::breaker::{
    BreakerCmd, Cmd, EXIT_REJECTED, EXIT_UNREACHABLE, Exec, ExitWith, KeyArgs, ShowArgs, parse_spec, rejection_text,
    run_command, say,
};

/// Runs a breaker command on the breaker `name` kept in the Redis server
/// at `url` (both from the command line, the name already checked).
pub async fn run(cmd: Cmd, url: &str, name: &str) -> Result<()> {
    // A bad URL or name is refused before stdin is read or CMD run.
    let b = RedisBreaker::new(url, name)?;
    match cmd {
        Cmd::Mkbreaker(_) => {
            let input = crate::stdin::read_to_string()
                .await
                .context("reading the breaker spec from stdin")?;
            let spec = parse_spec(&input)?;
            RedisBreaker::make(url, name, spec)
                .await
                .with_context(|| format!("mkbreaker {name} in {url}"))?;
            Ok(())
        }
        Cmd::Breaker(BreakerCmd::Exec(e)) => exec(e, b, name).await,
        Cmd::Breaker(BreakerCmd::Reset(a)) => change(a, "reset", b, name).await,
        Cmd::Breaker(BreakerCmd::Open(a)) => change(a, "open", b, name).await,
        Cmd::Breaker(BreakerCmd::Close(a)) => change(a, "close", b, name).await,
        Cmd::Breaker(BreakerCmd::Show(a)) => show(a, b, name).await,
        Cmd::Breaker(BreakerCmd::Scrub(_)) => {
            // Refuse a name that holds nothing, as `scrub PATH` does.
            b.spec().await.with_context(|| format!("breaker scrub {name}"))?;
            b.scrub().await.with_context(|| format!("breaker scrub {name}"))?;
            Ok(())
        }
    }
}

async fn change(a: KeyArgs, verb: &str, b: RedisBreaker, name: &str) -> Result<()> {
    let r = match verb {
        "reset" => b.reset(&a.key).await,
        "open" => b.open(&a.key).await,
        _ => b.close(&a.key).await,
    };
    r.with_context(|| format!("breaker {verb} {name}"))?;
    Ok(())
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

async fn show(a: ShowArgs, b: RedisBreaker, name: &str) -> Result<()> {
    let what = || format!("breaker show {name}");
    let spec = b.spec().await.with_context(what)?;
    let keys = match &a.key {
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

async fn exec(e: Exec, b: RedisBreaker, name: &str) -> Result<()> {
    let timeout = e.wait()?;
    let policy = e.policy();
    let key = &e.key;
    let b = b.with_policy(policy).with_timeout(timeout);
    let permit = match b.allow(key).await.with_context(|| format!("breaker exec {name}"))? {
        Admission::Permit(p) => Some(p),
        Admission::Rejected(r) => {
            say(format_args!("breaker {name} key {key:?} {}", rejection_text(&r)));
            return Err(ExitWith(EXIT_REJECTED).into());
        }
        Admission::Unreachable { error, .. } => {
            say(format_args!("breaker {name}: Redis unreachable: {error}"));
            if policy == circuit_client::FailurePolicy::FailClosed {
                say(format_args!("not running {:?} (--fail-closed)", e.cmd[0]));
                return Err(ExitWith(EXIT_UNREACHABLE).into());
            }
            say(format_args!(
                "running {:?} anyway (--fail-open); its outcome is not recorded",
                e.cmd[0]
            ));
            None
        }
    };
    let (status, outcome) = run_command(&e.cmd).await;
    if let Some(p) = permit
        && let Err(err) = b.record(&p, outcome).await
    {
        say(format_args!(
            "breaker {name}: the {outcome} of {:?} could not be recorded: {err}",
            e.cmd[0]
        ));
    }
    if status == 0 {
        Ok(())
    } else {
        Err(ExitWith(status).into())
    }
}
