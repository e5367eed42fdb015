//! The shapes of the read routes' JSON answers that the handlers of [`crate::http`] build
//! field by field (`json!`), as `utoipa` schemas for the OpenAPI document
//! (`GET /openapi.json`), and the error body every read route answers with.
//!
//! Owns: those schemas. The handlers stay the source of what is sent; these types are
//! checked against real answers by `tests/openapi_embedded.rs`, which validates each body
//! it gets against the documented schema with no field beyond the documented ones.
//! Request and answer types that are serialized as they are (`SearchRequest`,
//! `SearchResponse`, the per-shard calls) carry their own `ToSchema` in
//! [`crate::router`].

use std::collections::BTreeMap;

use hektor_cluster::Target;
use hektor_topics::record::{CollectionSpec, RingRange, Tier};
use serde::Serialize;
use utoipa::ToSchema;

/// Every error of the HTTP API: `{"error": "what went wrong, for people"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Why the request failed.
    pub error: String,
}

/// `GET /collections`: every collection of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    pub collections: Vec<CollectionSpec>,
}

/// `GET /collections/{collection}`: settings, the shard map and, for the shards this node
/// holds, their size, lag and engine.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionView {
    /// The collection's settings (null only while the catalog has not caught up).
    pub settings: Option<CollectionSpec>,
    /// The shard map's epoch.
    pub epoch: Option<u64>,
    /// Which creation of this name the map is for (the catalog offset that created it).
    pub incarnation: Option<u64>,
    /// Vectors in the shards this node holds.
    pub vectors: u64,
    /// Whether `vectors` counts every shard (this node holds them all).
    pub complete: bool,
    pub shards: Vec<ShardView>,
    /// Shards being built for a coming epoch.
    pub targets: Vec<Target>,
}

/// One serving shard of a map; the fields after `tier` are there only when this node
/// holds the shard.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardView {
    pub range: RingRange,
    pub replicas: Vec<String>,
    pub tier: Tier,
    /// The vectors-topic partition the shard follows.
    #[schema(required = false)]
    pub shard: Option<u32>,
    /// The index engine: `arroy`, `exact`, `hnsw`, `warm` or `cold`.
    #[schema(required = false)]
    pub engine: Option<String>,
    #[schema(required = false)]
    pub vectors: Option<u64>,
    /// Vectors applied but not yet in the index (searched exactly meanwhile).
    #[schema(required = false)]
    pub pending: Option<u64>,
    /// The next partition offset the shard will apply.
    #[schema(required = false)]
    pub next_offset: Option<u64>,
    /// Records of its partition not applied yet.
    #[schema(required = false)]
    pub lag: Option<u64>,
    /// Poison records sent to the dead-letter topic.
    #[schema(required = false)]
    pub dead_lettered: Option<u64>,
    /// How the shard came to this node: `{"kind": "local"}`, `{"kind": "log"}` or
    /// `{"kind": "snapshot", "from", "bytes", "millis"}`.
    #[schema(required = false, value_type = Option<Object>)]
    pub origin: Option<serde_json::Value>,
    /// Per other region whose vectors are mirrored here: `{"next_offset",
    /// "high_watermark", "duplicates", "floor"}` (present only with `--mirror-regions`).
    #[schema(required = false, value_type = Option<Object>)]
    pub mirrored: Option<serde_json::Value>,
    /// Concurrent writes of different regions the shard met since it opened on this node
    /// (present only with `--mirror-regions`).
    #[schema(required = false)]
    pub conflicts: Option<u64>,
}

/// `GET /collections/{collection}/vectors/{id}`: a stored vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct VectorView {
    pub id: String,
    pub vector: Vec<f32>,
    /// The payload written with it, any JSON.
    pub payload: Option<serde_json::Value>,
    /// The vectors-topic partition it lies in.
    pub shard: Option<u32>,
    /// The range of the shard that answered.
    pub range: RingRange,
    /// The shard map's epoch that served it.
    pub epoch: u64,
    pub written: Written,
}

/// The write that holds a vector's current value.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// Its effective hybrid logical clock (wall ms << 16 | counter), as a decimal string.
    pub hlc: String,
    /// The region that accepted it (empty: unknown).
    pub origin: String,
    /// It met a concurrent write of another region (one it had not seen), resolved by
    /// the stamps (greatest hlc, then region name).
    pub concurrent: bool,
}

/// `GET /cluster`: the shard maps with hotness, the members, the planner's decisions and
/// the controller's recent map changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterOverview {
    /// This node's id.
    pub node: String,
    /// What the stored bytes cost per month by tier, at the seed's prices.
    pub cost: CostView,
    /// The kinetic planner's state and thresholds (null when the planner is off).
    #[schema(value_type = Option<Object>)]
    pub planner: Option<serde_json::Value>,
    pub collections: Vec<ClusterCollection>,
    /// The other regions this node's shards merge (empty in one region).
    pub regions: Vec<RegionView>,
    /// Every node known from the heartbeats, by id.
    pub members: BTreeMap<String, Member>,
    /// The planner's load per node (`{"node", "capacity", "ops_per_s", "load"}`).
    pub nodes: Vec<serde_json::Value>,
    /// The planner's recent decisions.
    pub decisions: Vec<serde_json::Value>,
    /// The controller's recent map changes.
    pub map_changes: Vec<serde_json::Value>,
}

