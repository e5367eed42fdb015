//! How one topic is kept: its partition count, cleanup policy and replication
//! ([`TopicSpec`], [`Cleanup`]), what a backend needs to create it, and the partition
//! count limits every backend enforces ([`MAX_PARTITIONS`], [`validate_partitions`]).
//!
//! Which topics exist and what they are called is not decided here: that is the topic
//! layout of `hektor-topics` (`topics/src/topic.rs`).

use crate::{LogError, Result};

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Check a partition count that comes from input: `1..=MAX_PARTITIONS`.
pub fn validate_partitions(partitions: u32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(LogError::InvalidPartitions {
            partitions,
            max: MAX_PARTITIONS,
        })
    }
}

/// How a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Keep the latest record per key (Kafka `cleanup.policy=compact`).
    Compact,
    /// Delete records older than the retention (Kafka `cleanup.policy=delete`).
    Retain { ms: i64 },
    /// Keep every record (Kafka `cleanup.policy=delete` with `retention.ms=-1`): the
    /// vectors of a `crdt` collection, whose older writes still hold fields of the merged
    /// payload that the newest record of a key does not.
    Keep,
}

/// Everything needed to create one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub cleanup: Cleanup,
    /// Kafka replication factor (ignored by the embedded log).
    pub replication: u16,
}

impl TopicSpec {
    /// Kafka topic configs for this spec.
    pub fn kafka_configs(&self) -> Vec<(&'static str, String)> {
        match self.cleanup {
            Cleanup::Compact => vec![
                ("cleanup.policy", "compact".into()),
                ("min.compaction.lag.ms", "0".into()),
            ],
            Cleanup::Retain { ms } => vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", ms.to_string()),
            ],
            Cleanup::Keep => vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", "-1".into()),
                ("retention.bytes", "-1".into()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_counts_are_checked() {
        assert!(validate_partitions(0).is_err());
        assert!(validate_partitions(MAX_PARTITIONS + 1).is_err());
        assert!(validate_partitions(1).is_ok());
        assert!(validate_partitions(MAX_PARTITIONS).is_ok());
    }
}
