//! Circuit breakers: a [`Breaker`] element held by a server and shared by
//! clients anywhere, and a [`LocalBreaker`] with the same core and API for
//! code that runs no cluster.
//!
//! A call goes: [`Breaker::allow`] a key → a [`Permit`] (or a
//! [`Rejection`] saying when to retry) → do the work, outside any lock →
//! [`Breaker::record`] the [`Outcome`]. [`Breaker::call`] does the three.
//! Every outcome counts once; a record of an older generation is ignored;
//! a permit not recorded within the spec's `PermitTtl` frees its slot.
//!
//! ```no_run
//! # async fn demo(client: circuit_client::Client) -> Result<(), circuit_client::Error> {
//! use circuit_client::{BreakerSpec, Called, FailurePolicy, Outcome};
//! let spec = BreakerSpec { failure_threshold: 3, open_timeout: 30.0, ..BreakerSpec::default() };
//! let breaker = client
//!     .walk("/X88550014d4c82e4d/payments")?
//!     .make_breaker(spec)
//!     .await?
//!     .with_policy(FailurePolicy::FailClosed);
//! let called = breaker
//!     .call("tenant-42", async { std::fs::read("/etc/hostname") }, |r| {
//!         if r.is_ok() { Outcome::Success } else { Outcome::Failure }
//!     })
//!     .await?;
//! match called {
//!     Called::Rejected(why) => println!("not now: {why}"),
//!     Called::FailedClosed(e) => println!("breaker unreachable, not run: {e}"),
//!     other => println!("ran: {:?}", other.value().map(|r| r.is_ok())),
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use circuit_proto::breaker::{BreakerCounts, KeySnapshot, SpecError, Transition};
use circuit_proto::{BreakerOp, BreakerReply, BreakerSpec, BreakerStat, ElementStat, ErrorKind, Path, WireError};
use tokio::sync::{mpsc, oneshot};

pub use circuit_breaker::{Breakers, Limits};
pub use circuit_proto::breaker::{BreakerState, Outcome, Permit, Recorded, Rejection};

use crate::anchor::Anchor;
use crate::error::Error;

/// How long [`Breaker::allow`] and [`Breaker::record`] wait for the server
/// before taking it as unreachable (see [`Breaker::with_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Anchor {
    /// Makes a breaker with `spec` here. A bad spec is refused with an
    /// error naming the field, its value and what it takes.
    pub async fn make_breaker(&self, spec: BreakerSpec) -> Result<Breaker, Error> {
        self.ask_done(BreakerOp::Make(spec)).await?;
        Ok(self.breaker())
    }

    /// A handle on the breaker held here (policy [`FailurePolicy::FailClosed`]).
    /// Nothing is checked until it is used.
    pub fn breaker(&self) -> Breaker {
        Breaker {
            anchor: self.clone(),
            policy: FailurePolicy::FailClosed,
            timeout: DEFAULT_TIMEOUT,
            session: Arc::default(),
        }
    }
}

/// What to do when the server holding the breaker cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// Run the work anyway (availability first).
    FailOpen,
    /// Do not run it (protection first).
    FailClosed,
}

impl FailurePolicy {
    /// `fail-open` or `fail-closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailOpen => "fail-open",
            FailurePolicy::FailClosed => "fail-closed",
        }
    }
}

impl std::fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to an `allow`.
#[derive(Debug)]
pub enum Admission {
    /// Admitted: do the work, then record it with this permit.
    Permit(Permit),
    /// Refused by the breaker (open, or half-open with every probe slot
    /// taken); the rejection says when to retry.
    Rejected(Rejection),
    /// The server could not be reached; `policy` decides: with
    /// [`FailurePolicy::FailOpen`] the work may run (unrecorded).
    Unreachable {
        /// The policy applied.
        policy: FailurePolicy,
        /// Why the server could not be reached.
        error: Error,
    },
}

impl Admission {
    /// True if the work may run: a permit, or an unreachable server under
    /// [`FailurePolicy::FailOpen`].
    pub fn admitted(&self) -> bool {
        matches!(
            self,
            Admission::Permit(_)
                | Admission::Unreachable {
                    policy: FailurePolicy::FailOpen,
                    ..
                }
        )
    }

    /// The permit, if the breaker gave one.
    pub fn permit(&self) -> Option<&Permit> {
        match self {
            Admission::Permit(p) => Some(p),
            _ => None,
        }
    }
}

