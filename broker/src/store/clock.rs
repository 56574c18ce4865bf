//! Where a store's "now" comes from: the [`Clock`] every time decision of a store is judged by
//! (idle TTL, grace, deadlines, redelivery backoff in memory, the timestamps it writes).
//!
//! - [`Clock::System`], every store's default: the wall clock, in Unix milliseconds. The memory store
//!   reads it; the Redis store does not read it in its scripts, which take Redis's own `TIME` so that
//!   replicas agree (it reads it only where Rust judges a hash it read: an operator's view, the live
//!   gauge).
//! - [`Clock::Manual`], for tests: a [`ManualClock`] that moves only when told
//!   ([`ManualClock::advance`]), so a test lets an idle TTL pass without sleeping. The memory store
//!   judges everything by it. The Redis store passes its reading to each script as one extra
//!   argument, which the scripts then take as "now" instead of `TIME` (see
//!   `store/lua/clock/given.lua`); what Redis times itself (key TTLs, the idle time of pending stream
//!   entries) a test moves on the Redis side (`broker/tests/support/time.rs`). With the system
//!   clock, no argument is added: production pays nothing for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The clock a store judges time by.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The wall clock (Redis scripts: Redis's `TIME`).
    #[default]
    System,
    /// A clock that moves only when a test advances it, shared by every store it is given to.
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::System => system_now_ms(),
            Self::Manual(clock) => clock.now_ms(),
        }
    }

    /// A manual clock starting at the wall clock's now, and the handle that advances it.
    pub fn manual() -> (Self, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(system_now_ms()));
        (Self::Manual(clock.clone()), clock)
    }
}

/// The wall clock, in Unix milliseconds (0 before 1970, `u64::MAX` past the year 584 million).
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds (saturating).
pub fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A clock for tests: Unix milliseconds that change only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `by` (never backward).
    pub fn advance(&self, by: Duration) {
        let by = ms(by);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_is_shared() {
        let (clock, hand) = Clock::manual();
        let start = clock.now_ms();
        assert!(start > 1_600_000_000_000, "starts at the wall clock's now");
        let copy = clock.clone();
        hand.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), start + 1500);
        assert_eq!(copy.now_ms(), start + 1500);
        let fixed = ManualClock::new(u64::MAX - 1);
        fixed.advance(Duration::from_secs(1));
        assert_eq!(fixed.now_ms(), u64::MAX, "saturates");
    }

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = system_now_ms();
        let now = Clock::System.now_ms();
        assert!(now >= before && now - before < 60_000);
    }
}
