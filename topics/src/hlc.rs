//! Hybrid logical clock: wall-clock milliseconds in the high 48 bits and a logical counter
//! in the low 16, so timestamps are close to real time yet strictly increase per clock
//! even when the wall clock stalls or steps back.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One hybrid-logical-clock timestamp. Ordered first by physical time, then by counter.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    const LOGICAL_BITS: u32 = 16;

    pub fn new(physical_ms: u64, logical: u16) -> Hlc {
        Hlc((physical_ms << Self::LOGICAL_BITS) | logical as u64)
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

/// A clock handing out strictly increasing [`Hlc`] timestamps; shareable across threads.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: AtomicU64,
    /// Added to the wall clock (fault tests: a node whose clock is behind or ahead).
    skew_ms: i64,
}

impl HlcClock {
    pub fn new() -> HlcClock {
        HlcClock::default()
    }

    /// A clock whose wall clock reads `skew_ms` off the machine's (negative: behind), as
    /// a node with a wrong clock would; for fault tests.
    pub fn skewed(skew_ms: i64) -> HlcClock {
        HlcClock {
            last: AtomicU64::new(0),
            skew_ms,
        }
    }

    /// A timestamp later than every one this clock has issued or observed.
    pub fn now(&self) -> Hlc {
        let wall = Hlc::new(wall_ms().saturating_add_signed(self.skew_ms), 0).0;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = if wall > prev { wall } else { prev + 1 };
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Hlc(next),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Take a remote timestamp into account so later local ones order after it.
    pub fn observe(&self, remote: Hlc) {
        self.last.fetch_max(remote.0, Ordering::AcqRel);
    }
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_called_fast() {
        let clock = HlcClock::new();
        let mut prev = clock.now();
        for _ in 0..100_000 {
            let t = clock.now();
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn observed_remote_time_orders_before_later_local_time() {
        let clock = HlcClock::new();
        let far = Hlc::new(wall_ms() + 60_000, 7);
        clock.observe(far);
        assert!(clock.now() > far);
    }

    #[test]
    fn a_clock_behind_still_orders_after_what_it_observed() {
        let behind = HlcClock::skewed(-60_000);
        let t = behind.now();
        assert!(t.physical_ms() + 59_000 < wall_ms(), "the skew applies");
        let remote = Hlc::new(wall_ms(), 3);
        behind.observe(remote);
        assert!(behind.now() > remote);
    }

    #[test]
    fn physical_and_logical_parts_round_trip() {
        let t = Hlc::new(1_700_000_000_123, 42);
        assert_eq!(t.physical_ms(), 1_700_000_000_123);
        assert_eq!(t.logical(), 42);
    }
}