/// Another region as this node's shards merge it, in `GET /cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionView {
    pub region: String,
    /// Shards on this node following its mirrored partitions.
    pub shards: u64,
    /// Its mirrored records those shards have not merged yet.
    pub behind: u64,
    /// Wall-clock ms (its clock) of the newest write merged, over those shards.
    pub newest_merged_ms: u64,
    /// Wall-clock ms of the newest write merged by the least advanced shard (over shards
    /// that merged anything; 0 when none has). With ticks it advances while nobody writes.
    pub oldest_merged_ms: u64,
    /// Now − `oldest_merged_ms`: at most how old a write of that region missing here is
    /// (clock offset aside); null before anything was merged.
    pub staleness_ms: Option<u64>,
    /// Wall-clock ms up to which that region has merged this region's partitions, the
    /// least over these shards (from the `seen` vectors on its records; 0: not heard).
    pub has_ours_until_ms: u64,
    /// The measured round trip to that region's node (`--region-peers`; a moving mean of
    /// probes every second), null without a peer or before its first answer.
    pub rtt_ms: Option<f64>,
    /// That region's node as this one calls it: `{"region", "url", "rtt_ms",
    /// "last_rtt_ms", "alive", "answered_ms_ago", "probes", "failures", "last_error"}`;
    /// null without a peer.
    #[schema(value_type = Option<Object>)]
    pub peer: Option<serde_json::Value>,
    /// How this node follows that region's catalog (`--mirror-regions`): `{"region",
    /// "next_offset", "read", "adopted", "refused", "error", "conflicts"}`, `conflicts`
    /// naming the collections that region created with other settings than this
    /// region's (each keeps its own until one of them drops the name); null when not
    /// followed.
    #[schema(value_type = Option<Object>)]
    pub catalog: Option<serde_json::Value>,
}

/// Storage cost by tier in `GET /cluster` (`hektor_cluster::cost`): every copy the live
/// nodes report holding, priced at its range's tier, plus the archived snapshots this
/// node knows (one copy each, in object storage).
#[derive(Debug, Serialize, ToSchema)]
pub struct CostView {
    /// Dollars per GB-month (10^9 bytes): `hot`, `warm`, `cold`, `archive`.
    #[schema(value_type = Object)]
    pub prices: serde_json::Value,
    /// Hot to archive, empty tiers included.
    pub tiers: Vec<TierCostView>,
    pub bytes: u64,
    pub cost_per_month: f64,
    /// The same bytes all in the hot tier.
    pub cost_all_hot: f64,
    pub ratio_to_all_hot: f64,
    /// Archived shards whose snapshot size this node does not know (not counted).
    pub archives_unknown: u64,
}

/// One tier's share in [`CostView`].
#[derive(Debug, Serialize, ToSchema)]
pub struct TierCostView {
    pub tier: Tier,
    /// Shard copies (a shard with two replicas counts twice).
    pub copies: u64,
    /// Vectors the holders report (archived snapshots' are not counted).
    pub vectors: u64,
    pub bytes: u64,
    pub price_per_gb_month: f64,
    pub cost_per_month: f64,
}

/// One collection in `GET /cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterCollection {
    pub name: String,
    pub partitions: u32,
    pub replication: u32,
    pub epoch: Option<u64>,
    pub targets: Vec<Target>,
    /// When the planner last measured it (seconds), null before.
    pub snapshot_time_s: Option<f64>,
    pub shards: Vec<ClusterShard>,
}

/// One shard in `GET /cluster`, with the planner's measures (zero before any).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterShard {
    /// The vectors-topic partition it follows.
    pub shard: u32,
    pub range: RingRange,
    pub replicas: Vec<String>,
    pub tier: Tier,
    /// Vectors, when this node holds the shard.
    pub vectors: Option<u64>,
    /// Lag, when this node holds the shard.
    pub lag: Option<u64>,
    /// Queries per second over the last minute × p99 ms / 10.
    pub hotness: f64,
    pub qps_1m: f64,
    pub p99_ms: f64,
    pub writes_1m: u64,
    pub hot: bool,
    pub cold: bool,
    /// The preferred replica.
    pub node: Option<String>,
    /// Archive tier only (null otherwise): where the shard's snapshot lies, as this node
    /// knows it.
    pub archive: Option<ShardArchive>,
}

/// Where an archived shard's snapshot lies (`GET /cluster`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardArchive {
    /// The object store folder of the snapshot (null when this node does not know it).
    pub location: Option<String>,
    /// Bytes of the snapshot's files.
    pub bytes: Option<u64>,
    /// The log offset the snapshot has applied up to (exclusive).
    pub next_offset: Option<u64>,
    /// The last failure to archive or restore it, if any.
    pub error: Option<String>,
}

/// A member of the cluster as the heartbeats show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub address: String,
    pub alive: bool,
    /// Draining: it keeps serving until no map lists it.
    pub leaving: bool,
    /// Its roles (`router`, `data`, `controller`, `planner`, tier roles `hot`, `warm`,
    /// `cold`, `gpu`), from its heartbeat.
    pub roles: Vec<String>,
}

/// `GET /health`: `ok`, or `failing` with the shards whose consumer has stopped following
/// its partition (503).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `failing`.
    pub status: String,
    /// The failing shards (only with `failing`).
    #[schema(required = false)]
    pub shards: Option<Vec<FailingShard>>,
}

/// A shard held here whose consumer fails (and retries).
#[derive(Debug, Serialize, ToSchema)]
pub struct FailingShard {
    pub collection: String,
    pub partition: u32,
    pub range: RingRange,
    /// Why it fails.
    pub error: String,
}

/// `GET /ready`: whether every shard the maps give this node is open and caught up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    /// Serving shards the maps give this node.
    pub shards: u64,
    pub waiting: Vec<WaitingShard>,
    pub failing: Vec<FailingShard>,
}

/// A shard this node should serve that is not ready yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingShard {
    pub collection: String,
    pub range: RingRange,
    /// `opening` or `catching up`.
    pub state: String,
    /// Records still to apply (only while catching up).
    #[schema(required = false)]
    pub lag: Option<u64>,
}
