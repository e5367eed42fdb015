//! Pre-aggregation of observations inside each worker, before they enter differential.
//!
//! The hotness dataflow only ever counts: events per (shard, kind), per latency bucket, per
//! sub-range and per tenant, and sums latencies and size changes. So instead of one
//! differential update per event and derived collection, each worker folds the events it
//! is handed into a [`TallyBuffer`] — one weight per `(second, shard, Tally)` — and sends
//! each distinct key once with the summed weight ([`TallyBuffer::drain_into`]). Every
//! event still counts: a weight of 37 is 37 events (or 37 µs of latency), and
//! [`crate::hotness::hotness_tallied`] computes exactly what
//! [`crate::hotness::hotness`] computes from the events one by one.
//!
//! This module owns the tally keys and the buffer; the windows and reductions over them
//! are [`crate::hotness`]'s.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use differential_dataflow::input::InputSession;
use serde::{Deserialize, Serialize};

use crate::hotness::{latency_bucket, Obs, ObsKind, Time};

/// What one unit of weight of a tally record counts, for its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tally {
    /// An operation: a query (`true`) or a write (upsert or delete, `false`).
    Op(bool),
    /// A query whose latency falls in this [`latency_bucket`].
    Bucket(u8),
    /// One µs of query latency.
    LatencyUs,
    /// One vector of size (upserts add, deletes and retractions subtract; the size
    /// baseline is fed as this too).
    Size,
    /// An operation positioned in this sub-range of the shard.
    Sub(u8),
    /// A query scoped to the tenant with these high 32 bits.
    Tenant(u32),
}

/// The input record of [`crate::hotness::hotness_tallied`]: a shard and what is counted,
/// with the count as the differential weight.
pub type TallyRecord = (u32, Tally);

/// A small, fast hasher for the tally keys (the rustc "Fx" hash); the keys are a few
/// integers and never chosen by an adversary.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// Weights per `(second, shard, tally)` not yet sent into the dataflow.
#[derive(Default)]
pub struct TallyBuffer {
    weights: HashMap<(Time, u32, Tally), isize, BuildHasherDefault<FxHasher>>,
}

impl TallyBuffer {
    /// Fold one observation at second `time` into the buffer.
    pub fn add(&mut self, time: Time, obs: &Obs) {
        let shard = obs.shard;
        let mut bump = |tally: Tally, weight: isize| {
            *self.weights.entry((time, shard, tally)).or_insert(0) += weight;
        };
        match obs.kind {
            ObsKind::Query => {
                bump(Tally::Op(true), 1);
                bump(Tally::Bucket(latency_bucket(obs.latency_us)), 1);
                if obs.latency_us > 0 {
                    bump(Tally::LatencyUs, obs.latency_us as isize);
                }
                if let Some(tenant) = obs.tenant {
                    bump(Tally::Tenant(tenant), 1);
                }
            }
            ObsKind::Upsert => {
                bump(Tally::Op(false), 1);
                bump(Tally::Size, 1);
            }
            ObsKind::Delete => {
                bump(Tally::Op(false), 1);
                bump(Tally::Size, -1);
            }
        }
        if let Some(sub) = obs.sub {
            bump(Tally::Sub(sub), 1);
        }
    }

    /// Distinct keys waiting to be sent.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Send every non-zero weight into `input` at its second and empty the buffer. Every
    /// second in the buffer must be at or after the input's current time.
    pub fn drain_into(&mut self, input: &mut InputSession<Time, TallyRecord, isize>) {
        for ((time, shard, tally), weight) in self.weights.drain() {
            if weight != 0 {
                input.update_at((shard, tally), time, weight);
            }
        }
    }
}
