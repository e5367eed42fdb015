//! Write levels across regions (seed §3.1): how many regions must have merged a write
//! before `POST /collections/{c}/vectors` answers.
//!
//! - `async` (the default): durable in this region's log; other regions merge it when
//!   MirrorMaker has copied it.
//! - `quorum`: a majority of all regions (this one counted) have applied it.
//! - `sync`: every region has.
//!
//! The write path only states what it needs ([`Replication::wait`]); how a node learns what
//! other regions have merged is the shard host's business (every record a region writes
//! carries its `seen` vector, and a node reads it when it merges that region's mirror).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

/// How many regions a write waits for (a collection's default, a write's override).
pub use hektor_topics::record::WriteLevel;

/// Default bound on a write's wait for other regions.
pub const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait a write may ask for (`timeout_ms`).
pub const MAX_REPLICATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Which regions have a write, once the wait is over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Replicated {
    /// Regions that have applied every record of the write (this one first).
    pub regions: Vec<String>,
    /// Regions that had not when the wait ended.
    pub missing: Vec<String>,
}

/// What a node knows of the other regions' progress on this region's partitions.
pub trait Replication: Send + Sync {
    /// The other regions (empty: one region, every level is met at once).
    fn others(&self) -> Vec<String>;

    /// Wait until `need` of the other regions have applied every record of the write
    /// whose token is `token` (partition → offset in this region's log) of `collection`,
    /// at most `timeout`. `Ok` when they have; `Err` with who has what when not (or when
    /// this node cannot tell: it holds no shard of a partition).
    fn wait<'a>(
        &'a self,
        collection: &'a str,
        token: &'a BTreeMap<u32, u64>,
        need: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Replicated, (Replicated, String)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_majority_of_all_regions() {
        // regions in all = others + 1; a majority of them, this one counted.
        for (others, need) in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (6, 3)] {
            assert_eq!(WriteLevel::Quorum.others_needed(others), need, "{others}");
            let all = others + 1;
            assert!((need + 1) * 2 > all, "{need} + 1 of {all} is no majority");
        }
        assert_eq!(WriteLevel::Sync.others_needed(3), 3);
        assert_eq!(WriteLevel::Async.others_needed(3), 0);
    }
}
