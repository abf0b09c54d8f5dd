//! The channel element: a Go-like channel of byte messages.
//!
//! The policy is [`Core`]: plain data and functions, no I/O, no time. It
//! holds the buffer, the queues of waiting senders and receivers and the
//! closed/aborted flags, and answers every call with the [`Effect`]s the
//! caller must carry out (wake this sender, hand that message to that
//! receiver). [`Chan`] is the async shell around it: one lock around the
//! core, oneshot channels to wake waiters, and a bounded in-memory pipe per
//! message.
//!
//! Semantics:
//! - A message is a pipe of [`MESSAGE_BUFFER`] bytes. `send` waits until the
//!   message has a place: a waiting receiver, or room among the `cap`
//!   buffered messages. The sender then writes; up to [`MESSAGE_BUFFER`]
//!   bytes go into the pipe without a reader, more wait for the receiver.
//!   Messages are received in the order their senders got a place.
//! - `recv` takes the first message and reads ahead up to
//!   [`MESSAGE_BUFFER`] bytes before handing it over. So a message of that
//!   size or less is handed over whole or not at all; a longer one streams.
//! - A sender that goes away before its message is whole (client killed,
//!   connection lost) abandons it: the message is dropped, frees its buffer
//!   slot and is not counted. A receiver reading ahead skips it silently; a
//!   receiver already streaming a longer message gets
//!   [`ChanError::SenderGone`].
//! - A receiver that goes away while waiting, or after taking a message but
//!   before any of it was handed on, puts the message back at the head of
//!   the channel. One that goes away in the middle of a message loses it;
//!   its sender, if still writing, gets [`ChanError::ReceiverGone`].
//! - `close`: later sends fail with "channel closed"; senders already
//!   waiting still deliver; receivers drain the channel, then fail with
//!   "channel closed". Closing twice fails with "channel already closed".
//! - `abort` (scrub): waiting senders and receivers fail with "channel
//!   aborted", buffered messages are dropped, every later call fails the
//!   same way. Messages already handed to a receiver finish streaming.
//! - `NumSend` counts messages whose sender finished writing them,
//!   `NumRecv` messages handed on whole to a receiver.

pub(crate) mod ops;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

/// Bytes a message holds without a receiver reading it.
pub const MESSAGE_BUFFER: usize = 32 * 1024;

/// Why a channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChanError {
    /// The channel is closed (and, for a receive, drained).
    #[error("channel closed")]
    Closed,
    /// `close` on a closed channel.
    #[error("channel already closed")]
    AlreadyClosed,
    /// The channel was scrubbed.
    #[error("channel aborted")]
    Aborted,
    /// The receiver went away in the middle of the message.
    #[error("the receiver went away before reading the whole message; the message is lost")]
    ReceiverGone,
    /// The sender went away in the middle of the message.
    #[error("the sender went away in the middle of the message")]
    SenderGone,
}

/// Identifies a message inside one channel.
pub type MsgId = u64;

/// Identifies a waiting sender or receiver inside one channel.
pub type Ticket = u64;

/// What the caller of [`Core`] must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<M, S, R> {
    /// Wake this sender: its message has a place.
    Grant(S),
    /// Wake this receiver with this message.
    Deliver(R, MsgId, M),
    /// Wake this sender with an error; its message is gone.
    FailSend(S, ChanError),
    /// Wake this receiver with an error.
    FailRecv(R, ChanError),
}

pub use circuit_proto::ChanStat;

struct WaitingSender<M, S> {
    ticket: Ticket,
    id: MsgId,
    msg: M,
    waiter: S,
}

/// The channel's policy: messages of type `M`, sender wake-ups `S`,
/// receiver wake-ups `R`. Invariant: receivers wait only while the buffer
/// and the sender queue are both empty.
pub struct Core<M, S, R> {
    cap: u64,
    buffer: VecDeque<(MsgId, M)>,
    senders: VecDeque<WaitingSender<M, S>>,
    receivers: VecDeque<(Ticket, R)>,
    closed: bool,
    aborted: bool,
    num_send: u64,
    num_recv: u64,
    next: u64,
}

