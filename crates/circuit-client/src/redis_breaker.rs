//! [`RedisBreaker`]: the breaker's core over a Redis server, for programs
//! that run no circuit cluster (feature `redis`).
//!
//! Each operation is one Lua script run atomically by Redis (`EVALSHA`,
//! loaded once per server): it reads the spec, carries out what is due on
//! the key (an expired probe, an ended open timeout), takes the decision,
//! stores the key and returns the transitions it made. No lock is held
//! while the protected work runs, and the only clock is Redis's `TIME`.
//!
//! Key layout for a breaker NAME (the `{NAME}` hash tag keeps a breaker's
//! keys in one cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `circuit:breaker:{NAME}:spec` | hash | the spec (no expiry) |
//! | `circuit:breaker:{NAME}:ids` | string | the last permit id given |
//! | `circuit:breaker:{NAME}:state:KEY` | hash | state, generation, counts, open and window deadlines |
//! | `circuit:breaker:{NAME}:permits:KEY` | sorted set | `GEN:ID` of permits in flight, by lease end |
//! | `circuit:breaker:{NAME}:probes:KEY` | sorted set | half-open probes of the current generation, by lease end |
//!
//! A key's three entries expire together an idle time (default 7 days)
//! after the last of: its last use, its open timeout's end, its window's
//! end, its last lease's end. Transitions are published as JSON on the
//! channel `circuit:breaker:NAME`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), circuit_client::Error> {
//! use circuit_client::{BreakerSpec, Called, FailurePolicy, Outcome, RedisBreaker};
//! let spec = BreakerSpec { failure_threshold: 3, ..BreakerSpec::default() };
//! let b = RedisBreaker::make("redis://127.0.0.1:6379", "payments", spec)
//!     .await?
//!     .with_policy(FailurePolicy::FailOpen);
//! let called = b
//!     .call("tenant-42", async { std::fs::read("/etc/hostname") }, |r| {
//!         if r.is_ok() { Outcome::Success } else { Outcome::Failure }
//!     })
//!     .await?;
//! if let Called::Rejected(why) = &called {
//!     println!("not now: {why}");
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use circuit_breaker::{Counts, KeySnapshot, Outcome, Permit, Recorded, Rejection, Spec, State, Transition};
use circuit_proto::{ErrorKind, WireError};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::breaker::{Admission, Called, FailurePolicy};
use crate::error::Error;

/// The script every operation runs.
const SCRIPT: &str = include_str!("redis_breaker.lua");

/// Longest key taken, in bytes (as the core's default [`circuit_breaker::Limits`]).
pub const REDIS_MAX_KEY_LEN: usize = 1024;

/// How long a key nobody uses is kept after its last deadline (see
/// [`RedisBreaker::with_idle_ttl`]).
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Keys [`RedisBreaker::snapshots`] reads at most.
pub const MAX_SHOW_KEYS: usize = 10_000;

type OnTransition = Arc<dyn Fn(&Transition) + Send + Sync>;

/// A breaker kept in Redis: the same semantics and API as a cluster
/// [`crate::Breaker`] (allow, record, call, reset, open, close), many keys
/// per breaker, shared by every program that uses the same server and
/// name. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisBreaker {
    conn: ConnectionManager,
    name: String,
    /// The server as shown in messages (no password).
    addr: String,
    prefix: String,
    channel: Option<String>,
    policy: FailurePolicy,
    timeout: Duration,
    idle: Duration,
    script: Arc<redis::Script>,
    on_transition: Option<OnTransition>,
}

impl std::fmt::Debug for RedisBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBreaker")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Checks a breaker name: 1 to 200 bytes of letters, digits, `.`, `_`,
/// `-` and `/` (it becomes part of Redis keys and a channel name).
pub fn check_redis_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bad breaker name {name:?}: give 1 to 200 letters, digits, '.', '_', '-' or '/'"
        )))
    }
}

fn invalid(msg: String) -> Error {
    Error::Remote(WireError::new(ErrorKind::Invalid, msg))
}

/// True if a Redis error means the server could not be reached or cannot
/// serve now (as opposed to a refusal or a bug).
fn unreachable_error(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            K::Server(S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown)
        )
}

/// The server's address for messages: `host:port` (or the socket path),
/// never the password.
fn display_addr(client: &redis::Client) -> String {
    format!("redis://{}", client.get_connection_info().addr())
}

