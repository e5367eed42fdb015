//! hektor's shared vocabulary: the records that travel through the log and their
//! encodings, the ring that places them, the hybrid logical clock that stamps them, the
//! topics a collection has, the catalog of collections and the event sink.
//!
//! This crate owns what every other crate agrees on. It does not index, search or serve
//! HTTP, and it does not implement the log: the `Log` trait and its backends (Kafka, the
//! embedded LMDB log) are the crate `hektor-log` (`log/`), which this one builds on. It
//! says what a record is, where it goes, and which topics hold it.
//!
//! - [`record`]: the record types (vector upserts and deletes, events, plan changes,
//!   node heartbeats, collection specs) and [`codec`]: their versioned binary and JSON
//!   encodings, told apart by a header.
//! - [`ring`]: the 64-bit ring position of a record and its partition.
//! - [`hlc`]: the hybrid logical clock that stamps writes.
//! - [`topic`]: topic names and which topics a collection has, with their partition
//!   counts and cleanup, in one place.
//! - [`catalog`]: the collections that exist, read from and written to the catalog topic.
//! - [`events`]: the sink that batches query and write events onto the events topics.

pub mod catalog;
pub mod codec;
pub mod error;
pub mod events;
pub mod hlc;
pub mod record;
pub mod ring;
pub mod topic;

pub use error::Error;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
