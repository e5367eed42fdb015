//! The effective stamp of each record of one source partition, computed identically in
//! the origin region and in every region that reads a mirrored copy.
//!
//! A partition's log is the order in which its writes were acknowledged, so a later record
//! must win even when its writer's clock is behind an earlier writer's: each record's
//! effective hlc is `max(own hlc, floor + 1)` and the floor becomes it (the rule
//! `hektor-indexers`' shards apply to their own log). A mirrored copy of the partition is
//! the same sequence of records **plus exact redeliveries**: MirrorMaker 2 is at least
//! once, and after a partition between regions it re-sends records it had already copied
//! (measured: 2 to 1,340 duplicates after 30 s). Stamping a redelivered copy again would
//! give it a newer stamp than the records written after it, and the older value would win.
//!
//! So a [`SourceFloor`] remembers the digest (xxh3-128 of the record's bytes as on the
//! log) and effective hlc of every record it stamped within `horizon_ms` of the floor, at
//! most `max_recent` of them, and answers a copy with the stamp the original got
//! ([`Admit::Duplicate`]), advancing nothing. Two different writes never have the same
//! bytes in practice: hektor's writers stamp each write with a strictly increasing clock
//! and the intake derives a stamp from the intake record's own offset. A forward the
//! intake repeats after a crash has the same bytes too, and is now a duplicate as well.
//! A copy that arrives after its original left the window (more than `horizon_ms` of
//! floor time or `max_recent` newer records later) is stamped as a new write; the defaults
//! (10 minutes, 1,000,000 records) are far beyond MirrorMaker's redelivery window (its
//! offset commit interval, 10 s by default, plus the time to restart a task).
//!
//! Every region applies the same rule to the same deduplicated sequence, so every region
//! computes the same effective hlc for every record: that makes [`crate::Stamp`]s agree.

use std::collections::{HashMap, VecDeque};

use hektor_topics::hlc::Hlc;
use xxhash_rust::xxh3::xxh3_128;

use crate::{MergeError, Result};

/// How long (in floor milliseconds) a stamped record is remembered, by default.
pub const DEFAULT_HORIZON_MS: u64 = 10 * 60 * 1000;
/// How many stamped records are remembered at most, by default.
pub const DEFAULT_MAX_RECENT: usize = 1_000_000;

/// The digest a [`SourceFloor`] recognises a record by: xxh3-128 of its bytes on the log.
pub fn digest(record_bytes: &[u8]) -> u128 {
    xxh3_128(record_bytes)
}

/// What [`SourceFloor::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A record not seen before, with its effective hlc; the floor is now that hlc.
    New(Hlc),
    /// A redelivered copy of a record stamped before, with the stamp the original got.
    Duplicate(Hlc),
}

impl Admit {
    pub fn hlc(self) -> Hlc {
        match self {
            Admit::New(h) | Admit::Duplicate(h) => h,
        }
    }
}

/// The clock of one source partition: its floor and the records recently stamped.
#[derive(Debug, Clone)]
pub struct SourceFloor {
    floor: Hlc,
    horizon_ms: u64,
    max_recent: usize,
    recent: HashMap<u128, Hlc>,
    /// The same records in stamp order (stamps strictly increase), oldest first.
    order: VecDeque<(Hlc, u128)>,
}

impl Default for SourceFloor {
    fn default() -> SourceFloor {
        SourceFloor::new(DEFAULT_HORIZON_MS, DEFAULT_MAX_RECENT)
    }
}

