//! A one-shot alarm on a Linux timerfd, for the membership loop.
//!
//! tokio's timer wheel wakes a thread at the start of a coarse slot for a
//! deadline more than 64 ms away and then again at the deadline itself: two
//! wakeups for each of the loop's probe-period sleeps, most of an idle
//! server's wakeups. The kernel's timerfd fires once, at the deadline.
//! No crate wraps a timerfd for tokio's reactor and stays maintained, and it
//! is a dozen lines over `nix` (already a dependency) and `AsyncFd`.
//!
//! Where a timerfd cannot be made or set, it falls back to `tokio::time`.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Wakes the task once at a deadline, which may be moved at will.
pub struct Alarm {
    fd: Option<AsyncFd<Fd>>,
    /// The deadline the timerfd is set to, so an unchanged one costs no call.
    set: Option<Instant>,
}

impl Alarm {
    /// An alarm that is not set.
    pub fn new() -> Alarm {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok()
        // SAFETY: `Fd` owns the timerfd, which stays open as long as the
        // `AsyncFd` holding it, and always gives the same descriptor.
        .and_then(|t| unsafe { AsyncFd::register_with_interest(Fd(t), Interest::READABLE) }.ok());
        Alarm { fd, set: None }
    }

    /// Waits until `at` (at once if it has passed).
    pub async fn until(&mut self, at: Instant) {
        let Some(fd) = &self.fd else {
            return tokio::time::sleep_until(at.into()).await;
        };
        if self.set != Some(at) {
            // Zero would disarm the timer: a deadline reached fires in 1 µs.
            let d = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1));
            if fd
                .get_ref()
                .0
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(d)),
                    TimerSetTimeFlags::empty(),
                )
                .is_err()
            {
                return tokio::time::sleep_until(at.into()).await;
            }
            self.set = Some(at);
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(at.into()).await;
            };
            let mut ticks = [0u8; 8];
            match ready.try_io(|f| nix::unistd::read(f.get_ref().0.as_fd(), &mut ticks).map_err(std::io::Error::from)) {
                Ok(Ok(_)) => {
                    // A one-shot timer fires once: nothing more to read until
                    // it is set again (which makes the descriptor readable
                    // anew), so skip the read that would say EAGAIN.
                    ready.clear_ready();
                    self.set = None;
                    return;
                }
                Ok(Err(_)) => {
                    self.set = None;
                    return tokio::time::sleep_until(at.into()).await;
                }
                // Readiness left from an expiry that a new setting cancelled.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_the_deadline_and_can_be_moved() {
        let mut a = Alarm::new();
        assert!(a.fd.is_some(), "timerfd available on Linux");
        let t = Instant::now();
        // A deadline moved before it fires: the later one counts.
        let early = tokio::time::timeout(Duration::from_millis(20), a.until(t + Duration::from_millis(200))).await;
        assert!(early.is_err());
        a.until(t + Duration::from_millis(40)).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(40), "{took:?}");
        // A deadline already past fires at once, again and again.
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(5), a.until(t))
                .await
                .expect("past deadline fires");
        }
    }
}