/// The effects of one call on a [`Core`].
pub type Effects<M, S, R> = Vec<Effect<M, S, R>>;

impl<M, S, R> Core<M, S, R> {
    /// An open channel with room for `cap` buffered messages.
    pub fn new(cap: u64) -> Self {
        Core {
            cap,
            buffer: VecDeque::new(),
            senders: VecDeque::new(),
            receivers: VecDeque::new(),
            closed: false,
            aborted: false,
            num_send: 0,
            num_recv: 0,
            next: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn has_room(&self) -> bool {
        (self.buffer.len() as u64) < self.cap
    }

    /// Moves waiting senders into the buffer while there is room.
    fn promote(&mut self, fx: &mut Effects<M, S, R>) {
        while self.has_room() {
            let Some(s) = self.senders.pop_front() else { break };
            self.buffer.push_back((s.id, s.msg));
            fx.push(Effect::Grant(s.waiter));
        }
    }

    /// A sender offers `msg`; `waiter` is granted (now, through `fx`, or
    /// later) once the message has a place. Returns the sender's ticket and
    /// the message's id.
    pub fn send(&mut self, msg: M, waiter: S, fx: &mut Effects<M, S, R>) -> Result<(Ticket, MsgId), ChanError> {
        if self.aborted {
            return Err(ChanError::Aborted);
        }
        if self.closed {
            return Err(ChanError::Closed);
        }
        let id = self.next_id();
        let ticket = self.next_id();
        if let Some((_, r)) = self.receivers.pop_front() {
            fx.push(Effect::Deliver(r, id, msg));
            fx.push(Effect::Grant(waiter));
        } else if self.has_room() {
            self.buffer.push_back((id, msg));
            fx.push(Effect::Grant(waiter));
        } else {
            self.senders.push_back(WaitingSender {
                ticket,
                id,
                msg,
                waiter,
            });
        }
        Ok((ticket, id))
    }

    /// A receiver asks for a message; `waiter` gets one (now, through
    /// `fx`, or later) or an error. Returns the receiver's ticket.
    pub fn recv(&mut self, waiter: R, fx: &mut Effects<M, S, R>) -> Result<Ticket, ChanError> {
        if self.aborted {
            return Err(ChanError::Aborted);
        }
        let ticket = self.next_id();
        if let Some((id, msg)) = self.buffer.pop_front() {
            fx.push(Effect::Deliver(waiter, id, msg));
            self.promote(fx);
        } else if let Some(s) = self.senders.pop_front() {
            fx.push(Effect::Deliver(waiter, s.id, s.msg));
            fx.push(Effect::Grant(s.waiter));
        } else if self.closed {
            return Err(ChanError::Closed);
        } else {
            self.receivers.push_back((ticket, waiter));
        }
        Ok(ticket)
    }

    /// A waiting sender gives up. Returns its message if it was still
    /// waiting; `None` if it had been granted or failed already.
    pub fn cancel_send(&mut self, ticket: Ticket) -> Option<M> {
        let i = self.senders.iter().position(|s| s.ticket == ticket)?;
        self.senders.remove(i).map(|s| s.msg)
    }

    /// A waiting receiver gives up. False if it had been served already.
    pub fn cancel_recv(&mut self, ticket: Ticket) -> bool {
        match self.receivers.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                self.receivers.remove(i);
                true
            }
            None => false,
        }
    }

    /// A receiver gives back a message it took but did not hand on: it goes
    /// to the first waiting receiver, else to the head of the buffer (even
    /// when the buffer is full). Dropped if the channel was aborted.
    pub fn requeue(&mut self, id: MsgId, msg: M, fx: &mut Effects<M, S, R>) {
        if self.aborted {
            return;
        }
        match self.receivers.pop_front() {
            Some((_, r)) => fx.push(Effect::Deliver(r, id, msg)),
            None => self.buffer.push_front((id, msg)),
        }
    }

