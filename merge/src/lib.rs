//! How the writes of several regions become one state per vector id, the same in every
//! region whatever the order in which they arrive and however often MirrorMaker 2
//! redelivers them (seed §3.2).
//!
//! A region's shard follows its own partition of `hektor.C.vectors` and the mirrored
//! partitions of every other region (`west.hektor.C.vectors` in `east`). Each of these is a
//! **source**. This crate owns the rules a shard applies; it does not read logs or store
//! anything (that is `hektor-indexers`).
//!
//! - [`source`]: per source partition, the **effective stamp** of each record: the
//!   partition's log order made into a clock, `max(own hlc, floor + 1)`, exactly as the
//!   origin region computes it, because exact redeliveries (same bytes) are recognised by
//!   digest and skipped instead of being stamped again.
//! - [`stamp`]: a [`Stamp`] (effective hlc, origin region) orders every write of an id the
//!   same way in every region; a [`VersionVector`] (per origin region, the newest stamp
//!   seen) says whether one write was made knowing another (causally later) or not
//!   (concurrent).
//! - [`state`]: the per-id state as a join semilattice: the newest upsert, the newest
//!   delete (a tombstone with its own clock), the payload as one LWW register (policy
//!   [`Policy::Lww`]) or as an LWW map per field ([`Policy::Crdt`]), and the joined
//!   version vector. Applying a write is a join, so it is commutative, associative and
//!   idempotent: any arrival order and any number of copies give the same state. Which
//!   write wins never depends on the causality check; causality only classifies a write
//!   (after, stale, concurrent) so that concurrent writes can be counted and shown.
//!
//! The rule in one sentence: per id, the upsert with the greatest stamp holds the vector,
//! the greatest delete stamp hides everything older, and (under `crdt`) each payload field
//! keeps the value of the greatest stamp that set it. A worked example is in
//! `ARCHITECTURE.md` ("Regions").

pub mod error;
pub mod source;
pub mod stamp;
pub mod state;

pub use error::MergeError;
pub use source::{digest, Admit, SourceFloor};
pub use stamp::{Causality, Stamp, VersionVector};
pub use state::{payload_fields, render_fields, Applied, Merged, Op, Policy, Write};

/// Result with this crate's [`MergeError`].
pub type Result<T, E = MergeError> = std::result::Result<T, E>;
