//! Deadlines on a connection's waits, on a timer the connection keeps.
//!
//! `tokio::time::timeout` around each wait registers a timer-wheel entry, under the time
//! driver's lock, once its future turns out to be pending, and removes it (the lock again) when
//! the wait ends. A long-polling request waits twice — for its head, then for the backend's
//! answer — so it paid two of each, plus the clock reads and tick conversions around them:
//! reading the clock and the timers were about a tenth of the LB's user-space instructions
//! while long-polling clients echo (callgrind, `bench/instructions.sh`; docs/benchmarks.md,
//! "A timer per connection on the fast path", has the numbers).
//!
//! A [`Timer`] is one `tokio::time::Sleep` that a connection keeps for one kind of wait and
//! moves forward at each wait. Moving a registered timer later is one atomic compare-and-swap:
//! tokio leaves the entry where it is in the wheel and files it anew only when its old slot
//! comes due. A wait that ends in time therefore costs no wheel work, and a wait whose future
//! is ready at once (a write the socket takes) no clock read either. A deadline earlier than
//! the timer's current one (a head that started: `timeouts.client_header` after an idle wait of
//! `timeouts.client_keepalive`) re-files the entry, as `timeout` would.
//!
//! Contract: [`Timer::wait`] resolves to `Ok` with the future's output if it completes before
//! the deadline, else to `Err(Elapsed)`; the future is polled first on every wake-up, so one
//! that is ready wins over a deadline that passed at the same moment, as with
//! `tokio::time::timeout`. A [`Deadline::After`] counts from the first poll that finds the
//! future pending.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// The deadline of one wait.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    /// This instant.
    At(Instant),
    /// This long after the future was first found pending.
    After(Duration),
}

/// A timer kept by a connection for one kind of wait (see the module's contract).
pub struct Timer {
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    /// A timer that is not yet armed: nothing is registered until a wait needs it.
    pub fn new() -> Timer {
        // Far enough never to fire before the first wait moves it; `Sleep` registers itself
        // only when it is first reset or polled.
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(far_future())),
        }
    }

    /// `fut`, unless `deadline` passes first.
    pub async fn wait<F: Future>(
        &mut self,
        deadline: Deadline,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        let mut armed = false;
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if !armed {
                armed = true;
                let at = match deadline {
                    Deadline::At(at) => at,
                    Deadline::After(limit) => Instant::now() + limit,
                };
                self.sleep.as_mut().reset(at);
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl Default for Timer {
    fn default() -> Timer {
        Timer::new()
    }
}

/// About thirty years from now, as tokio's own `Instant::far_future` (not public) is.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A wait of `limit` on `t` for a sleep of `work` (`None`: a future that never completes):
    /// its result and how long it took (tokio's clock is paused and jumps to each timer).
    async fn wait(
        t: &mut Timer,
        limit: Duration,
        work: Option<Duration>,
    ) -> (Result<(), Elapsed>, Duration) {
        let start = Instant::now();
        let r = match work {
            Some(w) => t.wait(Deadline::After(limit), tokio::time::sleep(w)).await,
            None => {
                t.wait(Deadline::After(limit), std::future::pending::<()>())
                    .await
            }
        };
        (r, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn ready_at_once_is_ok() {
        let mut t = Timer::new();
        assert_eq!(t.wait(Deadline::After(secs(1)), async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_past_the_limit_is_elapsed() {
        let mut t = Timer::new();
        assert_eq!(wait(&mut t, secs(5), None).await, (Err(Elapsed), secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn completes_before_the_deadline() {
        let mut t = Timer::new();
        let deadline = Instant::now() + secs(5);
        assert_eq!(
            t.wait(Deadline::At(deadline), tokio::time::sleep(secs(2)))
                .await,
            Ok(())
        );
    }

    /// The timer moved later at each wait still fires at the last deadline, one moved earlier
    /// fires at the earlier one, and one that fired is armed again.
    #[tokio::test(start_paused = true)]
    async fn reused_timer_follows_each_deadline() {
        let mut t = Timer::new();
        for _ in 0..3 {
            assert_eq!(
                wait(&mut t, secs(10), Some(secs(3))).await,
                (Ok(()), secs(3))
            );
        }
        // Moved later after three waits: fires 10 s after this wait starts, not before.
        assert_eq!(wait(&mut t, secs(10), None).await, (Err(Elapsed), secs(10)));
        // Earlier than the one before it.
        let start = Instant::now();
        let r = t
            .wait(Deadline::At(start + secs(1)), std::future::pending::<()>())
            .await;
        assert_eq!((r, start.elapsed()), (Err(Elapsed), secs(1)));
        // Fired, then armed again.
        assert_eq!(
            wait(&mut t, secs(4), Some(secs(2))).await,
            (Ok(()), secs(2))
        );
    }
}