    /// The sender of message `id` abandoned it: take it out of the buffer if
    /// it is still there (and let a waiting sender in). Returns it.
    pub fn discard(&mut self, id: MsgId, fx: &mut Effects<M, S, R>) -> Option<M> {
        let i = self.buffer.iter().position(|(m, _)| *m == id)?;
        let (_, msg) = self.buffer.remove(i)?;
        self.promote(fx);
        Some(msg)
    }

    /// A sender finished writing its message.
    pub fn sent(&mut self) {
        self.num_send += 1;
    }

    /// A receiver handed on a whole message.
    pub fn received(&mut self) {
        self.num_recv += 1;
    }

    /// Closes the channel; waiting receivers (there are some only when
    /// nothing is left to receive) fail with [`ChanError::Closed`].
    pub fn close(&mut self, fx: &mut Effects<M, S, R>) -> Result<(), ChanError> {
        if self.aborted {
            return Err(ChanError::Aborted);
        }
        if self.closed {
            return Err(ChanError::AlreadyClosed);
        }
        self.closed = true;
        for (_, r) in self.receivers.drain(..) {
            fx.push(Effect::FailRecv(r, ChanError::Closed));
        }
        Ok(())
    }

    /// Aborts the channel: every waiter fails, buffered messages are
    /// dropped (and returned, for the caller to drop).
    pub fn abort(&mut self, fx: &mut Effects<M, S, R>) -> Vec<M> {
        self.aborted = true;
        let mut dropped: Vec<M> = self.buffer.drain(..).map(|(_, m)| m).collect();
        for s in self.senders.drain(..) {
            dropped.push(s.msg);
            fx.push(Effect::FailSend(s.waiter, ChanError::Aborted));
        }
        for (_, r) in self.receivers.drain(..) {
            fx.push(Effect::FailRecv(r, ChanError::Aborted));
        }
        dropped
    }

    /// True once aborted.
    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// Messages in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The channel's status.
    pub fn stat(&self) -> ChanStat {
        ChanStat {
            cap: self.cap,
            closed: self.closed,
            aborted: self.aborted,
            num_send: self.num_send,
            num_recv: self.num_recv,
        }
    }
}

// ---------------------------------------------------------------------------
// The async shell.

/// A message in flight: the bytes read ahead so far, the pipe its sender
/// writes into, and the signal that the sender finished it.
struct Msg {
    head: Vec<u8>,
    pipe: DuplexStream,
    end: oneshot::Receiver<()>,
    /// The sender finished and every byte is in `head` or was handed on.
    whole: bool,
}

type SendWaker = oneshot::Sender<Result<(), ChanError>>;
type RecvWaker = oneshot::Sender<Result<(MsgId, Msg), ChanError>>;
type ChanCore = Core<Msg, SendWaker, RecvWaker>;
type ChanEffects = Effects<Msg, SendWaker, RecvWaker>;

/// A channel element. Share it as `Arc<Chan>`.
pub struct Chan {
    core: Mutex<ChanCore>,
}

/// Carries out effects. Runs under the core's lock, so a waiter that gives
/// up (which takes the lock) sees either its ticket still queued or its
/// wake-up already delivered.
fn run(core: &mut ChanCore, fx: ChanEffects) {
    let mut queue: VecDeque<_> = fx.into();
    while let Some(e) = queue.pop_front() {
        match e {
            Effect::Grant(s) => {
                let _ = s.send(Ok(()));
            }
            Effect::Deliver(r, id, msg) => {
                if let Err(Ok((id, msg))) = r.send(Ok((id, msg))) {
                    let mut more = Vec::new();
                    core.requeue(id, msg, &mut more);
                    queue.extend(more);
                }
            }
            Effect::FailSend(s, e) => {
                let _ = s.send(Err(e));
            }
            Effect::FailRecv(r, e) => {
                let _ = r.send(Err(e));
            }
        }
    }
}

