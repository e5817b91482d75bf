//! A timer kept for many waits: one per connection, reset for each wait instead of made anew.
//!
//! `monoio::time::timeout` builds a fresh `Sleep` (640 bytes, 128-byte aligned) every time: it
//! is copied into each future that awaits it, put into the timer wheel at its first poll and
//! taken out again when dropped — on every request, for a read that usually completes first.
//! A [`ReusedTimer`] is allocated once and moved never (it is boxed); resetting it to a later
//! deadline than the one it is filed under only notes the new deadline (the wheel refiles it
//! when the old one comes), so a keep-alive connection's idle and head timeouts cost a clock
//! read and a few stores a request.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use monoio::time::{Instant, Sleep};

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// A timer for one task's waits, one at a time. Made empty; the timer itself is made at the
/// first wait. When a wait ends first the timer stays filed under its deadline: if that
/// passes later, the task is woken once for nothing (and polls what it awaits then).
///
/// Only ever awaited by one task: monoio's timer keeps the waker it was first polled with
/// until it fires, so a timer handed on to another task (kept with a pooled upstream
/// connection, say) would wake the task that used it before, and the new one would wait past
/// its deadline (the routing test `retries_move_to_another_deployment_on_retryable_failures_only`
/// caught exactly that).
#[derive(Default)]
pub struct ReusedTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ReusedTimer {
    pub const fn new() -> Self {
        Self { sleep: None }
    }

    /// `fut`'s output, or [`TimedOut`] if `deadline` passes first. `fut` is polled first, so
    /// one that is ready at once completes even past its deadline, as with
    /// `monoio::time::timeout_at`.
    pub async fn within<F: Future>(
        &mut self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, TimedOut> {
        let sleep = match &mut self.sleep {
            Some(s) => {
                s.as_mut().reset(deadline);
                s
            }
            none => none.insert(Box::pin(monoio::time::sleep_until(deadline))),
        };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            sleep.as_mut().poll(cx).map(|()| Err(TimedOut))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_ready_future_wins_and_a_pending_one_times_out_at_each_new_deadline() {
        rt().block_on(async {
            let mut t = ReusedTimer::new();
            let now = Instant::now();
            // Ready at once, even with a deadline already past.
            assert_eq!(t.within(now, async { 7 }).await, Ok(7));
            // A later deadline after an earlier one, then an earlier one again: each wait
            // ends at its own deadline.
            for ms in [30u64, 5, 20] {
                let started = Instant::now();
                let r = t
                    .within(
                        started + Duration::from_millis(ms),
                        std::future::pending::<()>(),
                    )
                    .await;
                assert_eq!(r, Err(TimedOut));
                assert!(started.elapsed() >= Duration::from_millis(ms));
            }
            // A future that completes before its deadline.
            let r = t
                .within(
                    Instant::now() + Duration::from_secs(60),
                    monoio::time::sleep(Duration::from_millis(2)),
                )
                .await;
            assert_eq!(r, Ok(()));
        });
    }
}
