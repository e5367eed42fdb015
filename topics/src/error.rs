//! The one error type of the topics crate. Every message says what went wrong and, where
//! it can, what to do about it.
//!
//! [`Refusals`] is how a reader of the log reports records it refuses to apply (a forged
//! or malformed catalog entry or heartbeat): counted, and warned about at a bounded rate,
//! so a flood of bad records neither stops the reader nor floods its logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Errors from records, the ring and the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic `{0}` does not exist (create it with `hektor topics create` or by creating the collection)")]
    UnknownTopic(String),

    #[error("topic `{topic}` exists with {existing} partitions, but {wanted} were asked for")]
    TopicMismatch {
        topic: String,
        existing: u32,
        wanted: u32,
    },

    #[error("partition {partition} is out of range for topic `{topic}`, which has {partitions} partitions")]
    PartitionOutOfRange {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error(
        "offset {offset} is past the end of {topic}/{partition} (high watermark {high_watermark})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        high_watermark: u64,
    },

    #[error("malformed {kind} record: {reason}")]
    Malformed { kind: &'static str, reason: String },

    #[error("unsupported encoding `{0}` (this build reads bin.v1 and json.v1; upgrade hektor to read newer records)")]
    UnknownEncoding(String),

    #[error("record version {found} of {kind} is newer than this build understands (max {supported}); upgrade hektor")]
    UnknownVersion {
        kind: &'static str,
        found: u8,
        supported: u8,
    },

    #[error("invalid name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("{partitions} partitions is out of range: a topic has 1 to {max} partitions")]
    InvalidPartitions { partitions: u32, max: u32 },

    #[error("the embedded log at {path} failed: {source}")]
    Storage {
        path: String,
        #[source]
        source: heed::Error,
    },

    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("Kafka error: {0} (check that the brokers in HEKTOR_KAFKA_BROKERS / --brokers are reachable)")]
    Kafka(String),

    #[error("invalid Kafka client property {what}: {reason} (write KEY=VALUE, a librdkafka property name such as security.protocol=SASL_SSL)")]
    KafkaProperty { what: String, reason: String },

    #[error("timed out after {0:?} waiting for the log")]
    Timeout(Duration),

    #[error("collection `{0}` already exists with other settings (delete it first, or use another name)")]
    CollectionExists(String),

    #[error("invalid settings for collection `{collection}`: {reason}")]
    InvalidSpec { collection: String, reason: String },

    #[error("invalid heartbeat of node `{node}`: {reason} (check that node's --node-id, --advertise, --region, --roles and --node-capacity)")]
    InvalidHeartbeat { node: String, reason: String },

    #[error("the log is shut down")]
    Closed,
}

/// Records a log reader refused (read, found invalid, not applied): counted, with a
/// warning at most once per `every` that says how many were refused since the last one.
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    every: Duration,
    total: AtomicU64,
    /// When the last warning was written, and the total then.
    last_warning: Mutex<Option<(Instant, u64)>>,
}

impl Refusals {
    /// Refusals of records of kind `what` (such as "catalog entry"), warned about at most
    /// once per `every`.
    pub fn new(what: &'static str, every: Duration) -> Self {
        Refusals {
            what,
            every,
            total: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// Count one refused record (at `offset` of its topic) and warn unless warned lately.
    pub fn refuse(&self, offset: u64, reason: &dyn std::fmt::Display) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock();
        if last.is_some_and(|(at, _)| at.elapsed() < self.every) {
            return;
        }
        let unreported = total - last.map_or(0, |(_, then)| then) - 1;
        tracing::warn!(
            record = self.what,
            offset,
            %reason,
            refused_total = total,
            refused_without_warning = unreported,
            "refused a record read from the log; it is skipped and the reader goes on"
        );
        *last = Some((Instant::now(), total));
    }

    /// How many records were refused so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
