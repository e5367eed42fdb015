//! The records that travel through hektor's topics, as plain serde types.
//!
//! These are the domain types; how they are laid out in bytes (a compact versioned binary
//! form for the hot path, JSON for people) is [`crate::codec`]'s job. A record type is tied
//! to the topic it lives in (see [`crate::topic`]):
//!
//! | topic      | value type        | key                 |
//! |------------|-------------------|---------------------|
//! | vectors    | [`VectorRecord`]  | the vector id       |
//! | intake     | [`VectorRecord`]  | anything            |
//! | events     | [`Event`]         | none                |
//! | plan       | [`PlanChange`]    | the collection      |
//! | nodes      | [`NodeHeartbeat`] | the node id         |
//! | catalog    | [`CatalogEntry`]  | the collection name |
//! | deadletter | raw bytes of the poison record, reason in a header |

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;

/// Insert or replace one vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorUpsert {
    pub collection: String,
    pub id: String,
    /// The routing key: a tenant's vectors lie in one contiguous ring range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub vector: Vec<f32>,
    /// Arbitrary JSON stored next to the vector and returned with search hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// When the write was accepted, on the writer's hybrid logical clock.
    #[serde(default)]
    pub hlc: Hlc,
    /// The region that accepted the write.
    #[serde(default)]
    pub origin: String,
}

/// Remove one vector: a tombstone carrying the same keys as an upsert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorDelete {
    pub collection: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default)]
    pub hlc: Hlc,
    #[serde(default)]
    pub origin: String,
}

/// A record of the vectors (and intake) topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VectorRecord {
    Upsert(VectorUpsert),
    Delete(VectorDelete),
}

impl VectorRecord {
    pub fn id(&self) -> &str {
        match self {
            VectorRecord::Upsert(u) => &u.id,
            VectorRecord::Delete(d) => &d.id,
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            VectorRecord::Upsert(u) => u.tenant.as_deref(),
            VectorRecord::Delete(d) => d.tenant.as_deref(),
        }
    }

    pub fn collection(&self) -> &str {
        match self {
            VectorRecord::Upsert(u) => &u.collection,
            VectorRecord::Delete(d) => &d.collection,
        }
    }

    pub fn hlc(&self) -> Hlc {
        match self {
            VectorRecord::Upsert(u) => u.hlc,
            VectorRecord::Delete(d) => d.hlc,
        }
    }
}

/// What an [`Event`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Query,
    Upsert,
    Delete,
}

/// One query or write, as seen by the node that served it: the input of hotness tracking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub collection: String,
    /// The shard (today: the partition) that served it.
    pub shard: u32,
    /// Ring position of the record written, or of the tenant's range start for a query.
    pub ring: u64,
    pub kind: EventKind,
    /// Service time in microseconds.
    pub latency_us: u32,
    /// Wall-clock milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that served it.
    #[serde(default)]
    pub node: String,
}

/// A half-open range `[start, end)` of ring positions; `end == None` means up to 2^64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RingRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl RingRange {
    pub const FULL: RingRange = RingRange {
        start: 0,
        end: None,
    };

    pub fn contains(&self, position: u64) -> bool {
        position >= self.start && self.end.is_none_or(|end| position < end)
    }
}

/// The storage tier a shard is served from (ordered hottest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

/// One change to a collection's shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PlanAction {
    /// Split `shard` at ring position `at` into `[start, at)` and `[at, end)`.
    Split { shard: RingRange, at: u64 },
    /// Merge two adjacent shards.
    Merge { left: RingRange, right: RingRange },
    /// Move a shard's replica from one node to another.
    Move {
        shard: RingRange,
        from: String,
        to: String,
    },
    /// Serve a shard from another storage tier.
    SetTier { shard: RingRange, tier: Tier },
}

/// A decision about the shard map, with the epoch it creates and why it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanChange {
    pub collection: String,
    /// The shard-map epoch this change creates; epochs only grow.
    pub epoch: u64,
    pub action: PlanAction,
    /// Human-readable reason, with the numbers that led to it.
    pub reason: String,
    pub time_ms: u64,
    /// Where the planner wants new copies: for a split, the node the right half goes to
    /// (chosen by measured load); `None` lets placement choose. (JSON form only; the binary
    /// form reads as `None`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// A node announcing itself and its capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: String,
    /// Where its HTTP service listens, `host:port`.
    pub address: String,
    pub region: String,
    pub roles: Vec<String>,
    /// Relative capacity weight (1.0 = a standard node).
    pub capacity: f64,
    pub memory_bytes: u64,
    pub time_ms: u64,
    /// The node is draining: it keeps serving what it holds but takes nothing new, and
    /// stops once the shard maps no longer list it. (Carried in the JSON form only; the
    /// binary form predates it and reads as `false`.)
    #[serde(default)]
    pub leaving: bool,
    /// The shards this node holds and their sizes, for the kinetic planner. (JSON form
    /// only; the binary form reads as empty.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<HeldShard>,
}

/// One shard a node holds, as its heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShard {
    pub collection: String,
    pub range: RingRange,
    /// Live vectors in the shard.
    pub vectors: u64,
    /// Bytes its store takes on disk (vectors, payloads, index).
    #[serde(default)]
    pub bytes: u64,
}

/// How vectors of a collection are compared. Scores are always "higher is closer".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// score = cosine similarity in [-1, 1].
    Cosine,
    /// score = -(euclidean distance).
    Euclidean,
    /// score = dot product.
    Dot,
}

/// The settings of one collection, as stored in the catalog topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    pub dimension: u32,
    pub distance: Distance,
    /// Number of vectors-topic partitions: P equal ranges of the ring.
    pub partitions: u32,
    /// Copies of each shard, on distinct nodes (capped by the data nodes alive).
    #[serde(default = "default_replication")]
    pub replication: u32,
    /// How the controller chooses the nodes of each shard.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub placement: PlacementSpec,
}

/// A collection's placement strategy, as the controller applies it to its shards (the
/// strategies themselves are `hektor_cluster::placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum PlacementSpec {
    /// Sticky and balanced by capacity weight: moves only what membership changes require.
    #[default]
    Balanced,
    /// Hash of the shard's start mod the number of nodes.
    HashMod,
    /// Contiguous ranges of the ring per node.
    Range,
    /// Consistent hashing of the shard's start, `vnodes` virtual nodes per unit of weight.
    ConsistentHash { vnodes: usize },
    /// Placed by measured load: shards stay where they are (no rebalancing by shard
    /// count); new and orphaned replicas go to the node with the fewest shards per unit of
    /// weight, and the kinetic planner's moves (carried out only under this strategy) and
    /// split placements spread the load.
    Load,
}

impl PlacementSpec {
    pub fn is_default(&self) -> bool {
        *self == PlacementSpec::Balanced
    }
}

fn default_replication() -> u32 {
    1
}

/// A record of the catalog topic: a collection created (or replaced) or dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CatalogEntry {
    Create(CollectionSpec),
    Drop { name: String },
}
