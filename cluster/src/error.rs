//! The one error type of `hektor-cluster`: everything a placement change, a shard-map action
//! or a shard map read from the plan topic can get wrong, with a message that says what to
//! do about it.
//!
//! This module owns the error enum only; the checks that raise these errors live next to
//! the data they check ([`crate::node`], [`crate::placement`], [`crate::shard_map`]).

use hektor_topics::record::RingRange;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A ring range as people read it: `[0x…, 0x…)`, `end` 2^64 shown as `2^64`.
pub fn fmt_range(range: &RingRange) -> String {
    match range.end {
        Some(end) => format!("[{:#x}, {:#x})", range.start, end),
        None => format!("[{:#x}, 2^64)", range.start),
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node id must be a non-empty string without control characters.
    #[error("invalid node id {0:?}: use a non-empty name without control characters")]
    InvalidNodeId(String),

    /// A capacity weight outside `(0, MAX_WEIGHT]` or not a number.
    #[error("invalid weight {weight} for node {node:?}: use a finite number in (0, {max}]")]
    InvalidWeight { node: String, weight: f64, max: f64 },

    /// A node joined twice.
    #[error("node {0:?} is already a member: make it leave first, or reweight it")]
    DuplicateNode(String),

    /// A node that is not a member was named.
    #[error("node {0:?} is not a member")]
    UnknownNode(String),

    /// A placement has no node to place anything on.
    #[error("the placement has no nodes: join at least one node first")]
    NoNodes,

    /// More replicas were asked for than there are nodes.
    #[error(
        "replication factor {wanted} needs {wanted} distinct nodes, but only {have} are members"
    )]
    NotEnoughNodes { wanted: usize, have: usize },

    /// A replication factor of zero.
    #[error("replication factor must be at least 1")]
    ZeroReplication,

    /// A virtual-node count outside `1..=MAX_VNODES`.
    #[error("invalid virtual-node count {vnodes}: use 1..={max}")]
    InvalidVnodes { vnodes: usize, max: usize },

    /// A range boundary that would leave the ranges out of order.
    #[error("invalid range boundary {index} at {at:#x}: boundaries must grow strictly between their neighbours")]
    InvalidBoundary { index: usize, at: u64 },

    /// A plan action names a shard that is not in the map (or no longer is).
    #[error("collection {collection:?} has no shard {} at epoch {epoch}: the action is stale or for another map", fmt_range(.range))]
    UnknownShard {
        collection: String,
        range: RingRange,
        epoch: u64,
    },

    /// A split point that is not strictly inside the shard.
    #[error("cannot split shard {} at {at:#x}: the point must lie strictly inside the shard", fmt_range(.shard))]
    SplitOutside { shard: RingRange, at: u64 },

    /// A merge of shards that do not touch.
    #[error("cannot merge {} with {}: the left shard must end where the right one starts", fmt_range(.left), fmt_range(.right))]
    NotAdjacent { left: RingRange, right: RingRange },

    /// A merge of shards served by different replicas or tiers.
    #[error("cannot merge {} with {}: {why}; move replicas or set the tier so both shards agree first", fmt_range(.left), fmt_range(.right))]
    MergeMismatch {
        left: RingRange,
        right: RingRange,
        why: String,
    },

    /// A move from a node that does not hold a replica of the shard.
    #[error("node {node:?} holds no replica of shard {}", fmt_range(.shard))]
    ReplicaNotFound { shard: RingRange, node: String },

    /// A move to a node that already holds a replica of the shard.
    #[error("node {node:?} already holds a replica of shard {}: pick another target", fmt_range(.shard))]
    DuplicateReplica { shard: RingRange, node: String },

    /// A shard map that does not tile the ring, or has bad replica lists.
    #[error("invalid shard map: {0}")]
    InvalidShardMap(String),

    /// A plan change for another collection.
    #[error("plan change for collection {got:?} applied to the shard map of {expected:?}")]
    WrongCollection { expected: String, got: String },

    /// A plan change whose epoch is not the next one.
    #[error("plan change creates epoch {got}, but the shard map is at epoch {current}: only epoch {} can be applied next (replay the plan topic in order)", .current + 1)]
    EpochMismatch { current: u64, got: u64 },

    /// The epoch counter would overflow.
    #[error("shard-map epoch {0} cannot grow any further")]
    EpochOverflow(u64),
}