/// What [`Breaker::call`] did.
#[derive(Debug)]
pub enum Called<T> {
    /// Admitted, ran, and recorded.
    Ran {
        /// What the work returned.
        value: T,
        /// How it was classified.
        outcome: Outcome,
        /// What the breaker made of the record.
        recorded: Recorded,
    },
    /// Admitted and ran, but the record did not reach the server (its
    /// permit will expire there).
    RanUnrecorded {
        /// What the work returned.
        value: T,
        /// How it was classified.
        outcome: Outcome,
        /// Why the record failed.
        error: Error,
    },
    /// The server was unreachable and the policy was fail-open: the work
    /// ran, unrecorded.
    RanFailOpen {
        /// What the work returned.
        value: T,
        /// How it was classified.
        outcome: Outcome,
        /// Why the server could not be reached.
        error: Error,
    },
    /// Refused by the breaker: the work did not run.
    Rejected(Rejection),
    /// The server was unreachable and the policy was fail-closed: the work
    /// did not run.
    FailedClosed(Error),
}

impl<T> Called<T> {
    /// What the work returned, if it ran.
    pub fn value(self) -> Option<T> {
        match self {
            Called::Ran { value, .. } | Called::RanUnrecorded { value, .. } | Called::RanFailOpen { value, .. } => {
                Some(value)
            }
            Called::Rejected(_) | Called::FailedClosed(_) => None,
        }
    }

    /// The failure policy that decided, if the server was unreachable.
    pub fn policy_applied(&self) -> Option<FailurePolicy> {
        match self {
            Called::RanFailOpen { .. } => Some(FailurePolicy::FailOpen),
            Called::FailedClosed(_) => Some(FailurePolicy::FailClosed),
            _ => None,
        }
    }
}

/// True if `e` means the breaker's server could not be reached (as opposed
/// to a refusal: no breaker there, a bad key).
pub fn is_unreachable(e: &Error) -> bool {
    match e {
        Error::Connect { .. }
        | Error::Handshake { .. }
        | Error::Closed(_)
        | Error::OwnerLost { .. }
        | Error::Io(_)
        | Error::Discover(_) => true,
        Error::Remote(w) => w.kind == ErrorKind::NoServer,
        _ => false,
    }
}

fn timed_out(after: Duration) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the breaker's server did not answer within {:.1} s",
            after.as_secs_f64()
        ),
    ))
}

/// A handle on a breaker element. Cheap to clone: clones share one
/// pipelined stream to the breaker (opened on first use, and again after
/// it broke), on which concurrent calls travel together.
#[derive(Clone)]
pub struct Breaker {
    anchor: Anchor,
    policy: FailurePolicy,
    timeout: Duration,
    session: Arc<SessionSlot>,
}

type Answer = oneshot::Sender<Result<BreakerReply, WireError>>;
type Tx = mpsc::UnboundedSender<(BreakerOp, Answer)>;

/// The handle's session: the sender to its writer task, and a lock that
/// lets one caller open it while the others wait.
#[derive(Default)]
struct SessionSlot {
    tx: Mutex<Option<Tx>>,
    opening: tokio::sync::Mutex<()>,
}

impl SessionSlot {
    fn live(&self) -> Option<Tx> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref().filter(|t| !t.is_closed()).cloned()
    }
}

/// Runs a session on `stream`: writes the requests of `rx` (all those
/// waiting, then one flush), and hands each answer to its caller. Ends when
/// every handle is gone or the stream breaks; the callers still waiting
/// then get an error (their answer dropped).
async fn run_session(stream: circuit_proto::conn::StreamHandle, mut rx: mpsc::UnboundedReceiver<(BreakerOp, Answer)>) {
    use circuit_proto::breaker::{SessionAnswer, SessionRequest};
    use circuit_proto::frame;
    use std::collections::HashMap;
    use tokio::io::AsyncWriteExt;

    let (rd, mut wr) = tokio::io::split(stream);
    let pending: Arc<Mutex<HashMap<u64, Answer>>> = Arc::default();
    let gone = tokio_util_like::Flag::default();
    let reader = {
        let (pending, gone) = (pending.clone(), gone.clone());
        tokio::spawn(async move {
            let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
            while let Ok(a) = frame::read_frame::<SessionAnswer, _>(&mut rd).await {
                let waiting = pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.id);
                if let Some(tx) = waiting {
                    let _ = tx.send(a.answer);
                }
            }
            gone.set();
            pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        })
    };
    let mut next = 0u64;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = gone.wait() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        buf.clear();
        {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            for (op, answer) in batch {
                next += 1;
                match frame::encode(&SessionRequest { id: next, op }) {
                    Ok(bytes) => {
                        buf.extend_from_slice(&bytes);
                        p.insert(next, answer);
                    }
                    Err(e) => {
                        let _ = answer.send(Err(WireError::new(ErrorKind::Invalid, e.to_string())));
                    }
                }
            }
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            break;
        }
    }
    // Dropping the receiver marks the slot dead; dropping the answers
    // tells their callers.
    drop(rx);
    let _ = wr.shutdown().await;
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    reader.abort();
}

