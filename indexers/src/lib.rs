//! hektor's indexers: the durable shard that stores one ring range of a collection on one
//! node, and the index engines that search it.
//!
//! - [`shard`]: [`Shard`], an LMDB environment holding the vectors, their payloads, the
//!   applied log offset and the built index; applies batches of upserts/deletes
//!   (last-writer-wins by hlc) atomically with the offset, and searches (with an optional
//!   tenant ring range) the built index plus the not-yet-indexed tail.
//! - [`engine`]: the [`engine::IndexEngine`] trait and its engines, arroy (trees) and
//!   exact (brute force).
//! - [`metric`]: distance kernels and the "higher is closer" scores.
//! - [`store`]: the LMDB layout.
//! - [`dataset`]: `.fvecs`/`.ivecs` loaders and recall for tests and benchmarks.
//!
//! This crate does not read the log, route records to shards, or serve queries over the
//! network; it is the storage and search core those parts call (from blocking threads:
//! every call here may touch LMDB).
//!
//! Measured defaults (arroy, 61,956 × 384 MiniLM sentence embeddings, cosine, k = 10):
//! see [`engine::arroy::ArroyParams`] and the `recall` test.

pub mod dataset;
pub mod engine;
pub mod error;
pub mod metric;
pub mod shard;
pub mod store;

pub use engine::arroy::ArroyParams;
pub use engine::EngineKind;
pub use error::{Error, Result};
pub use shard::{
    ApplyReport, BuildReport, Hit, RejectedOp, Shard, ShardConfig, ShardOp, ShardStats,
    StoredVector,
};
