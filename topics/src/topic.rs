//! Topic names, partition counts and configs: the one place that says which topics a
//! collection has and how each is kept (as a `hektor_log::TopicSpec`, the log's own
//! description of one topic).
//!
//! Per collection `C` (names are `hektor.C.<kind>`):
//! - `vectors`: [`crate::record::VectorRecord`], compacted by key (the vector id),
//!   P partitions, one per equal ring range.
//! - `intake`: the same records from any Kafka client, any partitioning; hektor re-partitions
//!   them into `vectors` by ring position. Time-retained.
//! - `events`: [`crate::record::Event`], time-retained (7 days), P partitions.
//! - `plan`: [`crate::record::PlanChange`], compacted, one partition.
//! - `deadletter`: poison records with the reason in a header, time-retained, one partition.
//!
//! Cluster-wide: `hektor.nodes` (heartbeats, compacted by node id, one partition) and
//! `hektor.catalog` (collection specs, compacted by name, one partition).

use hektor_log::{Cleanup, TopicSpec};

use crate::record::MergePolicy;
use crate::{Error, Result};

/// Prefix of every topic hektor owns.
pub const PREFIX: &str = "hektor";
/// The catalog of collections (compacted, one partition).
pub const CATALOG_TOPIC: &str = "hektor.catalog";
/// Node heartbeats (compacted, one partition).
pub const NODES_TOPIC: &str = "hektor.nodes";

/// Header of a dead-lettered record naming why it was refused.
pub const DLQ_REASON_HEADER: &str = "hektor-dlq-reason";
/// Header of a dead-lettered record naming where it came from (`topic/partition/offset`).
pub const DLQ_SOURCE_HEADER: &str = "hektor-dlq-source";

/// Retention of time-retained topics: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Retention of the events topics: the planner's longest window (one day) and an hour,
/// so the events a planner replays at start are bounded by what it uses.
pub const EVENTS_RETENTION_MS: i64 = 25 * 3600 * 1000;

/// The kinds of topic a collection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Vectors,
    Intake,
    Events,
    Plan,
    DeadLetter,
}

impl TopicKind {
    pub const ALL: [TopicKind; 5] = [
        TopicKind::Vectors,
        TopicKind::Intake,
        TopicKind::Events,
        TopicKind::Plan,
        TopicKind::DeadLetter,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            TopicKind::Vectors => "vectors",
            TopicKind::Intake => "intake",
            TopicKind::Events => "events",
            TopicKind::Plan => "plan",
            TopicKind::DeadLetter => "deadletter",
        }
    }
}

/// Check a collection name: 1 to 64 of `[A-Za-z0-9_-]`, so it is safe in topic names,
/// paths and URLs.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason: "a collection name is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'".into(),
        });
    }
    Ok(())
}

/// The name of a collection's topic of the given kind.
pub fn topic_name(collection: &str, kind: TopicKind) -> String {
    format!("{PREFIX}.{collection}.{}", kind.suffix())
}

/// The spec of one of a collection's topics.
/// The vectors of a `crdt` collection are kept whole (no compaction): an older write of a
/// key may hold payload fields its newest write does not, and a shard rebuilt from the
/// log needs them.
pub fn collection_topic(
    collection: &str,
    kind: TopicKind,
    partitions: u32,
    replication: u16,
    merge: MergePolicy,
) -> TopicSpec {
    let (partitions, cleanup) = match kind {
        TopicKind::Vectors if merge == MergePolicy::Crdt => (partitions, Cleanup::Keep),
        TopicKind::Vectors => (partitions, Cleanup::Compact),
        TopicKind::Intake => (
            partitions,
            Cleanup::Retain {
                ms: DEFAULT_RETENTION_MS,
            },
        ),
        TopicKind::Events => (
            partitions,
            Cleanup::Retain {
                ms: EVENTS_RETENTION_MS,
            },
        ),
        TopicKind::Plan => (1, Cleanup::Compact),
        TopicKind::DeadLetter => (
            1,
            Cleanup::Retain {
                ms: DEFAULT_RETENTION_MS,
            },
        ),
    };
    TopicSpec {
        name: topic_name(collection, kind),
        partitions,
        cleanup,
        replication,
    }
}

/// All topics of one collection.
pub fn collection_topics(
    collection: &str,
    partitions: u32,
    replication: u16,
    merge: MergePolicy,
) -> Vec<TopicSpec> {
    TopicKind::ALL
        .iter()
        .map(|&kind| collection_topic(collection, kind, partitions, replication, merge))
        .collect()
}

/// The cluster-wide topics.
pub fn cluster_topics(replication: u16) -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: CATALOG_TOPIC.into(),
            partitions: 1,
            cleanup: Cleanup::Compact,
            replication,
        },
        TopicSpec {
            name: NODES_TOPIC.into(),
            partitions: 1,
            cleanup: Cleanup::Compact,
            replication,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_are_checked() {
        assert!(validate_collection_name("debian_minilm-384").is_ok());
        for bad in [
            "",
            "a.b",
            "a/b",
            "a b",
            "..",
            "../evil",
            "/etc",
            "a\\b",
            &"x".repeat(65),
        ] {
            assert!(validate_collection_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_collection_topic_is_named_after_its_collection() {
        let topics = collection_topics("docs", 8, 1, MergePolicy::Lww);
        assert_eq!(topics.len(), TopicKind::ALL.len());
        let vectors = &topics[0];
        assert_eq!(vectors.name, "hektor.docs.vectors");
        assert_eq!(vectors.partitions, 8);
        assert_eq!(vectors.cleanup, Cleanup::Compact);
        // A crdt collection's vectors keep every write (older ones hold merged fields).
        let crdt = collection_topics("docs", 8, 1, MergePolicy::Crdt);
        assert_eq!(crdt[0].cleanup, Cleanup::Keep);
        let plan = topics.iter().find(|t| t.name.ends_with(".plan")).unwrap();
        assert_eq!(plan.partitions, 1);
    }
}