impl Chan {
    /// A channel with room for `cap` buffered messages.
    pub fn new(cap: u64) -> Chan {
        Chan {
            core: Mutex::new(Core::new(cap)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChanCore> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the core and carries out its effects.
    fn with<T>(&self, f: impl FnOnce(&mut ChanCore, &mut ChanEffects) -> T) -> T {
        let mut core = self.lock();
        let mut fx = Vec::new();
        let out = f(&mut core, &mut fx);
        run(&mut core, fx);
        out
    }

    /// The channel's status.
    pub fn stat(&self) -> ChanStat {
        self.lock().stat()
    }

    /// Closes the channel.
    pub fn close(&self) -> Result<(), ChanError> {
        self.with(|core, fx| core.close(fx))
    }

    /// Aborts the channel (scrub): waiters fail, buffered messages go.
    pub fn abort(&self) {
        let dropped = self.with(|core, fx| core.abort(fx));
        drop(dropped);
    }

    /// Waits until a new message has a place, then returns its writer.
    /// Dropping the future while it waits withdraws the message.
    pub async fn send(self: &Arc<Self>) -> Result<Outgoing, ChanError> {
        let (pipe, reader) = tokio::io::duplex(MESSAGE_BUFFER);
        let (end_tx, end_rx) = oneshot::channel();
        let msg = Msg {
            head: Vec::new(),
            pipe: reader,
            end: end_rx,
            whole: false,
        };
        let (tx, rx) = oneshot::channel();
        let (ticket, id) = self.with(|core, fx| core.send(msg, tx, fx))?;
        let mut wait = SendWait {
            chan: self,
            ticket,
            id,
            rx: Some(rx),
        };
        let granted = wait.rx.as_mut().expect("armed").await;
        wait.rx = None;
        match granted {
            Ok(Ok(())) => Ok(Outgoing {
                chan: self.clone(),
                id,
                pipe: Some(pipe),
                end: Some(end_tx),
            }),
            Ok(Err(e)) => Err(e),
            // The core never drops a waiter unanswered; be safe anyway.
            Err(_) => Err(ChanError::Aborted),
        }
    }

    /// Waits for a message and returns it, read ahead up to
    /// [`MESSAGE_BUFFER`] bytes. Messages whose sender went away before
    /// finishing them are skipped. Dropping the future gives back a message
    /// it had taken.
    pub async fn recv(self: &Arc<Self>) -> Result<Incoming, ChanError> {
        loop {
            let (id, msg) = self.take().await?;
            let mut incoming = Incoming {
                chan: self.clone(),
                id,
                msg: Some(msg),
                started: false,
            };
            match incoming.read_ahead().await {
                Ok(()) => return Ok(incoming),
                Err(_) => incoming.abandon(),
            }
        }
    }

    /// Waits for the next message.
    async fn take(&self) -> Result<(MsgId, Msg), ChanError> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.with(|core, fx| core.recv(tx, fx))?;
        let mut wait = RecvWait {
            chan: self,
            ticket,
            rx: Some(rx),
        };
        let got = wait.rx.as_mut().expect("armed").await;
        wait.rx = None;
        got.unwrap_or(Err(ChanError::Aborted))
    }
}

/// A sender waiting for a place; withdraws the message if dropped.
struct SendWait<'a> {
    chan: &'a Chan,
    ticket: Ticket,
    id: MsgId,
    rx: Option<oneshot::Receiver<Result<(), ChanError>>>,
}

impl Drop for SendWait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        self.chan.with(|core, fx| {
            if core.cancel_send(self.ticket).is_none() && matches!(rx.try_recv(), Ok(Ok(()))) {
                // Granted but never written: the message is abandoned.
                core.discard(self.id, fx);
            }
        });
    }
}

/// A receiver waiting for a message; gives it back if dropped.
struct RecvWait<'a> {
    chan: &'a Chan,
    ticket: Ticket,
    rx: Option<oneshot::Receiver<Result<(MsgId, Msg), ChanError>>>,
}

impl Drop for RecvWait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        self.chan.with(|core, fx| {
            if !core.cancel_recv(self.ticket)
                && let Ok(Ok((id, msg))) = rx.try_recv()
            {
                core.requeue(id, msg, fx);
            }
        });
    }
}

/// The writing end of a message that has a place in the channel. Call
/// [`Outgoing::finish`] after the last byte; dropping it unfinished
/// abandons the message.
pub struct Outgoing {
    chan: Arc<Chan>,
    id: MsgId,
    pipe: Option<DuplexStream>,
    end: Option<oneshot::Sender<()>>,
}

