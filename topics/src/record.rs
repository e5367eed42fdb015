//! The records that travel through hektor's topics, as plain serde types.
//!
//! These are the domain types; how they are laid out in bytes (a compact versioned binary
//! form for the hot path, JSON for people) is [`crate::codec`]'s job. A record type is tied
//! to the topic it lives in (see [`crate::topic`]):
//!
//! | topic      | value type        | key                 |
//! |------------|-------------------|---------------------|
//! | vectors    | [`VectorRecord`]  | [`vector_key`]: the id, or tenant and id |
//! | intake     | [`VectorRecord`]  | anything            |
//! | events     | [`Event`]         | none                |
//! | plan       | [`PlanChange`]    | the collection      |
//! | nodes      | [`NodeHeartbeat`] | the node id         |
//! | catalog    | [`CatalogEntry`]  | the collection name |
//! | deadletter | raw bytes of the poison record, reason in a header |
//!
//! Records read from the log are checked before they are applied: a collection spec by
//! [`crate::catalog::validate_spec`], a heartbeat by [`NodeHeartbeat::validate`] (its
//! shape and sizes; its time against the reader's clock is the membership's check).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::topic::validate_collection_name;
use crate::{Error, Result};

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

/// A region's closed timestamp for one partition: nothing its nodes append to that
/// partition after this record carries a smaller effective clock (the floor rule makes
/// it so), and every write they acknowledged before it was stamped lies before it. Nodes of
/// a region with mirrors append one per partition they hold every few hundred
/// milliseconds, so other regions' floors of the partition advance with time even while
/// nobody writes: what bounded-staleness and strong reads wait on. It carries no vector;
/// shards apply it as a pass ([`crate::hlc`] floor only). It has no id: its topic key is
/// [`TICK_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorTick {
    pub collection: String,
    /// The partition it closes (a tick has no ring position of its own).
    pub partition: u32,
    pub hlc: Hlc,
    pub origin: String,
}

/// The topic key of every [`VectorTick`]: 0xFE never occurs in UTF-8, so no vector key
/// ([`vector_key`]) equals it, and compaction keeps a partition's latest tick only.
pub const TICK_KEY: &[u8] = &[0xFE, b't', b'i', b'c', b'k'];

/// A record of the vectors (and intake) topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VectorRecord {
    Upsert(VectorUpsert),
    Delete(VectorDelete),
    /// A closed timestamp, see [`VectorTick`]; only nodes write them.
    Tick(VectorTick),
}

impl VectorRecord {
    /// The vector's id (empty for a tick, which has none).
    pub fn id(&self) -> &str {
        match self {
            VectorRecord::Upsert(u) => &u.id,
            VectorRecord::Delete(d) => &d.id,
            VectorRecord::Tick(_) => "",
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            VectorRecord::Upsert(u) => u.tenant.as_deref(),
            VectorRecord::Delete(d) => d.tenant.as_deref(),
            VectorRecord::Tick(_) => None,
        }
    }

    pub fn collection(&self) -> &str {
        match self {
            VectorRecord::Upsert(u) => &u.collection,
            VectorRecord::Delete(d) => &d.collection,
            VectorRecord::Tick(t) => &t.collection,
        }
    }

    pub fn hlc(&self) -> Hlc {
        match self {
            VectorRecord::Upsert(u) => u.hlc,
            VectorRecord::Delete(d) => d.hlc,
            VectorRecord::Tick(t) => t.hlc,
        }
    }

    /// The region that accepted the write (or closed the timestamp).
    pub fn origin(&self) -> &str {
        match self {
            VectorRecord::Upsert(u) => &u.origin,
            VectorRecord::Delete(d) => &d.origin,
            VectorRecord::Tick(t) => &t.origin,
        }
    }

    /// The partition a record must lie in: a vector's by its ring position among
    /// `partitions`, a tick's the one it names.
    pub fn partition(&self, partitions: u32) -> u32 {
        match self {
            VectorRecord::Tick(t) => t.partition,
            _ => crate::ring::partition_of(
                crate::ring::position(self.tenant(), self.id()),
                partitions,
            ),
        }
    }

    /// The key of this record in the vectors topic: [`vector_key`] of its tenant and id,
    /// or [`TICK_KEY`].
    pub fn key(&self) -> Vec<u8> {
        match self {
            VectorRecord::Tick(_) => TICK_KEY.to_vec(),
            _ => vector_key(self.tenant(), self.id()),
        }
    }
}