/// A one-way latch a task can wait on.
mod tokio_util_like {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub struct Flag(Arc<(AtomicBool, tokio::sync::Notify)>);

    impl Flag {
        pub fn set(&self) {
            self.0.0.store(true, Ordering::SeqCst);
            self.0.1.notify_waiters();
        }

        pub async fn wait(&self) {
            loop {
                let notified = self.0.1.notified();
                if self.0.0.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        }
    }
}

impl Breaker {
    /// The element's path.
    pub fn path(&self) -> &Path {
        self.anchor.path()
    }

    /// The anchor that holds it.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    /// This handle with another policy for an unreachable server.
    pub fn with_policy(mut self, policy: FailurePolicy) -> Breaker {
        self.policy = policy;
        self
    }

    /// This handle waiting at most `timeout` for the server per request
    /// (default [`DEFAULT_TIMEOUT`]); longer counts as unreachable.
    pub fn with_timeout(mut self, timeout: Duration) -> Breaker {
        self.timeout = timeout;
        self
    }

    /// Its policy for an unreachable server.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The session's sender, opened if there is none (or it broke).
    async fn session(&self) -> Result<Tx, Error> {
        if let Some(tx) = self.session.live() {
            return Ok(tx);
        }
        let _one = self.session.opening.lock().await;
        if let Some(tx) = self.session.live() {
            return Ok(tx);
        }
        let stream = self.anchor.open(BreakerOp::Session).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_session(stream, rx));
        *self.session.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        Ok(tx)
    }

    async fn ask(&self, op: BreakerOp) -> Result<BreakerReply, Error> {
        let lost = || Error::Closed(format!("the breaker session of {}", self.path()));
        let asked = async {
            let tx = self.session().await?;
            let (answer, rx) = oneshot::channel();
            tx.send((op, answer)).map_err(|_| lost())?;
            let answer = rx.await.map_err(|_| lost())?;
            answer.map_err(Error::Remote)
        };
        match tokio::time::timeout(self.timeout, asked).await {
            Err(_) => Err(timed_out(self.timeout)),
            Ok(r) => r,
        }
    }

    /// Asks leave to make one call under `key` (created closed on first
    /// use). An unreachable server is not an error: the answer is
    /// [`Admission::Unreachable`] with the policy applied. Other failures
    /// (no breaker there, a key too long) are errors.
    pub async fn allow(&self, key: &str) -> Result<Admission, Error> {
        match self.ask(BreakerOp::Allow { key: key.to_string() }).await {
            Ok(BreakerReply::Permit(p)) => Ok(Admission::Permit(p)),
            Ok(BreakerReply::Rejected(r)) => Ok(Admission::Rejected(r)),
            Ok(r) => Err(Error::Protocol(format!("{r:?} in answer to allow"))),
            Err(e) if is_unreachable(&e) => Ok(Admission::Unreachable {
                policy: self.policy,
                error: e,
            }),
            Err(e) => Err(e),
        }
    }

    /// Records the outcome of the call made under `permit`. Idempotent: a
    /// second record is [`Recorded::Unknown`]; one of an older generation
    /// is [`Recorded::Stale`] and changes nothing.
    pub async fn record(&self, permit: &Permit, outcome: Outcome) -> Result<Recorded, Error> {
        match self
            .ask(BreakerOp::Record {
                permit: permit.clone(),
                outcome,
            })
            .await?
        {
            BreakerReply::Recorded(r) => Ok(r),
            r => Err(Error::Protocol(format!("{r:?} in answer to record"))),
        }
    }

    /// Runs `work` under the breaker for `key`: allow, then (if admitted)
    /// the work, outside any lock, then record what `classify` makes of its
    /// result. Errors are those of [`Breaker::allow`]; an unreachable
    /// server is answered by the policy ([`Called::RanFailOpen`],
    /// [`Called::FailedClosed`]).
    pub async fn call<T, F>(&self, key: &str, work: F, classify: impl FnOnce(&T) -> Outcome) -> Result<Called<T>, Error>
    where
        F: Future<Output = T>,
    {
        let admission = self.allow(key).await?;
        Ok(call_with(admission, work, classify, |p, outcome| async move {
            self.record(&p, outcome).await
        })
        .await)
    }

