//! hektor's log: partitioned, append-only topics with dense per-partition offsets.
//!
//! This crate owns the [`Log`] interface, its two backends, the configuration of one topic
//! ([`TopicSpec`], [`Cleanup`]) and the log's errors ([`LogError`]). It does not know what
//! the records mean (record types and their encodings are `hektor-topics`) nor which
//! topics a collection has (`hektor-topics`' topic layout).
//!
//! [`Log`] is the one interface every producer and consumer in hektor uses. It has two
//! backends with the same semantics, checked by one conformance suite
//! (`log/tests/conformance`):
//! - [`kafka::KafkaLog`]: Apache Kafka through rdkafka (idempotent producer, `acks=all`,
//!   consumers assigned to explicit offsets), for clusters.
//! - [`embedded::EmbeddedLog`]: a durable log on LMDB (heed) for a single machine.
//!
//! Semantics both backends keep:
//! - `append` returns only once the batch is durable, with one offset per record, in order.
//! - Offsets in a partition are strictly increasing; without compaction they are dense
//!   (0, 1, 2, ...). Compaction may leave gaps but never reorders.
//! - `read(from)` returns records with offset >= `from`, in offset order, waiting up to
//!   `wait` for at least one when none is there yet.
//! - `high_watermark` is the offset the next appended record will get.

use std::time::Duration;

use async_trait::async_trait;

pub mod embedded;
pub mod error;
pub mod kafka;
pub mod topic;

pub use error::{LogError, Result};
pub use topic::{Cleanup, TopicSpec};

/// One record to append: an optional key, a value, and headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl LogRecord {
    pub fn new(key: Option<Vec<u8>>, value: Vec<u8>) -> LogRecord {
        LogRecord {
            key,
            value,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A record read back from the log, with its offset and append time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    /// Milliseconds since the Unix epoch when the log accepted it.
    pub timestamp_ms: i64,
    pub record: LogRecord,
}

/// A partitioned, durable, append-only log.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// "kafka" or "embedded".
    fn backend(&self) -> &'static str;

    /// Create a topic if it does not exist. Idempotent; fails with
    /// [`LogError::TopicMismatch`] if it exists with another partition count.
    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()>;

    /// Delete a topic and its records. Deleting a missing topic is not an error.
    async fn delete_topic(&self, topic: &str) -> Result<()>;

    /// The number of partitions of a topic.
    async fn partitions(&self, topic: &str) -> Result<u32>;

    /// Append a batch to one partition; returns each record's offset, in order, once the
    /// whole batch is durable.
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<Vec<u64>>;

    /// Up to `max` records with offset >= `from`, in order. Waits up to `wait` for the first
    /// record if none is there; returns an empty batch when the wait runs out.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>>;

    /// The offset the next record appended to this partition will get.
    async fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64>;

    /// The offset of the first record appended at or after `time_ms` (ms since the Unix
    /// epoch, by the record's timestamp), or the high watermark when every record is
    /// older: where a reader that wants only recent records starts. Assumes timestamps do
    /// not decrease along the partition (Kafka's `offsetsForTimes` does the same).
    async fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64>;
}