/// The byte that marks a key with a tenant and separates the tenant from the id. It never
/// occurs in UTF-8, so no id or tenant contains it and no id-only key starts with it.
pub const VECTOR_KEY_TENANT: u8 = 0xFF;

/// The identity of a vector, as bytes: the key of its records in the vectors topic (the
/// key compaction keeps the latest record of) and of its entry in a shard.
///
/// A vector is identified by its tenant and its id, the same pair that places it on the
/// ring ([`crate::ring::position`]), and exactly as that function reads it: an absent
/// tenant is "no tenant", while `Some("")` is a tenant (the ring places it by `H("")`;
/// hektor's write paths refuse an empty tenant, so only a direct producer can write one).
///
/// ```text
/// without a tenant:  UTF-8(id)
/// with a tenant t:   0xFF ++ UTF-8(t) ++ 0xFF ++ UTF-8(id)
/// ```
///
/// Without a tenant the key is the id, as it always was, so topics written before keep
/// their keys. 0xFF is never a byte of UTF-8, whatever the characters (control characters
/// and NUL included, which a tenant may contain), so a key with a tenant never equals an
/// id-only key (those never start with 0xFF) and splits back at its one other 0xFF:
/// the map is injective over every (tenant, id) pair ([`split_vector_key`] inverts it).
pub fn vector_key(tenant: Option<&str>, id: &str) -> Vec<u8> {
    match tenant {
        None => id.as_bytes().to_vec(),
        Some(t) => {
            let mut key = Vec::with_capacity(t.len() + id.len() + 2);
            key.push(VECTOR_KEY_TENANT);
            key.extend_from_slice(t.as_bytes());
            key.push(VECTOR_KEY_TENANT);
            key.extend_from_slice(id.as_bytes());
            key
        }
    }
}

/// The (tenant, id) of a [`vector_key`], or `None` for bytes no `vector_key` returns.
pub fn split_vector_key(key: &[u8]) -> Option<(Option<&str>, &str)> {
    match key.split_first() {
        Some((&VECTOR_KEY_TENANT, rest)) => {
            let at = rest.iter().position(|b| *b == VECTOR_KEY_TENANT)?;
            let tenant = std::str::from_utf8(&rest[..at]).ok()?;
            let id = std::str::from_utf8(&rest[at + 1..]).ok()?;
            Some((Some(tenant), id))
        }
        _ => Some((None, std::str::from_utf8(key).ok()?)),
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
    /// Held by no node's engine: the shard's snapshot lies in object storage (`serve
    /// --archive-url`) and is restored on demand (a search, or a promotion), then caught
    /// up from the log.
    Archive,
}

/// One change to a collection's shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The longest node id a heartbeat may carry, in bytes.
pub const MAX_NODE_ID_LEN: usize = 128;

/// Whether `id` can be a node id: 1 to [`MAX_NODE_ID_LEN`] bytes without spaces or
/// control characters (the rule for heartbeats, leases, readiness reports and decisions).
pub fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}
/// The longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 64;
/// The most roles a heartbeat may list.
pub const MAX_ROLES: usize = 16;
/// The longest role name, in bytes.
pub const MAX_ROLE_LEN: usize = 32;
/// The largest capacity weight a node may declare (a standard node is 1.0); the same
/// bound as placement's `hektor_cluster::node::MAX_WEIGHT`.
pub const MAX_CAPACITY: f64 = 1000.0;
/// The most shards a heartbeat may report (a node holding more reports its largest).
pub const MAX_HELD_SHARDS: usize = 16_384;
/// The longest host name of an address (DNS allows 253 bytes).
const MAX_HOST_LEN: usize = 253;