    async fn change(&self, op: BreakerOp) -> Result<bool, Error> {
        match self.ask(op).await? {
            BreakerReply::Changed(c) => Ok(c),
            r => Err(Error::Protocol(format!("{r:?} in answer to a change"))),
        }
    }

    /// Closes `key` with cleared counts and a new generation (permits in
    /// flight become stale). False if the key was unknown.
    pub async fn reset(&self, key: &str) -> Result<bool, Error> {
        self.change(BreakerOp::Reset { key: key.to_string() }).await
    }

    /// Opens `key` now, for the spec's `OpenTimeout`.
    pub async fn open(&self, key: &str) -> Result<bool, Error> {
        self.change(BreakerOp::Open { key: key.to_string() }).await
    }

    /// Closes `key` if it is open or half-open; true if it changed.
    pub async fn close(&self, key: &str) -> Result<bool, Error> {
        self.change(BreakerOp::Close { key: key.to_string() }).await
    }

    /// Its spec and the state of its keys (the first
    /// [`circuit_proto::breaker::MAX_PEEK_KEYS`] by key).
    pub async fn peek(&self) -> Result<BreakerStat, Error> {
        match self.anchor.stat().await? {
            Some(ElementStat::Breaker(s)) => Ok(s),
            other => Err(Error::missing_or_wrong(
                self.path(),
                "breaker",
                "breaker",
                other.as_ref(),
            )),
        }
    }

    /// Removes the breaker (and, with `--var`, its saved state).
    pub async fn scrub(&self) -> Result<(), Error> {
        self.anchor.scrub().await
    }
}

type OnTransition = Arc<dyn Fn(&Transition) + Send + Sync>;

/// An in-process breaker: the same core and semantics as a [`Breaker`]
/// element, on tokio's clock (so a paused test clock drives it), for code
/// that runs no cluster. Expired permits and open timeouts are carried out
/// by the next call. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct LocalBreaker {
    core: Arc<Mutex<Breakers>>,
    origin: tokio::time::Instant,
    on_transition: Option<OnTransition>,
}

impl LocalBreaker {
    /// A breaker with `spec` (checked) and the default [`Limits`].
    pub fn new(spec: BreakerSpec) -> Result<LocalBreaker, SpecError> {
        LocalBreaker::with_limits(spec, Limits::default())
    }

    /// A breaker with `spec` (checked) and `limits`.
    pub fn with_limits(spec: BreakerSpec, limits: Limits) -> Result<LocalBreaker, SpecError> {
        spec.validate()?;
        Ok(LocalBreaker {
            core: Arc::new(Mutex::new(Breakers::new(spec, limits))),
            origin: tokio::time::Instant::now(),
            on_transition: None,
        })
    }

    /// This breaker calling `f` for every transition, in order (from the
    /// call that made it, outside the lock).
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> LocalBreaker {
        self.on_transition = Some(Arc::new(f));
        self
    }

    fn step<T>(&self, f: impl FnOnce(&mut Breakers, Duration) -> circuit_breaker::Step<T>) -> T {
        let now = tokio::time::Instant::now().saturating_duration_since(self.origin);
        let (value, transitions) = {
            let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
            let mut transitions = core.expire(now).transitions;
            let step = f(&mut core, now);
            transitions.extend(step.transitions);
            (step.value, transitions)
        };
        if let Some(cb) = &self.on_transition {
            transitions.iter().for_each(|t| cb(t));
        }
        value
    }

    /// As [`Breaker::allow`]; never [`Admission::Unreachable`].
    pub async fn allow(&self, key: &str) -> Result<Admission, Error> {
        Ok(match self.step(|c, now| c.allow(key, now)) {
            Ok(p) => Admission::Permit(p),
            Err(r) => Admission::Rejected(r),
        })
    }

    /// As [`Breaker::record`].
    pub async fn record(&self, permit: &Permit, outcome: Outcome) -> Result<Recorded, Error> {
        Ok(self.step(|c, now| c.record(permit.id, outcome, now)))
    }

