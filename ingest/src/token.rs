//! The consistency token: for each partition a write touched, the offset of its last record.
//! A reader that waits until every shard of those partitions has applied past these offsets
//! sees the write (read-your-writes).
//!
//! Offsets are positions in the log of the region that accepted the write (MirrorMaker 2
//! copies records to other offsets), so write answers name that region beside the token;
//! a reader in another region names it too, and is served by turning the token into that
//! region's clock floors (see `hektor_query::router::token_floors`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Partition → offset of the last record written there. In JSON: `{"3": 1041, "7": 9}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token {
    pub offsets: BTreeMap<u32, u64>,
}

impl Token {
    /// Record that `offset` was written to `partition` (keeps the highest).
    pub fn observe(&mut self, partition: u32, offset: u64) {
        let entry = self.offsets.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    /// The combination of two tokens: satisfied only when both are.
    pub fn merge(&mut self, other: &Token) {
        for (&partition, &offset) in &other.offsets {
            self.observe(partition, offset);
        }
    }
}