fn state_of(s: &str) -> Option<State> {
    match s {
        "closed" => Some(State::Closed),
        "open" => Some(State::Open),
        "half-open" => Some(State::HalfOpen),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn micros(v: &Value) -> Option<Duration> {
    int(v).map(|us| Duration::from_micros(us.max(0) as u64))
}

/// One script answer: a tag, three numbers or a state, the transitions,
/// and (for `show`) the counts.
#[derive(Debug)]
struct Answer {
    tag: String,
    fields: Vec<Value>,
    transitions: Vec<Transition>,
}

fn parse_answer(key: &str, v: Value) -> Option<Answer> {
    let Value::Array(items) = v else { return None };
    let tag = text(items.first()?)?.to_string();
    let mut transitions = Vec::new();
    if let Some(Value::Array(ts)) = items.get(4) {
        for t in ts {
            let Value::Array(t) = t else { return None };
            transitions.push(Transition {
                key: key.to_string(),
                from: state_of(text(t.first()?)?)?,
                to: state_of(text(t.get(1)?)?)?,
                generation: int(t.get(2)?)? as u64,
            });
        }
    }
    Some(Answer {
        tag,
        fields: items,
        transitions,
    })
}

impl RedisBreaker {
    /// A handle on the breaker `name` in the Redis server at `url`
    /// (`redis://[:PASSWORD@]HOST:PORT[/DB]` or `unix:///PATH`). Nothing is
    /// asked of the server until it is used: an unreachable one is answered
    /// by the [`FailurePolicy`] (default fail-closed) at each call. Call it
    /// within a Tokio runtime (its connection lives there): outside one it
    /// is an error.
    pub fn new(url: &str, name: &str) -> Result<RedisBreaker, Error> {
        check_redis_name(name)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(invalid("RedisBreaker::new outside a Tokio runtime".to_string()));
        }
        let client = redis::Client::open(url).map_err(|e| invalid(format!("bad Redis URL {url:?}: {e}")))?;
        let addr = display_addr(&client);
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(crate::breaker::DEFAULT_TIMEOUT))
            .set_response_timeout(Some(crate::breaker::DEFAULT_TIMEOUT));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| invalid(format!("Redis client for {addr}: {e}")))?;
        Ok(RedisBreaker {
            conn,
            name: name.to_string(),
            addr,
            prefix: format!("circuit:breaker:{{{name}}}"),
            channel: Some(format!("circuit:breaker:{name}")),
            policy: FailurePolicy::FailClosed,
            timeout: crate::breaker::DEFAULT_TIMEOUT,
            idle: DEFAULT_IDLE_TTL,
            script: Arc::new(redis::Script::new(SCRIPT)),
            on_transition: None,
        })
    }

    /// Stores `spec` (checked first: a bad one is refused with the field,
    /// its value and what it takes) as the breaker `name`'s, then returns a
    /// handle on it. A breaker made again takes the new spec from its next
    /// call; its keys keep their state.
    pub async fn make(url: &str, name: &str, spec: Spec) -> Result<RedisBreaker, Error> {
        spec.validate().map_err(|e| invalid(e.to_string()))?;
        let b = RedisBreaker::new(url, name)?;
        b.store_spec(&spec).await?;
        Ok(b)
    }

    /// This handle with another policy for an unreachable server.
    pub fn with_policy(mut self, policy: FailurePolicy) -> RedisBreaker {
        self.policy = policy;
        self
    }

    /// This handle waiting at most `timeout` for Redis per operation
    /// (default [`crate::breaker::DEFAULT_TIMEOUT`]); longer counts as
    /// unreachable.
    pub fn with_timeout(mut self, timeout: Duration) -> RedisBreaker {
        self.timeout = timeout;
        self
    }

    /// This handle keeping keys it writes for `idle` after their last
    /// deadline (default [`DEFAULT_IDLE_TTL`]; at least one second).
    pub fn with_idle_ttl(mut self, idle: Duration) -> RedisBreaker {
        self.idle = idle.max(Duration::from_secs(1));
        self
    }

    /// This handle publishing transitions on `circuit:breaker:NAME` (the
    /// default) or not.
    pub fn with_publish(mut self, publish: bool) -> RedisBreaker {
        self.channel = publish.then(|| format!("circuit:breaker:{}", self.name));
        self
    }

    /// This handle calling `f` for every transition its own calls make, in
    /// order (transitions made by other clients are published on the
    /// channel).
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> RedisBreaker {
        self.on_transition = Some(Arc::new(f));
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server, as `redis://HOST:PORT` (no password).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its policy for an unreachable server.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The channel its transitions are published on, if any.
    pub fn channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// The Redis key of the spec.
    pub fn spec_key(&self) -> String {
        format!("{}:spec", self.prefix)
    }

    /// The Redis keys of one breaker key: its state hash, its permits and
    /// its probes sorted sets.
    pub fn key_layout(&self, key: &str) -> [String; 3] {
        [
            format!("{}:state:{key}", self.prefix),
            format!("{}:permits:{key}", self.prefix),
            format!("{}:probes:{key}", self.prefix),
        ]
    }

    fn unreachable(&self, e: redis::RedisError) -> Error {
        Error::Connect {
            addr: self.addr.clone(),
            err: std::io::Error::other(e.to_string()),
        }
    }

    fn failed(&self, e: redis::RedisError) -> Error {
        if unreachable_error(&e) {
            self.unreachable(e)
        } else {
            Error::Protocol(format!("Redis {}: {e}", self.addr))
        }
    }

    /// Runs a Redis future under the timeout.
    async fn timed<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(Error::Connect {
                addr: self.addr.clone(),
                err: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:.1} s", self.timeout.as_secs_f64()),
                ),
            }),
            Ok(r) => r.map_err(|e| self.failed(e)),
        }
    }

    async fn store_spec(&self, spec: &Spec) -> Result<(), Error> {
        let us = |s: f64| (s * 1e6).round() as i64;
        let json = serde_json::to_string(spec).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.spec_key())
            .arg("FailureThreshold")
            .arg(spec.failure_threshold)
            .arg("FailureRate")
            .arg(spec.failure_rate.map(|r| r.to_string()).unwrap_or_default())
            .arg("WindowUs")
            .arg(us(spec.window))
            .arg("MinimumCalls")
            .arg(spec.minimum_calls)
            .arg("SuccessThreshold")
            .arg(spec.success_threshold)
            .arg("HalfOpenMaxProbes")
            .arg(spec.half_open_max_probes)
            .arg("OpenTimeoutUs")
            .arg(us(spec.open_timeout))
            .arg("PermitTtlUs")
            .arg(us(spec.permit_ttl))
            .arg("Json")
            .arg(json);
        let mut conn = self.conn.clone();
        self.timed(async move { cmd.query_async::<Value>(&mut conn).await })
            .await?;
        Ok(())
    }

    fn no_breaker(&self) -> Error {
        Error::Remote(WireError::new(
            ErrorKind::NotFound,
            format!(
                "no breaker {:?} in {} (make it with `circuit mkbreaker --redis {} {}`)",
                self.name, self.addr, self.addr, self.name
            ),
        ))
    }

    /// The breaker's spec, as stored.
    pub async fn spec(&self) -> Result<Spec, Error> {
        let mut conn = self.conn.clone();
        let key = self.spec_key();
        let json: Option<String> = self
            .timed(async move { redis::cmd("HGET").arg(key).arg("Json").query_async(&mut conn).await })
            .await?;
        let json = json.ok_or_else(|| self.no_breaker())?;
        serde_json::from_str(&json).map_err(|e| Error::Protocol(format!("the spec stored in {}: {e}", self.addr)))
    }

    /// Runs the script for `op` on `key` and hands its transitions to the
    /// callback.
    async fn run(&self, op: &str, key: &str, extra: &[String]) -> Result<Answer, Error> {
        let [state, permits, probes] = self.key_layout(key);
        let mut inv = self.script.prepare_invoke();
        inv.key(self.spec_key())
            .key(format!("{}:ids", self.prefix))
            .key(state)
            .key(permits)
            .key(probes)
            .arg(op)
            .arg(key)
            .arg(self.channel.as_deref().unwrap_or(""))
            .arg(self.idle.as_millis() as u64);
        for a in extra {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let v: Value = self.timed(async move { inv.invoke_async(&mut conn).await }).await?;
        let answer = parse_answer(key, v)
            .ok_or_else(|| Error::Protocol(format!("Redis {}: the breaker script answered oddly", self.addr)))?;
        if answer.tag == "nobreaker" {
            return Err(self.no_breaker());
        }
        if let Some(cb) = &self.on_transition {
            answer.transitions.iter().for_each(|t| cb(t));
        }
        Ok(answer)
    }

    fn odd(&self, what: &str, a: &Answer) -> Error {
        Error::Protocol(format!(
            "Redis {}: unexpected {} answer {:?} to {what}",
            self.addr, a.tag, a.fields
        ))
    }

    /// The decision for one call under `key`, or a Redis error.
    async fn allow_raw(&self, key: &str) -> Result<Result<Permit, Rejection>, Error> {
        if key.len() > REDIS_MAX_KEY_LEN {
            return Ok(Err(Rejection::KeyTooLong {
                len: key.len(),
                max: REDIS_MAX_KEY_LEN,
            }));
        }
        let a = self.run("allow", key, &[]).await?;
        let f = |i: usize| a.fields.get(i).and_then(int);
        let us = |i: usize| a.fields.get(i).and_then(micros);
        match (a.tag.as_str(), f(1), f(2), us(3)) {
            ("permit", Some(generation), Some(id), Some(lease)) => Ok(Ok(Permit {
                key: key.to_string(),
                generation: generation as u64,
                id: id as u64,
                lease,
            })),
            ("open", ..) => Ok(Err(Rejection::Open {
                retry_after: us(1).unwrap_or_default(),
            })),
            ("full", ..) => Ok(Err(Rejection::HalfOpenFull {
                retry_after: us(1).unwrap_or_default(),
            })),
            _ => Err(self.odd("allow", &a)),
        }
    }

    /// Asks leave to make one call under `key` (created closed on first
    /// use). An unreachable server is not an error: the answer is
    /// [`Admission::Unreachable`] with the policy applied. Other failures
    /// (no breaker of that name) are errors.
    pub async fn allow(&self, key: &str) -> Result<Admission, Error> {
        match self.allow_raw(key).await {
            Ok(Ok(p)) => Ok(Admission::Permit(p)),
            Ok(Err(r)) => Ok(Admission::Rejected(r)),
            Err(e) if crate::breaker::is_unreachable(&e) => Ok(Admission::Unreachable {
                policy: self.policy,
                error: e,
            }),
            Err(e) => Err(e),
        }
    }

    /// Records the outcome of the call made under `permit`. Idempotent: a
    /// second record is [`Recorded::Unknown`] (as is one whose lease has
    /// ended); one of an older generation is [`Recorded::Stale`] and
    /// changes nothing.
    pub async fn record(&self, permit: &Permit, outcome: Outcome) -> Result<Recorded, Error> {
        let extra = [
            permit.generation.to_string(),
            permit.id.to_string(),
            outcome.as_str().to_string(),
        ];
        let a = self.run("record", &permit.key, &extra).await?;
        let f = |i: usize| a.fields.get(i).and_then(int);
        match (a.tag.as_str(), f(1), f(2)) {
            ("counted", ..) => Ok(Recorded::Counted),
            ("unknown", ..) => Ok(Recorded::Unknown),
            ("stale", Some(g), Some(c)) => Ok(Recorded::Stale {
                generation: g as u64,
                current: c as u64,
            }),
            _ => Err(self.odd("record", &a)),
        }
    }

    /// Runs `work` under the breaker for `key`: allow, then (if admitted)
    /// the work, outside any lock, then record what `classify` makes of its
    /// result. An unreachable server is answered by the policy
    /// ([`Called::RanFailOpen`], [`Called::FailedClosed`]).
    pub async fn call<T, F>(&self, key: &str, work: F, classify: impl FnOnce(&T) -> Outcome) -> Result<Called<T>, Error>
    where
        F: Future<Output = T>,
    {
        let admission = self.allow(key).await?;
        Ok(
            crate::breaker::call_with(admission, work, classify, |p, outcome| async move {
                self.record(&p, outcome).await
            })
            .await,
        )
    }

    async fn change(&self, op: &str, key: &str) -> Result<bool, Error> {
        let a = self.run(op, key, &[]).await?;
        match a.tag.as_str() {
            "changed" => Ok(true),
            "unchanged" => Ok(false),
            _ => Err(self.odd(op, &a)),
        }
    }

    /// Closes `key` with cleared counts and a new generation (permits in
    /// flight become stale). False if the key was unknown.
    pub async fn reset(&self, key: &str) -> Result<bool, Error> {
        self.change("reset", key).await
    }

    /// Opens `key` now (created if new), for the spec's `OpenTimeout`, with
    /// a new generation even if it was open.
    pub async fn open(&self, key: &str) -> Result<bool, Error> {
        if key.len() > REDIS_MAX_KEY_LEN {
            return Err(invalid(
                Rejection::KeyTooLong {
                    len: key.len(),
                    max: REDIS_MAX_KEY_LEN,
                }
                .to_string(),
            ));
        }
        self.change("open", key).await
    }

    /// Closes `key` if it is open or half-open; true if it changed.
    pub async fn close(&self, key: &str) -> Result<bool, Error> {
        self.change("close", key).await
    }

    /// One key as it stands (`None` if unknown), after carrying out what
    /// is due on it (an ended open timeout is stored as half-open, once).
    pub async fn snapshot(&self, key: &str) -> Result<Option<KeySnapshot>, Error> {
        let a = self.run("show", key, &[]).await?;
        if a.tag == "none" {
            return Ok(None);
        }
        let parsed = (|| {
            let state = state_of(text(a.fields.get(1)?)?)?;
            let generation = int(a.fields.get(2)?)? as u64;
            let open = int(a.fields.get(3)?)?;
            let Value::Array(c) = a.fields.get(5)? else { return None };
            let n = |i: usize| c.get(i).and_then(int).map(|v| v.max(0) as u64);
            Some(KeySnapshot {
                key: key.to_string(),
                state,
                generation,
                counts: Counts {
                    requests: n(0)?,
                    successes: n(1)?,
                    failures: n(2)?,
                    excluded: n(3)?,
                    consecutive_successes: n(4)?,
                    consecutive_failures: n(5)?,
                },
                probes_in_flight: n(6)? as u32,
                permits_in_flight: n(7)? as u32,
                open_remaining: (open >= 0).then(|| Duration::from_micros(open as u64)),
            })
        })();
        match (a.tag.as_str(), parsed) {
            ("snapshot", Some(s)) => Ok(Some(s)),
            _ => Err(self.odd("show", &a)),
        }
    }

    /// The keys this breaker holds, sorted (at most [`MAX_SHOW_KEYS`]).
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        let lead = format!("{}:state:", self.prefix);
        let names: Vec<Vec<u8>> = self.scan(&format!("{lead}*")).await?;
        let mut keys: Vec<String> = names
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter_map(|n| n.strip_prefix(&lead).map(str::to_string))
            .collect();
        keys.sort();
        keys.truncate(MAX_SHOW_KEYS);
        Ok(keys)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        // Bounded: a full pass over a large keyspace takes many rounds, but
        // never more than this.
        for _ in 0..100_000 {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let (next, batch): (u64, Vec<Vec<u8>>) =
                self.timed(async move { cmd.query_async(&mut conn).await }).await?;
            out.extend(batch);
            cursor = next;
            if cursor == 0 || out.len() > 4 * MAX_SHOW_KEYS {
                break;
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every key as it stands, sorted by key (at most [`MAX_SHOW_KEYS`]).
    pub async fn snapshots(&self) -> Result<Vec<KeySnapshot>, Error> {
        let mut out = Vec::new();
        for k in self.keys().await? {
            if let Some(s) = self.snapshot(&k).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Deletes the breaker: its spec, its id counter and every key's state
    /// and permits. Permits in flight become unknown.
    pub async fn scrub(&self) -> Result<(), Error> {
        let mut names = self.scan(&format!("{}:*", self.prefix)).await?;
        names.push(self.spec_key().into_bytes());
        for chunk in names.chunks(500) {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("DEL");
            for n in chunk {
                cmd.arg(n);
            }
            self.timed(async move { cmd.query_async::<Value>(&mut conn).await })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_redis_name("payments").unwrap();
        check_redis_name("team/a.b_c-1").unwrap();
        for bad in ["", "a b", "a{b}", "a*", "a:b", &"x".repeat(201)] {
            let e = check_redis_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad breaker name"), "{e}");
        }
    }

    #[test]
    fn answers_parse_with_their_transitions() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            b("permit"),
            Value::Int(3),
            Value::Int(17),
            Value::Int(30_000_000),
            Value::Array(vec![Value::Array(vec![b("open"), b("half-open"), Value::Int(3)])]),
        ]);
        let a = parse_answer("k", v).unwrap();
        assert_eq!(a.tag, "permit");
        assert_eq!(
            a.transitions,
            vec![Transition {
                key: "k".into(),
                from: State::Open,
                to: State::HalfOpen,
                generation: 3
            }]
        );
        assert_eq!(micros(&a.fields[3]), Some(Duration::from_secs(30)));
        // A transition with an unknown state is refused, not guessed.
        let bad = Value::Array(vec![
            b("permit"),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Array(vec![Value::Array(vec![b("ajar"), b("open"), Value::Int(1)])]),
        ]);
        assert!(parse_answer("k", bad).is_none());
        assert!(parse_answer("k", Value::Nil).is_none());
    }

    #[test]
    fn bad_urls_and_specs_are_refused_before_any_io() {
        let e = RedisBreaker::new("redis://127.0.0.1:1", "b").unwrap_err().to_string();
        assert_eq!(e, "RedisBreaker::new outside a Tokio runtime");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(async { RedisBreaker::new("http://x", "b").unwrap_err().to_string() });
        assert!(e.starts_with("bad Redis URL"), "{e}");
        let e = rt
            .block_on(RedisBreaker::make(
                "redis://127.0.0.1:1",
                "b",
                Spec {
                    half_open_max_probes: 0,
                    ..Spec::default()
                },
            ))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad breaker spec: HalfOpenMaxProbes = 0"), "{e}");
    }
}