    /// As [`Breaker::call`].
    pub async fn call<T, F>(&self, key: &str, work: F, classify: impl FnOnce(&T) -> Outcome) -> Result<Called<T>, Error>
    where
        F: Future<Output = T>,
    {
        match self.allow(key).await? {
            Admission::Permit(p) => {
                let value = work.await;
                let outcome = classify(&value);
                let recorded = self.record(&p, outcome).await?;
                Ok(Called::Ran {
                    value,
                    outcome,
                    recorded,
                })
            }
            Admission::Rejected(r) => Ok(Called::Rejected(r)),
            Admission::Unreachable { error, .. } => Ok(Called::FailedClosed(error)),
        }
    }

    /// As [`Breaker::reset`].
    pub fn reset(&self, key: &str) -> bool {
        self.step(|c, now| c.reset(key, now))
    }

    /// As [`Breaker::open`]; an error if the key cannot be held.
    pub fn open(&self, key: &str) -> Result<(), Rejection> {
        self.step(|c, now| c.force_open(key, now))
    }

    /// As [`Breaker::close`].
    pub fn close(&self, key: &str) -> bool {
        self.step(|c, now| c.force_close(key, now))
    }

    /// One key's state (`None` if unknown), after carrying out what is due.
    pub fn snapshot(&self, key: &str) -> Option<KeySnapshot> {
        self.step(|c, now| {
            let t = c.expire(now).transitions;
            circuit_breaker::Step {
                value: c.snapshot(key, now),
                transitions: t,
            }
        })
    }

    /// One key's counts, as a shortcut over [`LocalBreaker::snapshot`].
    pub fn counts(&self, key: &str) -> Option<BreakerCounts> {
        self.snapshot(key).map(|s| s.counts)
    }
}

/// The rest of a `call` once `allow` has answered, for every store (a
/// breaker element, Redis): the work if admitted (or if the policy is
/// fail-open), then the record of what `classify` makes of its result.
pub(crate) async fn call_with<T, F, R, RF>(
    admission: Admission,
    work: F,
    classify: impl FnOnce(&T) -> Outcome,
    record: R,
) -> Called<T>
where
    F: Future<Output = T>,
    R: FnOnce(Permit, Outcome) -> RF,
    RF: Future<Output = Result<Recorded, Error>>,
{
    match admission {
        Admission::Rejected(r) => Called::Rejected(r),
        Admission::Unreachable {
            policy: FailurePolicy::FailClosed,
            error,
        } => Called::FailedClosed(error),
        Admission::Unreachable { error, .. } => {
            let value = work.await;
            let outcome = classify(&value);
            Called::RanFailOpen { value, outcome, error }
        }
        Admission::Permit(p) => {
            let value = work.await;
            let outcome = classify(&value);
            match record(p, outcome).await {
                Ok(recorded) => Called::Ran {
                    value,
                    outcome,
                    recorded,
                },
                Err(error) => Called::RanUnrecorded { value, outcome, error },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_threshold: 2,
            open_timeout: 10.0,
            permit_ttl: 5.0,
            ..BreakerSpec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn local_breaker_trips_waits_and_recovers_on_tokio_time() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let b = LocalBreaker::new(spec())
            .unwrap()
            .on_transition(move |t| s.lock().unwrap().push((t.from, t.to)));
        for _ in 0..2 {
            let c = b.call("k", async { Err::<(), ()>(()) }, |r| {
                if r.is_ok() { Outcome::Success } else { Outcome::Failure }
            });
            assert!(matches!(
                c.await.unwrap(),
                Called::Ran {
                    outcome: Outcome::Failure,
                    ..
                }
            ));
        }
        let c = b.call("k", async { 1 }, |_| Outcome::Success).await.unwrap();
        let Called::Rejected(Rejection::Open { retry_after }) = c else {
            panic!("{c:?}")
        };
        assert_eq!(retry_after, Duration::from_secs(10));
        tokio::time::sleep(retry_after).await;
        // Two probes at once: one slot.
        let a = b.allow("k").await.unwrap();
        assert!(a.admitted());
        assert!(matches!(
            b.allow("k").await.unwrap(),
            Admission::Rejected(Rejection::HalfOpenFull { .. })
        ));
        // Its holder vanishes: at the lease's end the slot is free (and the
        // breaker open again, a lost probe being a failure).
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(b.snapshot("k").unwrap().state, BreakerState::Open);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let c = b.call("k", async { 7 }, |_| Outcome::Success).await.unwrap();
        assert_eq!(c.value(), Some(7));
        assert_eq!(b.snapshot("k").unwrap().state, BreakerState::Closed);
        use BreakerState::*;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
        assert!(
            LocalBreaker::new(BreakerSpec {
                success_threshold: 0,
                ..spec()
            })
            .is_err()
        );
    }
}