impl SourceFloor {
    /// An empty partition clock remembering records for `horizon_ms`, at most `max_recent`.
    pub fn new(horizon_ms: u64, max_recent: usize) -> SourceFloor {
        SourceFloor {
            floor: Hlc(0),
            horizon_ms,
            max_recent: max_recent.max(1),
            recent: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The effective hlc of the newest record stamped.
    pub fn floor(&self) -> Hlc {
        self.floor
    }

    /// How many records are remembered now.
    pub fn remembered(&self) -> usize {
        self.order.len()
    }

    /// Stamp the next record of the partition, whose own hlc is `own`.
    pub fn admit(&mut self, digest: u128, own: Hlc) -> Admit {
        if let Some(hlc) = self.recent.get(&digest) {
            return Admit::Duplicate(*hlc);
        }
        let hlc = Hlc(own.0.max(self.floor.0.saturating_add(1)));
        self.floor = hlc;
        self.recent.insert(digest, hlc);
        self.order.push_back((hlc, digest));
        self.forget_old();
        Admit::New(hlc)
    }

    fn forget_old(&mut self) {
        let oldest_kept = self.floor.physical_ms().saturating_sub(self.horizon_ms);
        while let Some(&(hlc, d)) = self.order.front() {
            if hlc.physical_ms() >= oldest_kept && self.order.len() <= self.max_recent {
                break;
            }
            self.order.pop_front();
            self.recent.remove(&d);
        }
    }

    /// The remembered records, oldest first, for storing beside the applied offset.
    pub fn recent(&self) -> impl Iterator<Item = (Hlc, u128)> + '_ {
        self.order.iter().copied()
    }

    /// A partition clock as stored: its floor and its remembered records, oldest first.
    /// Refuses a list that is not strictly increasing or passes the floor.
    pub fn restore(
        floor: Hlc,
        recent: impl IntoIterator<Item = (Hlc, u128)>,
        horizon_ms: u64,
        max_recent: usize,
    ) -> Result<SourceFloor> {
        let mut s = SourceFloor::new(horizon_ms, max_recent);
        s.floor = floor;
        for (hlc, d) in recent {
            if s.order.back().is_some_and(|&(prev, _)| prev >= hlc) || hlc > floor {
                return Err(MergeError::InconsistentFloor {
                    reason: format!(
                        "remembered stamp {} is not after the one before it or passes the floor {}",
                        hlc.0, floor.0
                    ),
                });
            }
            if s.recent.insert(d, hlc).is_some() {
                return Err(MergeError::InconsistentFloor {
                    reason: "a digest is remembered twice".into(),
                });
            }
            s.order.push_back((hlc, d));
        }
        s.forget_old();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(m: u64) -> Hlc {
        Hlc::new(m, 0)
    }

    #[test]
    fn a_late_clock_is_stamped_after_the_floor_and_a_copy_keeps_its_stamp() {
        let mut f = SourceFloor::default();
        assert_eq!(f.admit(1, ms(1000)), Admit::New(ms(1000)));
        // A writer whose clock is behind: stamped just after the floor.
        assert_eq!(f.admit(2, ms(900)), Admit::New(Hlc(ms(1000).0 + 1)));
        assert_eq!(f.admit(1, ms(1000)), Admit::Duplicate(ms(1000)));
        assert_eq!(f.floor(), Hlc(ms(1000).0 + 1));
    }

    #[test]
    fn records_older_than_the_horizon_are_forgotten() {
        let mut f = SourceFloor::new(1_000, 100);
        f.admit(1, ms(10_000));
        f.admit(2, ms(10_500));
        f.admit(3, ms(11_600));
        assert_eq!(
            f.remembered(),
            1,
            "only the last record is within 1 s of the floor"
        );
        assert!(matches!(f.admit(1, ms(10_000)), Admit::New(_)));
    }

    #[test]
    fn at_most_max_recent_records_are_remembered() {
        let mut f = SourceFloor::new(u64::MAX, 3);
        for d in 0..10 {
            f.admit(d, ms(d as u64));
        }
        assert_eq!(f.remembered(), 3);
        assert!(matches!(f.admit(9, ms(9)), Admit::Duplicate(_)));
        assert!(matches!(f.admit(0, ms(0)), Admit::New(_)));
    }

    #[test]
    fn a_stored_floor_restores_and_a_bad_one_is_refused() {
        let mut f = SourceFloor::default();
        for d in 0..5 {
            f.admit(d, ms(100 + d as u64));
        }
        let back = SourceFloor::restore(f.floor(), f.recent(), DEFAULT_HORIZON_MS, 10).unwrap();
        assert_eq!(back.floor(), f.floor());
        assert_eq!(
            back.recent().collect::<Vec<_>>(),
            f.recent().collect::<Vec<_>>()
        );
        let mut shuffled: Vec<_> = f.recent().collect();
        shuffled.swap(0, 1);
        assert!(SourceFloor::restore(f.floor(), shuffled, DEFAULT_HORIZON_MS, 10).is_err());
        assert!(SourceFloor::restore(Hlc(1), f.recent(), DEFAULT_HORIZON_MS, 10).is_err());
    }
}
