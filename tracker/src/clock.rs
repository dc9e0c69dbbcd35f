//! The audit clock: the system clock in a daemon, a hand-driven one in tests, so a whole
//! audit schedule (challenges, their deadlines, offline thresholds, uptime) replays in
//! simulated time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A future that [`Clock::sleep_until`] returns.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Milliseconds for the audit schedule.
pub trait Clock: Send + Sync {
    /// The current time in milliseconds.
    fn now_ms(&self) -> u64;

    /// Resolves once the clock shows `at_ms` or later (a challenge's deadline).
    fn sleep_until(&self, at_ms: u64) -> Sleep<'_>;

    /// The host's time, milliseconds since the Unix epoch, that challenges are signed with
    /// (providers refuse signatures far from their own time).
    fn wall_ms(&self) -> u64 {
        wwt_net::now_ms()
    }
}

/// Wall-clock time (milliseconds since the Unix epoch).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        wwt_net::now_ms()
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep<'_> {
        let wait = Duration::from_millis(at_ms.saturating_sub(self.now_ms()));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// What a [`ManualClock`] shows, and the sleeps waiting on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Dial {
    now_ms: u64,
    /// Wake-up time → how many sleeps wait for it.
    sleeps: BTreeMap<u64, usize>,
}

/// A clock that moves only when told to. Its sleeps end only when it is moved past them, so
/// whoever drives it decides when a deadline passes: nothing depends on how fast the machine
/// is. [`ManualClock::sleeping`] and [`ManualClock::changes`] let the driver see who waits.
#[derive(Debug)]
pub struct ManualClock(watch::Sender<Dial>, AtomicI64);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(0)
    }
}

impl ManualClock {
    /// A clock showing `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(
            watch::Sender::new(Dial {
                now_ms: start_ms,
                sleeps: BTreeMap::new(),
            }),
            AtomicI64::new(0),
        )
    }

    /// Sets its wall time ([`Clock::wall_ms`]) `skew_ms` off the host's, as on a host whose
    /// clock is wrong.
    pub fn set_skew(&self, skew_ms: i64) {
        self.1.store(skew_ms, Ordering::Relaxed);
    }

    /// Moves the clock forward to `to_ms` (never backwards), ending the sleeps due by then.
    pub fn advance_to(&self, to_ms: u64) {
        self.0.send_if_modified(|dial| {
            let moved = to_ms > dial.now_ms;
            dial.now_ms = dial.now_ms.max(to_ms);
            moved
        });
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_by(&self, ms: u64) {
        self.0.send_if_modified(|dial| {
            dial.now_ms = dial.now_ms.saturating_add(ms);
            ms > 0
        });
    }

    /// How many sleeps wait for a time still to come (those the clock has passed count as
    /// over, even before their tasks run).
    pub fn sleeping(&self) -> usize {
        let dial = self.0.borrow();
        dial.sleeps
            .range(dial.now_ms.saturating_add(1)..)
            .map(|(_, n)| n)
            .sum()
    }

    /// A handle that wakes on each change from now on: the clock moved, a sleep began or
    /// ended.
    pub fn changes(&self) -> Changes {
        Changes(self.0.subscribe())
    }
}

/// The changes of a [`ManualClock`], from [`ManualClock::changes`].
#[derive(Debug)]
pub struct Changes(watch::Receiver<Dial>);

impl Changes {
    /// Resolves at the next change, or at once if there was one since the last call.
    pub async fn next(&mut self) {
        // The sender lives as long as the clock; once it is gone nothing changes any more.
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A sleep registered on a [`ManualClock`]; unregisters itself when dropped.
struct Registered<'a> {
    clock: &'a ManualClock,
    at_ms: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clock.0.send_modify(|dial| {
            if let Some(n) = dial.sleeps.get_mut(&self.at_ms) {
                *n -= 1;
                if *n == 0 {
                    dial.sleeps.remove(&self.at_ms);
                }
            }
        });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }

    fn wall_ms(&self) -> u64 {
        wwt_net::now_ms().saturating_add_signed(self.1.load(Ordering::Relaxed))
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep<'_> {
        // Registered now, not when first polled: a driver counting sleeps sees it at once.
        self.0
            .send_modify(|dial| *dial.sleeps.entry(at_ms).or_default() += 1);
        let registered = Registered { clock: self, at_ms };
        let mut dial = self.0.subscribe();
        Box::pin(async move {
            let _registered = registered;
            // The sender lives as long as `self`: the wait cannot fail.
            let _ = dial.wait_for(|d| d.now_ms >= at_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_passes_it_and_is_counted_until_then() {
        let clock = ManualClock::new(1000);
        let sleep = clock.sleep_until(1300);
        assert_eq!(clock.sleeping(), 1);
        clock.advance_by(299);
        assert_eq!(clock.sleeping(), 1);
        clock.advance_to(1300);
        // Passed: no longer counted, although it has not run yet.
        assert_eq!(clock.sleeping(), 0);
        sleep.await;
        let early = clock.sleep_until(500);
        early.await;
        let dropped = clock.sleep_until(5000);
        assert_eq!(clock.sleeping(), 1);
        drop(dropped);
        assert_eq!(clock.sleeping(), 0);
        assert_eq!(clock.now_ms(), 1300);
    }
}
