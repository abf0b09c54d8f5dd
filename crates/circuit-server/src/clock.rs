//! The server's one clock. Every shell that reads the time or sleeps (the
//! watcher's task, its hooks' timeouts, the reaper's fallback polling) does it
//! through a [`Clock`], never `Instant::now()` or `tokio::time` directly.
//!
//! It is tokio's clock, not a trait with a real and a manual implementation:
//! tokio's time already has a manual mode (`tokio::time::pause`, or
//! `start_paused` in a test), which drives every timer of the runtime at once
//! — the shell's deadlines, timeouts, the reaper — and jumps to the next one
//! as soon as every task waits. A test of flapping, respawn delays or
//! graceful timeouts therefore runs real processes on a paused clock and
//! takes milliseconds, with nothing generic threaded through the code. The
//! instants are `std::time::Instant`s, so the pure watcher policy keeps
//! taking plain instants.

use std::time::{Duration, Instant};

/// The time as the server's runtime sees it (paused in tests). Cheap to copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    _private: (),
}

impl Clock {
    /// The clock of the runtime it is used in.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Now: the runtime's instant (frozen while a test's clock is paused).
    pub fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Waits until `at` (at once if it is past).
    pub async fn sleep_until(&self, at: Instant) {
        tokio::time::sleep_until(at.into()).await
    }

    /// Waits for `d`.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    /// Runs `f` for at most `limit`: `None` if the time ran out first.
    pub async fn timeout<F: Future>(&self, limit: Duration, f: F) -> Option<F::Output> {
        tokio::time::timeout(limit, f).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_only_to_the_next_timer() {
        let clock = Clock::new();
        let t0 = clock.now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(3600));
        assert!(
            clock
                .timeout(Duration::from_secs(5), std::future::pending::<()>())
                .await
                .is_none()
        );
        assert_eq!(clock.now() - t0, Duration::from_secs(3605));
        assert_eq!(clock.timeout(Duration::from_secs(5), async { 7 }).await, Some(7));
        let at = clock.now() + Duration::from_millis(1500);
        clock.sleep_until(at).await;
        assert_eq!(clock.now(), at);
    }
}
