//! hektor's write path.
//!
//! - [`validate`]: the rules every write obeys (dimension, finite floats, id, payload and
//!   batch limits), checked for the whole batch before anything is written.
//! - [`writer`]: turns a validated batch into vector records, places each at its ring
//!   partition and appends them to the collection's vectors topic; answers with a
//!   [`token::Token`] (partition → offset) for read-your-writes.
//! - [`http`]: the write side of the HTTP API (create and drop collections, post vectors).
//! - [`replication`]: write levels across regions (`async`, `quorum`, `sync`).
//! - [`intake`]: re-partitions records that any Kafka client wrote to the intake topic.
//!
//! Reads and searches are not here: they are the `hektor-query` crate (read/write
//! separation, seed §2.4).

pub mod error;
pub mod http;
pub mod intake;
pub mod replication;
pub mod token;
pub mod validate;
pub mod writer;

pub use error::IngestError;
pub use token::Token;
pub use writer::Writer;
