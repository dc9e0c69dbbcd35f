//! The audit clock: the system clock in a daemon, a hand-driven one in tests, so a whole
//! audit schedule (challenges, offline thresholds, uptime) replays in simulated time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds for the audit schedule.
pub trait Clock: Send + Sync {
    /// The current time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// Wall-clock time (milliseconds since the Unix epoch).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        wwt_net::now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward to `to_ms` (never backwards).
    pub fn advance_to(&self, to_ms: u64) {
        self.0.fetch_max(to_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
