//! hektor's shared vocabulary: the records that travel through the log, the ring that
//! places them, the topic layout of a collection, and the log itself.
//!
//! This crate owns what every other crate agrees on. It does not index, search or serve
//! HTTP; it only says what a record is, where it goes, and how to append and read it.
//!
//! - [`record`]: the record types (vector upserts and deletes, events, plan changes,
//!   node heartbeats, collection specs) and [`codec`]: their versioned binary and JSON
//!   encodings, told apart by a header.
//! - [`ring`]: the 64-bit ring position of a record and its partition.
//! - [`hlc`]: the hybrid logical clock that stamps writes.
//! - [`topic`]: topic names, partition counts and configs, in one place.
//! - [`log`]: the [`log::Log`] interface with two backends, Apache Kafka and an embedded
//!   LMDB log for a single machine.

pub mod catalog;
pub mod codec;
pub mod error;
pub mod events;
pub mod hlc;
pub mod log;
pub mod record;
pub mod ring;
pub mod topic;

pub use error::Error;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
