//! The one error type of the log, [`LogError`], shared by both backends. Every message says
//! what went wrong and, where it can, what to do about it.

use std::time::Duration;

/// Errors from the log: a topic or partition that is not there, a backend that failed or
/// is unreachable, or stored data this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
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

    #[error("{partitions} partitions is out of range: a topic has 1 to {max} partitions")]
    InvalidPartitions { partitions: u32, max: u32 },

    #[error("invalid name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },

    /// A record or a topic's metadata in the log that cannot be read back as written.
    #[error("malformed {kind} record: {reason}")]
    Malformed { kind: &'static str, reason: String },

    #[error("record version {found} of {kind} is newer than this build understands (max {supported}); upgrade hektor")]
    UnknownVersion {
        kind: &'static str,
        found: u8,
        supported: u8,
    },

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

    #[error("the log is shut down")]
    Closed,
}

/// Result with the log's [`LogError`].
pub type Result<T, E = LogError> = std::result::Result<T, E>;