impl NodeHeartbeat {
    /// Check the shape and sizes of a heartbeat: a node id of 1 to [`MAX_NODE_ID_LEN`]
    /// bytes without control characters or spaces, an address that is `host:port`, a
    /// short region, at most [`MAX_ROLES`] roles of `[a-z0-9_-]`, a finite capacity in
    /// (0, [`MAX_CAPACITY`]], and at most [`MAX_HELD_SHARDS`] well-formed shards. Its time
    /// is not checked here: only a reader knows its own clock.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidHeartbeat {
            node: self.node.chars().take(80).collect(),
            reason,
        };
        if !is_node_id(&self.node) {
            return Err(invalid(format!(
                "a node id is 1 to {MAX_NODE_ID_LEN} bytes without spaces or control characters"
            )));
        }
        if !is_host_port(&self.address) {
            return Err(invalid(format!(
                "address `{}` is not host:port (a host name or IP address, then a port)",
                self.address.chars().take(80).collect::<String>()
            )));
        }
        if self.region.len() > MAX_REGION_LEN || self.region.chars().any(char::is_control) {
            return Err(invalid(format!(
                "a region is at most {MAX_REGION_LEN} bytes without control characters"
            )));
        }
        if self.roles.len() > MAX_ROLES {
            return Err(invalid(format!(
                "{} roles listed, at most {MAX_ROLES} are allowed",
                self.roles.len()
            )));
        }
        let role_ok = |r: &String| {
            (1..=MAX_ROLE_LEN).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if let Some(bad) = self.roles.iter().find(|r| !role_ok(r)) {
            return Err(invalid(format!(
                "role `{}` is not 1 to {MAX_ROLE_LEN} characters of a-z, 0-9, '_' and '-'",
                bad.chars().take(40).collect::<String>()
            )));
        }
        if !(self.capacity.is_finite() && self.capacity > 0.0 && self.capacity <= MAX_CAPACITY) {
            return Err(invalid(format!(
                "capacity must be a number above 0 and at most {MAX_CAPACITY}, got {}",
                self.capacity
            )));
        }
        if self.shards.len() > MAX_HELD_SHARDS {
            return Err(invalid(format!(
                "{} shards reported, at most {MAX_HELD_SHARDS} are allowed",
                self.shards.len()
            )));
        }
        for shard in &self.shards {
            validate_collection_name(&shard.collection)
                .map_err(|err| invalid(format!("a held shard: {err}")))?;
            if shard.range.end.is_some_and(|end| end <= shard.range.start) {
                return Err(invalid(format!(
                    "held shard {:?} of `{}` is an empty range",
                    shard.range, shard.collection
                )));
            }
        }
        Ok(())
    }
}

/// Whether `address` is `host:port`: an IP socket address (`10.0.0.1:7700`,
/// `[::1]:7700`), or a DNS name of letters, digits, '-' and '_' in dot-separated labels
/// followed by a port. Nothing else (no scheme, path, user or query) may come along.
fn is_host_port(address: &str) -> bool {
    if address.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    port_ok && !host.is_empty() && host.len() <= MAX_HOST_LEN && host.split('.').all(label_ok)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// How writes of one id merge: the newest wins whole (`lww`), or the vector does and
    /// the payload merges per field (`crdt`).
    #[serde(default, skip_serializing_if = "MergePolicy::is_default")]
    pub merge: MergePolicy,
    /// How many regions a write waits for unless the write asks otherwise
    /// (`?replication=`).
    #[serde(default, skip_serializing_if = "WriteLevel::is_default")]
    pub write_level: WriteLevel,
}

/// How many regions a write waits for before it is answered.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WriteLevel {
    /// Durable in this region's log.
    #[default]
    Async,
    /// Applied in a majority of all regions (this one counted).
    Quorum,
    /// Applied in every region.
    Sync,
}

impl WriteLevel {
    pub fn is_default(&self) -> bool {
        *self == WriteLevel::Async
    }

    /// How many other regions (of `others`) must have the write.
    pub fn others_needed(self, others: usize) -> usize {
        match self {
            WriteLevel::Async => 0,
            // A majority of the others + 1 regions, this region being one of them.
            WriteLevel::Quorum => others.div_ceil(2),
            WriteLevel::Sync => others,
        }
    }
}

/// How the writes of one vector id merge (in one region, and across regions whatever the
/// order in which they arrive; `hektor_merge` is the reference model).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MergePolicy {
    /// The write with the greatest stamp wins whole: vector, payload, or the delete.
    #[default]
    Lww,
    /// The vector is a last-writer-wins register; the payload is a last-writer-wins map,
    /// merged per top-level field (a field set to `null` is removed, and an older value
    /// cannot bring it back); deletes are tombstones with their own stamp (an
    /// LWW-element set). Payloads must be JSON objects.
    Crdt,
}

impl MergePolicy {
    pub fn is_default(&self) -> bool {
        *self == MergePolicy::Lww
    }
}

/// A collection's placement strategy, as the controller applies it to its shards (the
/// strategies themselves are `hektor_cluster::placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
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
///
/// What a record carries besides the entry (where and when the entry was first made, and
/// the incarnation it keeps) is [`CatalogMeta`], written beside the entry's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CatalogEntry {
    Create(CollectionSpec),
    Drop { name: String },
}

impl CatalogEntry {
    /// The collection the entry is about (the record's key).
    pub fn name(&self) -> &str {
        match self {
            CatalogEntry::Create(spec) => &spec.name,
            CatalogEntry::Drop { name } => name,
        }
    }
}