impl Outgoing {
    fn lost(&self) -> ChanError {
        if self.chan.lock().is_aborted() {
            ChanError::Aborted
        } else {
            ChanError::ReceiverGone
        }
    }

    /// Writes bytes of the message; waits while the pipe is full.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ChanError> {
        let pipe = self.pipe.as_mut().expect("not finished");
        if pipe.write_all(data).await.is_err() {
            return Err(self.lost());
        }
        Ok(())
    }

    /// Marks the message whole and counts it as sent.
    pub fn finish(mut self) -> Result<(), ChanError> {
        let end = self.end.take().expect("not finished");
        if end.send(()).is_err() {
            return Err(self.lost());
        }
        self.pipe = None;
        self.chan.lock().sent();
        Ok(())
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if self.end.is_some() {
            // Unfinished: the pipe ends without the end signal, so a reader
            // sees an abandoned message; out of the buffer with it.
            self.pipe = None;
            self.end = None;
            let id = self.id;
            let dropped = self.chan.with(|core, fx| core.discard(id, fx));
            drop(dropped);
        }
    }
}

/// A message taken by a receiver. Read it with [`Incoming::chunk`], then
/// call [`Incoming::delivered`]. Dropped before its first chunk was taken,
/// it goes back to the head of the channel; dropped later, it is lost.
pub struct Incoming {
    chan: Arc<Chan>,
    id: MsgId,
    msg: Option<Msg>,
    started: bool,
}

impl Incoming {
    /// Reads until the message is whole or [`MESSAGE_BUFFER`] bytes are in.
    async fn read_ahead(&mut self) -> Result<(), ChanError> {
        let msg = self.msg.as_mut().expect("held");
        let mut buf = [0u8; 8192];
        while !msg.whole && msg.head.len() < MESSAGE_BUFFER {
            let want = buf.len().min(MESSAGE_BUFFER - msg.head.len());
            let n = msg.pipe.read(&mut buf[..want]).await.unwrap_or(0);
            msg.head.extend_from_slice(&buf[..n]);
            if n == 0 {
                match (&mut msg.end).await {
                    Ok(()) => msg.whole = true,
                    Err(_) => return Err(ChanError::SenderGone),
                }
            }
        }
        Ok(())
    }

    /// True if the whole message is already read ahead.
    pub fn is_whole(&self) -> bool {
        self.msg.as_ref().is_some_and(|m| m.whole)
    }

    /// The whole message, if it is all read ahead, without handing it out:
    /// pass it on, then call [`Incoming::delivered`]; dropped instead, the
    /// message goes back to the head of the channel.
    pub fn whole(&self) -> Option<&[u8]> {
        self.msg.as_ref().filter(|m| m.whole).map(|m| &m.head[..])
    }

    /// The next bytes of the message; `None` once it is all handed out.
    /// Fails with [`ChanError::SenderGone`] if the sender abandoned it.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>, ChanError> {
        self.started = true;
        let msg = self.msg.as_mut().expect("held");
        if !msg.head.is_empty() {
            return Ok(Some(std::mem::take(&mut msg.head)));
        }
        if msg.whole {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(MESSAGE_BUFFER);
        let n = msg.pipe.read_buf(&mut buf).await.unwrap_or(0);
        if n > 0 {
            return Ok(Some(buf));
        }
        match (&mut msg.end).await {
            Ok(()) => {
                msg.whole = true;
                Ok(None)
            }
            Err(_) => Err(ChanError::SenderGone),
        }
    }

    /// The whole message went to the receiver: count it.
    pub fn delivered(mut self) {
        self.msg = None;
        self.chan.lock().received();
    }