/// Where a catalog entry sits in the order every region agrees on: its hybrid-clock time,
/// then the name of the region where it was first made. Compared in that order, like a
/// vector write's stamp (`hektor_merge::stamp`), so every region orders two entries alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CatalogStamp {
    pub hlc: Hlc,
    pub origin: String,
}

/// The fields a catalog record carries beside its [`CatalogEntry`] (issue #17, the catalog
/// across regions). Each is optional: records written before them (and records in the
/// binary form, which cannot hold them) decode with none, and readers that predate them
/// ignore them. In JSON they sit beside the entry's own fields:
/// `{"op":"create","name":"docs",...,"origin":"west","hlc":113...,"incarnation":42}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogMeta {
    /// The region where the entry was first made (through a node of that region); a copy
    /// another region adopts keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The hybrid-clock time of the node that first made the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    /// For a create: the incarnation the collection has in the region whose log holds
    /// the record (absent: the record's own offset). Set where a record restates a
    /// collection that exists already, so that the record alone, all compaction may leave
    /// of the name, still names the incarnation its shards live under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
}

impl CatalogMeta {
    /// The entry's stamp, when the record carries both its time and its origin.
    pub fn stamp(&self) -> Option<CatalogStamp> {
        Some(CatalogStamp {
            hlc: self.hlc?,
            origin: self.origin.clone()?,
        })
    }

    /// The meta of an entry with this stamp.
    pub fn stamped(stamp: &CatalogStamp, incarnation: Option<u64>) -> CatalogMeta {
        CatalogMeta {
            origin: Some(stamp.origin.clone()),
            hlc: Some(stamp.hlc),
            incarnation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> NodeHeartbeat {
        NodeHeartbeat {
            node: "node-1".into(),
            address: "10.0.0.1:7700".into(),
            region: "eu-west-1a".into(),
            roles: vec!["router".into(), "data".into(), "controller".into()],
            capacity: 1.0,
            memory_bytes: 0,
            time_ms: 0,
            leaving: false,
            shards: vec![HeldShard {
                collection: "docs".into(),
                range: RingRange::FULL,
                vectors: 10,
                bytes: 100,
            }],
        }
    }

    #[test]
    fn good_heartbeats_pass() {
        let hb = heartbeat();
        assert!(hb.validate().is_ok());
        for address in [
            "[::1]:7700",
            "0.0.0.0:7070",
            "hektor-2.svc.cluster.local:80",
            "h:1",
        ] {
            let hb = NodeHeartbeat {
                address: address.into(),
                ..heartbeat()
            };
            assert!(hb.validate().is_ok(), "{address} refused");
        }
    }

    #[test]
    fn forged_heartbeats_are_refused() {
        let forged: Vec<fn(&mut NodeHeartbeat)> = vec![
            |h| h.node.clear(),
            |h| h.node = "x".repeat(MAX_NODE_ID_LEN + 1),
            |h| h.node = "a b".into(),
            |h| h.node = "a\u{0}".into(),
            |h| h.address = "x".into(),
            |h| h.address = "x:".into(),
            |h| h.address = ":80".into(),
            |h| h.address = "x:99999".into(),
            |h| h.address = "x:+80".into(),
            |h| h.address = "http://x:80".into(),
            |h| h.address = "evil.example/a?b=:80".into(),
            |h| h.address = "user@x:80".into(),
            |h| h.address = format!("{}:80", "a".repeat(300)),
            |h| h.region = "r".repeat(MAX_REGION_LEN + 1),
            |h| h.roles = vec!["data".into(); MAX_ROLES + 1],
            |h| h.roles = vec![String::new()],
            |h| h.roles = vec!["Data".into()],
            |h| h.capacity = f64::NAN,
            |h| h.capacity = f64::INFINITY,
            |h| h.capacity = -1.0,
            |h| h.capacity = 0.0,
            |h| h.capacity = MAX_CAPACITY * 2.0,
            |h| {
                let one = h.shards[0].clone();
                h.shards = vec![one; MAX_HELD_SHARDS + 1];
            },
            |h| h.shards[0].collection = "../etc".into(),
            |h| {
                h.shards[0].range = RingRange {
                    start: 5,
                    end: Some(5),
                }
            },
        ];
        for (i, forge) in forged.iter().enumerate() {
            let mut hb = heartbeat();
            forge(&mut hb);
            let err = hb
                .validate()
                .expect_err(&format!("forgery {i} accepted: {hb:?}"));
            assert!(
                matches!(err, crate::Error::InvalidHeartbeat { .. }),
                "{err}"
            );
        }
    }
}