    /// Drops the message for good (its sender abandoned it).
    fn abandon(mut self) {
        self.msg = None;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take()
            && !self.started
        {
            let id = self.id;
            self.chan.with(|core, fx| core.requeue(id, msg, fx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    type T = Core<&'static str, u32, u32>;
    type Fx = Effects<&'static str, u32, u32>;

    #[test]
    fn buffered_sends_then_fifo_receives() {
        let mut c = T::new(2);
        let mut fx = Fx::new();
        c.send("a", 1, &mut fx).unwrap();
        c.send("b", 2, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Grant(1), Effect::Grant(2)]);
        fx.clear();
        let (t3, id3) = c.send("c", 3, &mut fx).unwrap();
        assert!(fx.is_empty(), "third sender waits for room");
        assert_eq!(c.buffered(), 2);

        c.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, 1, "a"), Effect::Grant(3)]);
        fx.clear();
        assert_eq!(c.cancel_send(t3), None, "granted already");
        c.recv(11, &mut fx).unwrap();
        c.recv(12, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(11, 3, "b"), Effect::Deliver(12, id3, "c")]);
        fx.clear();
        c.recv(13, &mut fx).unwrap();
        assert!(fx.is_empty(), "receiver waits");
        c.send("d", 4, &mut fx).unwrap();
        assert!(matches!(fx[..], [Effect::Deliver(13, _, "d"), Effect::Grant(4)]));
    }

    #[test]
    fn zero_capacity_is_a_rendezvous() {
        let mut c = T::new(0);
        let mut fx = Fx::new();
        let (ticket, _) = c.send("a", 1, &mut fx).unwrap();
        assert!(fx.is_empty());
        assert_eq!(c.cancel_send(ticket), Some("a"));
        let (_, id) = c.send("b", 2, &mut fx).unwrap();
        assert!(fx.is_empty());
        c.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, id, "b"), Effect::Grant(2)]);
        fx.clear();
        let t = c.recv(11, &mut fx).unwrap();
        assert!(fx.is_empty());
        assert!(c.cancel_recv(t));
        assert!(!c.cancel_recv(t));
        c.send("c", 3, &mut fx).unwrap();
        assert!(fx.is_empty(), "the cancelled receiver gets nothing");
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn close_lets_receivers_drain_then_fails() {
        let mut c = T::new(1);
        let mut fx = Fx::new();
        c.send("a", 1, &mut fx).unwrap();
        c.send("b", 2, &mut fx).unwrap();
        fx.clear();
        c.close(&mut fx).unwrap();
        assert!(fx.is_empty());
        assert_eq!(c.close(&mut fx), Err(ChanError::AlreadyClosed));
        assert_eq!(c.send("x", 3, &mut fx), Err(ChanError::Closed));
        c.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, 1, "a"), Effect::Grant(2)]);
        fx.clear();
        c.recv(11, &mut fx).unwrap();
        assert!(matches!(fx[..], [Effect::Deliver(11, _, "b")]));
        assert_eq!(c.recv(12, &mut fx), Err(ChanError::Closed));
        assert!(c.stat().closed);

        let mut c = T::new(0);
        let mut fx = Fx::new();
        c.recv(10, &mut fx).unwrap();
        c.recv(11, &mut fx).unwrap();
        c.close(&mut fx).unwrap();
        assert_eq!(
            fx,
            [
                Effect::FailRecv(10, ChanError::Closed),
                Effect::FailRecv(11, ChanError::Closed)
            ]
        );
    }

    #[test]
    fn abort_fails_every_waiter_and_drops_the_buffer() {
        let mut c = T::new(1);
        let mut fx = Fx::new();
        c.send("a", 1, &mut fx).unwrap();
        c.send("b", 2, &mut fx).unwrap();
        fx.clear();
        let mut dropped = c.abort(&mut fx);
        dropped.sort();
        assert_eq!(dropped, ["a", "b"]);
        assert_eq!(fx, [Effect::FailSend(2, ChanError::Aborted)]);
        assert_eq!(c.send("c", 3, &mut fx), Err(ChanError::Aborted));
        assert_eq!(c.recv(10, &mut fx), Err(ChanError::Aborted));
        assert_eq!(c.close(&mut fx), Err(ChanError::Aborted));
        c.requeue(9, "z", &mut fx);
        assert_eq!(c.buffered(), 0, "nothing comes back into an aborted channel");

        let mut c = T::new(0);
        let mut fx = Fx::new();
        c.recv(10, &mut fx).unwrap();
        c.abort(&mut fx);
        assert_eq!(fx, [Effect::FailRecv(10, ChanError::Aborted)]);
        let s = c.stat();
        assert!(s.aborted && !s.closed);
    }

    #[test]
    fn requeue_and_discard() {
        let mut c = T::new(1);
        let mut fx = Fx::new();
        let (_, a) = c.send("a", 1, &mut fx).unwrap();
        let (_, b) = c.send("b", 2, &mut fx).unwrap();
        fx.clear();
        // The receiver of "a" goes away before handing any of it on.
        c.recv(10, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(10, a, "a"), Effect::Grant(2)]);
        fx.clear();
        c.requeue(a, "a", &mut fx);
        assert_eq!(c.buffered(), 2, "back at the head, over capacity");
        c.recv(11, &mut fx).unwrap();
        c.recv(12, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(11, a, "a"), Effect::Deliver(12, b, "b")]);
        fx.clear();

        // A waiting receiver gets a requeued message directly.
        c.recv(13, &mut fx).unwrap();
        c.requeue(b, "b", &mut fx);
        assert_eq!(fx, [Effect::Deliver(13, b, "b")]);
        fx.clear();

        // The sender of a buffered message goes away: its slot frees up.
        let (_, d) = c.send("d", 4, &mut fx).unwrap();
        let (_, e) = c.send("e", 5, &mut fx).unwrap();
        fx.clear();
        assert_eq!(c.discard(d, &mut fx), Some("d"));
        assert_eq!(fx, [Effect::Grant(5)]);
        fx.clear();
        assert_eq!(c.discard(d, &mut fx), None);
        c.recv(14, &mut fx).unwrap();
        assert_eq!(fx, [Effect::Deliver(14, e, "e")]);
    }

    #[test]
    fn stat_counts() {
        let mut c = T::new(3);
        assert_eq!(
            c.stat(),
            ChanStat {
                cap: 3,
                closed: false,
                aborted: false,
                num_send: 0,
                num_recv: 0
            }
        );
        c.sent();
        c.sent();
        c.received();
        let s = c.stat();
        assert_eq!((s.num_send, s.num_recv), (2, 1));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"Cap":3,"Closed":false,"Aborted":false,"NumSend":2,"NumRecv":1}"#
        );
    }

    // The shell, driven without sockets or sleeps.

    async fn send_all(chan: &Arc<Chan>, data: &[u8]) -> Result<(), ChanError> {
        let mut out = chan.send().await?;
        out.write(data).await?;
        out.finish()
    }

    async fn recv_all(chan: &Arc<Chan>) -> Result<Vec<u8>, ChanError> {
        let mut inc = chan.recv().await?;
        let mut all = Vec::new();
        while let Some(c) = inc.chunk().await? {
            all.extend_from_slice(&c);
        }
        inc.delivered();
        Ok(all)
    }

    #[tokio::test]
    async fn shell_round_trip_small_and_large() {
        let chan = Arc::new(Chan::new(1));
        send_all(&chan, b"hello").await.unwrap();
        assert_eq!(chan.stat().num_send, 1);
        assert_eq!(recv_all(&chan).await.unwrap(), b"hello");
        assert_eq!(chan.stat().num_recv, 1);

        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let c2 = chan.clone();
        let data = big.clone();
        let sender = tokio::spawn(async move { send_all(&c2, &data).await });
        assert_eq!(recv_all(&chan).await.unwrap(), big);
        sender.await.unwrap().unwrap();
        let s = chan.stat();
        assert_eq!((s.num_send, s.num_recv), (2, 2));
    }

    #[tokio::test]
    async fn abandoned_message_is_skipped_and_frees_its_slot() {
        let chan = Arc::new(Chan::new(1));
        let mut half = chan.send().await.unwrap();
        half.write(b"half a mess").await.unwrap();
        // The buffer is full: another sender waits.
        assert!(chan.send().now_or_never().is_none());
        drop(half);
        send_all(&chan, b"whole").await.unwrap();
        assert_eq!(recv_all(&chan).await.unwrap(), b"whole");
        assert_eq!(chan.stat().num_send, 1);

        // Abandoned after a receiver took it: the receiver skips it.
        let chan = Arc::new(Chan::new(0));
        let c2 = chan.clone();
        let receiver = tokio::spawn(async move { recv_all(&c2).await });
        let mut half = chan.send().await.unwrap();
        half.write(b"part").await.unwrap();
        drop(half);
        send_all(&chan, b"next").await.unwrap();
        assert_eq!(receiver.await.unwrap().unwrap(), b"next");
    }

    #[tokio::test]
    async fn a_receiver_that_gives_up_loses_nothing() {
        let chan = Arc::new(Chan::new(1));
        // Waiting, then gone.
        assert!(chan.recv().now_or_never().is_none());
        // Registered, served, then dropped before it looked.
        let mut pending = Box::pin(chan.recv());
        assert!((&mut pending).now_or_never().is_none());
        send_all(&chan, b"one").await.unwrap();
        drop(pending);
        assert_eq!(recv_all(&chan).await.unwrap(), b"one");
        // Taken whole, then dropped before handing any of it on.
        send_all(&chan, b"two").await.unwrap();
        let taken = chan.recv().await.unwrap();
        assert!(taken.is_whole());
        drop(taken);
        assert_eq!(recv_all(&chan).await.unwrap(), b"two");
        assert_eq!(chan.stat().num_recv, 2);
    }

    #[tokio::test]
    async fn a_whole_message_not_passed_on_goes_back_first() {
        let chan = Arc::new(Chan::new(2));
        send_all(&chan, b"first").await.unwrap();
        send_all(&chan, b"second").await.unwrap();
        let taken = chan.recv().await.unwrap();
        assert_eq!(taken.whole(), Some(&b"first"[..]));
        // Say the stream to the receiver broke before it could be written.
        drop(taken);
        let taken = chan.recv().await.unwrap();
        assert_eq!(taken.whole(), Some(&b"first"[..]), "back at the head, in order");
        taken.delivered();
        assert_eq!(recv_all(&chan).await.unwrap(), b"second");
        assert_eq!(chan.stat().num_recv, 2);

        // A message longer than the read-ahead is not whole.
        let c2 = chan.clone();
        let sender = tokio::spawn(async move { send_all(&c2, &vec![5u8; MESSAGE_BUFFER + 1]).await });
        let taken = chan.recv().await.unwrap();
        assert_eq!(taken.whole(), None);
        drop(taken);
        assert_eq!(recv_all(&chan).await.unwrap().len(), MESSAGE_BUFFER + 1);
        sender.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn receiver_gone_mid_message_fails_the_sender() {
        let chan = Arc::new(Chan::new(0));
        let c2 = chan.clone();
        let sender = tokio::spawn(async move { send_all(&c2, &vec![1u8; 200_000]).await });
        let mut inc = chan.recv().await.unwrap();
        assert!(!inc.is_whole());
        assert_eq!(inc.chunk().await.unwrap().unwrap().len(), MESSAGE_BUFFER);
        drop(inc);
        assert_eq!(sender.await.unwrap(), Err(ChanError::ReceiverGone));
        assert_eq!(chan.stat().num_send, 0);
    }

    #[tokio::test]
    async fn abort_wakes_waiters() {
        let chan = Arc::new(Chan::new(0));
        let c1 = chan.clone();
        let receiver = tokio::spawn(async move { c1.recv().await.map(|_| ()) });
        // The current-thread runtime runs the receiver up to its wait here.
        tokio::task::yield_now().await;
        assert_eq!(chan.lock().receivers.len(), 1, "the receiver waits");
        chan.abort();
        assert_eq!(receiver.await.unwrap().err(), Some(ChanError::Aborted));
        assert_eq!(chan.send().await.err(), Some(ChanError::Aborted));

        let chan = Arc::new(Chan::new(0));
        let c1 = chan.clone();
        let sender = tokio::spawn(async move { c1.send().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(chan.lock().senders.len(), 1, "the sender waits");
        chan.abort();
        assert_eq!(sender.await.unwrap().err(), Some(ChanError::Aborted));
    }
}
