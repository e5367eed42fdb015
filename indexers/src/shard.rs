//! A shard: one ring range of one collection on one node, stored in its own LMDB
//! environment (a directory). It is the durable store of that range's vectors **and** of
//! the log offset applied, so a crash (even `kill -9`) never loses or double-applies a
//! write: [`Shard::apply`] writes a batch's ops and the new offset in one transaction.
//!
//! Writes are last-writer-wins by **effective** [`Hlc`]. The log of a partition is the
//! order in which its writes were acknowledged, so a later record must win even when the
//! node that wrote it has a clock behind the earlier writer's: each record's effective
//! hlc is `max(its own hlc, the partition's floor + 1)`, and the floor becomes it. The
//! floor is a function of the partition's log alone (records outside this shard's range
//! advance it too, as [`ShardOp::Pass`]) and is stored with the applied offset, so every
//! replica and every shard of a partition stamps a record alike, and stamps stay close to
//! real time. A write's **stamp** is (effective hlc, origin region); an upsert or delete
//! whose stamp is older than what is stored for its id (a live record's, or a delete's
//! tombstone's) is ignored but still advances the offset; within one log that happens
//! only to exact replays. Tombstones are kept per deleted id, forever for now, so a
//! record merged from another region's log with an older stamp cannot resurrect it.
//!
//! **Regions.** Besides its own partition a shard applies other regions' partitions as
//! MirrorMaker 2 copied them ([`Source::Mirror`], [`Shard::apply_from`]), each with its own
//! applied offset and clock floor (`meta` `source/<region>/...`) and the floor's
//! remembered records (`sources`), so a redelivered copy keeps its original stamp
//! ([`hektor_merge::SourceFloor`]). Stamps are then the same in every region, and the
//! greatest wins everywhere: the regions converge (`tests/regions.rs`).
//!
//! Vectors are searchable as soon as `apply` commits. A search is the engine's search over
//! the built index (minus items deleted or replaced since the build, which sit in the
//! `stale` set) merged with an exact scan of the pending tail (items written since the
//! build). [`Shard::build_index`] folds the tail into the index. The hot graph folds from
//! a read snapshot outside the write transaction (its new nodes carry the next build
//! epoch, invisible to searches), then a short write transaction publishes the build;
//! items written again while it folded stay pending and become stale, so an outdated copy
//! is never returned. Other engines build inside one write transaction (LMDB has one
//! writer: `apply` waits). Searches never wait: readers keep their MVCC snapshot.
//!
//! Item ids: engines need `u32` ids, so each live vector id maps to an item id; ids are
//! handed out from a counter and never reused (a delete and re-insert takes a new one),
//! so a shard accepts 2^32 inserts of new ids over its lifetime.
//!
//! The range filter of [`Shard::search`] (a tenant's ring range) becomes a candidate
//! bitmap from the `ring` index, applied inside the engine's search (arroy's candidates),
//! not after it, so a small tenant still gets its true nearest neighbours.
//!
//! **Tiers.** [`Shard::set_engine`] moves a serving shard to another engine (hot = hnsw,
//! warm = an int8 HNSW graph on disk, cold = binary-quantized arroy, or arroy / exact): it builds the
//! new index from every stored vector in one write transaction (so `apply` and
//! `build_index` wait for it; searches do not: they keep using the old engine on their
//! snapshot), clears the old engine's data and persists the new kind in that same
//! transaction, then swaps the engine. A search pairs its engine with its LMDB snapshot
//! (both taken under the engine lock, and the swap commits under it), so it always reads
//! an engine together with the snapshot that engine was built for. The stored engine kind
//! wins over [`ShardConfig::engine`] on reopen: the configured engine only picks the engine
//! of a *new* shard, so a host restarting with its default engine reopens a shard that was
//! moved to another tier on that tier (no error), and the caller may call `set_engine`.
//!
//! This module does not read the log, route records, or serve HTTP.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heed::{PutFlags, RoTxn, RwTxn};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{CollectionSpec, Distance, MergePolicy, RingRange};
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::engine::arroy::{ArroyEngine, ArroyParams};
use crate::engine::cold::{ColdEngine, ColdParams};
use crate::engine::exact::ExactEngine;
use crate::engine::hnsw::{HnswEngine, HnswParams, Opened};
use crate::engine::warm::{WarmEngine, WarmParams};
use crate::engine::{self, Changes, EngineKind, IndexEngine, TopK};
use crate::error::{Error, Result};
use crate::fields::{self, FieldStamps};
use crate::metric::{self, PreparedQuery, SearchOptions};
use crate::store::{
    decode_tombstone, encode_tombstone, vector_store_key, Record, Store, MAX_ID_BYTES, META_CONFIG,
    META_FORMAT, META_HLC_FLOOR, META_NEXT_ITEM, META_NEXT_OFFSET, STORE_FORMAT,
};
use hektor_merge::{Admit, SourceFloor, VersionVector};

mod exact_view;
mod records;

pub use exact_view::{ExactMatrix, ExactView};
use records::{RecordCache, Staged};

/// Default LMDB map size: the most a shard may grow to (address space only; the file
/// grows as data is written).
pub const DEFAULT_MAP_SIZE: usize = 64 << 30;

/// A checkpoint of the hot graph is due once this many items changed since the last
/// (or an eighth of the shard, if more): a crash replays at most about that many inserts.
pub const CHECKPOINT_MIN_ITEMS: u64 = 20_000;
/// An idle shard saves whatever is unsaved once its last checkpoint is this old.
pub const CHECKPOINT_IDLE_AFTER: Duration = Duration::from_secs(20);
/// How often a hot shard lets go of the pages of its LMDB map at most (see
/// [`Shard::checkpoint`]).
const RELEASE_PAGES_EVERY: Duration = Duration::from_secs(1);

/// The LMDB environment's file in a shard directory and in a snapshot.
pub const SNAPSHOT_DATA_FILE: &str = "data.mdb";

/// What [`Shard::checkpoint`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointReport {
    /// The build epoch the saved index is at.
    pub epoch: u32,
    /// Bytes of the file written.
    pub bytes: u64,
    /// Changes since the previous save.
    pub items: u64,
    pub duration: Duration,
}

/// The largest k one shard search answers.
pub const MAX_SEARCH_K: usize = 100_000;

/// How a shard is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    pub dimension: usize,
    pub distance: Distance,
    /// The engine of a new shard. A shard that exists keeps the engine stored in it (the
    /// one it was created with or last moved to by [`Shard::set_engine`]);
    /// [`Shard::config`] reports the engine it was opened with.
    pub engine: EngineKind,
    /// Used when `engine` is [`EngineKind::Arroy`].
    pub arroy: ArroyParams,
    /// Used when `engine` is [`EngineKind::Hnsw`].
    pub hnsw: HnswParams,
    /// Used when `engine` is [`EngineKind::Warm`].
    pub warm: WarmParams,
    /// Used when `engine` is [`EngineKind::Cold`].
    pub cold: ColdParams,
    /// Upper bound on the size of the LMDB file, in bytes.
    pub map_size: usize,
    /// How writes of one id merge (the collection's policy; [`crate::fields`]).
    pub merge: MergePolicy,
}

impl ShardConfig {
    /// A configuration with default engine parameters and map size.
    pub fn new(dimension: usize, distance: Distance, engine: EngineKind) -> ShardConfig {
        ShardConfig {
            dimension,
            distance,
            engine,
            arroy: ArroyParams::default(),
            hnsw: HnswParams::default(),
            warm: WarmParams::default(),
            cold: ColdParams::default(),
            map_size: DEFAULT_MAP_SIZE,
            merge: MergePolicy::Lww,
        }
    }

    /// The configuration of a shard of `spec` (its dimension, distance and merge policy)
    /// on `engine`.
    pub fn of_collection(spec: &CollectionSpec, engine: EngineKind) -> ShardConfig {
        ShardConfig {
            merge: spec.merge,
            ..ShardConfig::new(spec.dimension as usize, spec.distance, engine)
        }
    }
}

/// What is persisted of the configuration; reopening with another dimension or distance is
/// refused, another engine is overridden by the stored one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredConfig {
    dimension: usize,
    distance: Distance,
    engine: EngineKind,
}

/// One change to a shard, as read from the log. A vector is identified by its tenant and
/// id together (`hektor_topics::record::vector_key`): two tenants' vectors with the same
/// id are two vectors, even in one shard.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardOp {
    Upsert {
        id: String,
        tenant: Option<String>,
        ring: u64,
        vector: Vec<f32>,
        payload: Option<serde_json::Value>,
        hlc: Hlc,
    },
    Delete {
        id: String,
        tenant: Option<String>,
        hlc: Hlc,
    },
    /// A record that carries no change for this shard (e.g. a poison record sent to the
    /// dead-letter topic): it only advances the applied offset.
    Skip,
    /// A record of this partition for another shard (outside this range): it advances the
    /// applied offset and the partition's clock floor by its `hlc`.
    Pass { hlc: Hlc },
}

/// The effective hlc of a record with `own` stamp after a partition floor of `floor`.
pub fn effective_hlc(own: Hlc, floor: u64) -> Hlc {
    Hlc(own.0.max(floor.saturating_add(1)))
}

/// The clock of the partition a batch comes from, while [`Shard::apply_from`] runs.
enum PartitionClock<'m> {
    /// This region's partition: the floor rule alone.
    Local { floor: u64 },
    /// A mirrored partition: the floor rule over its records minus redelivered copies,
    /// and the records stamped in this batch (to remember them in the store).
    Mirror {
        floor: &'m mut SourceFloor,
        stamped: Vec<(Hlc, u128)>,
    },
}

impl PartitionClock<'_> {
    /// The effective hlc of the next record (own stamp `own`, value digest `digest`), or
    /// `None` for a redelivered copy.
    fn stamp(&mut self, own: Hlc, digest: u128) -> Option<Hlc> {
        match self {
            PartitionClock::Local { floor } => {
                let hlc = effective_hlc(own, *floor);
                *floor = hlc.0;
                Some(hlc)
            }
            PartitionClock::Mirror { floor, stamped } => match floor.admit(digest, own) {
                Admit::New(hlc) => {
                    stamped.push((hlc, digest));
                    Some(hlc)
                }
                Admit::Duplicate(_) => None,
            },
        }
    }
}

/// A search result. `score` is higher when closer: the cosine similarity for
/// [`Distance::Cosine`], minus the euclidean distance for [`Distance::Euclidean`], the
/// dot product for [`Distance::Dot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub payload: Option<serde_json::Value>,
}

/// A search result whose payload is the stored JSON text, unparsed (see [`Found`]).
#[derive(Debug, Clone)]
pub struct RawHit {
    pub id: String,
    pub score: f32,
    pub payload: Option<Box<RawValue>>,
}

/// A shard's answer to a search before any record is read: the hits' items and scores,
/// best first, with the LMDB read snapshot they were found in ([`Shard::search_found`]).
/// A router merging several shards reads the records ([`Found::raw_hit`]) only of the
/// hits that survive its merge, from this same snapshot, so a hit's id and payload are
/// those of the vector that was scored whatever was written since. Hold it briefly: an
/// open snapshot keeps LMDB from reusing the pages written after it.
pub struct Found<'s> {
    shard: &'s Shard,
    /// `None` when nothing was searched (k = 0, or a filter matching nothing).
    txn: Option<RoTxn<'s, heed::WithoutTls>>,
    hits: Vec<(u32, f32)>,
    /// Whether the hot graph answered, so hits not in `tail` may take their records from
    /// the shard's [`RecordCache`].
    hot: bool,
    /// Hits from the pending tail (scanned exactly, not from the graph).
    tail: Vec<u32>,
}

impl std::fmt::Debug for Found<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("shard", &self.shard.path())
            .field("hits", &self.hits)
            .finish()
    }
}

impl Found<'_> {
    /// Hits found.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// The score of hit `i` (best first). Panics when `i` is out of range.
    pub fn score(&self, i: usize) -> f32 {
        self.hits[i].1
    }

    /// Hit `i` with its id and, with `payload`, its payload as the stored JSON text
    /// (checked to be JSON, not parsed into a value), read from the snapshot it was found
    /// in. Panics when `i` is out of range.
    pub fn raw_hit(&self, i: usize, payload: bool) -> Result<RawHit> {
        let (item, score) = self.hits[i];
        let s = &self.shard.store;
        let txn = self
            .txn
            .as_ref()
            .ok_or_else(|| s.corrupt("a search without a snapshot found hits"))?;
        if self.hot && !self.tail.contains(&item) {
            if let Some((id, payload)) = self.shard.cached.get(item, txn.id(), payload) {
                return Ok(RawHit { id, score, payload });
            }
        }
        read_raw_hit(s, txn, item, score, payload)
    }

    /// Every hit with its id and payload as stored JSON text.
    pub fn into_raw_hits(self) -> Result<Vec<RawHit>> {
        (0..self.hits.len())
            .map(|i| self.raw_hit(i, true))
            .collect()
    }

    /// Every hit with its full record, the payload parsed ([`Shard::search_with`]).
    pub fn into_hits(self) -> Result<Vec<Hit>> {
        let s = &self.shard.store;
        let mut hits = Vec::with_capacity(self.hits.len());
        let Some(txn) = &self.txn else {
            return Ok(hits);
        };
        for &(item, score) in &self.hits {
            let record = s
                .record(txn, item)?
                .ok_or_else(|| s.corrupt(format!("search returned item {item} without record")))?;
            hits.push(Hit {
                id: record.id,
                score,
                payload: record.payload,
            });
        }
        Ok(hits)
    }
}

/// The record of `item`, a hit with `score` of a search over the snapshot `txn`: its id
/// and, with `payload`, its payload as the stored JSON text (checked to be JSON, not
/// parsed). Shared by the graph searches ([`Found`]) and the exact batch view.
pub(crate) fn read_raw_hit(
    s: &Store,
    txn: &RoTxn<'_, heed::WithoutTls>,
    item: u32,
    score: f32,
    payload: bool,
) -> Result<RawHit> {
    let bytes = s
        .record_bytes(txn, item)?
        .ok_or_else(|| s.corrupt(format!("search returned item {item} without record")))?;
    let (id, payload) = id_and_payload(s, item, bytes, payload)?;
    Ok(RawHit {
        id: id.to_owned(),
        score,
        payload,
    })
}

/// The id of the record `bytes` of `item` and, with `payload`, its payload as the stored
/// JSON text (checked to be JSON, not parsed). Shared by hits read from LMDB and the hot
/// shard's records cache.
pub(crate) fn id_and_payload<'b>(
    s: &Store,
    item: u32,
    bytes: &'b [u8],
    payload: bool,
) -> Result<(&'b str, Option<Box<RawValue>>)> {
    let (id, raw) = Record::decode_id_payload(bytes)
        .ok_or_else(|| s.corrupt(format!("record of item {item} does not decode")))?;
    let payload = if payload && !raw.is_empty() {
        Some(serde_json::from_slice::<Box<RawValue>>(raw).map_err(|e| {
            s.corrupt(format!(
                "record of item {item} has a payload that is not JSON: {e}"
            ))
        })?)
    } else {
        None
    };
    Ok((id, payload))
}

/// A stored vector with everything kept about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVector {
    pub id: String,
    pub tenant: Option<String>,
    pub vector: Vec<f32>,
    pub payload: Option<serde_json::Value>,
    pub ring: u64,
    pub hlc: Hlc,
    /// The region whose log the winning write came from (empty: stored before origins).
    pub origin: String,
    /// The winning write met a concurrent write of another region (see
    /// [`ApplyReport::conflicts`]).
    pub concurrent: bool,
}

/// Where a batch of ops comes from: this region's own log, or another region's log as
/// MirrorMaker 2 copied it (`<region>.hektor.C.vectors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// This region's partition: the shard's applied offset and clock floor.
    Local,
    /// Another region's partition, mirrored: its own applied offset and its own clock
    /// floor ([`SourceFloor`], which recognises MirrorMaker's redelivered copies by the
    /// digest of their bytes).
    Mirror { region: &'a str },
}

/// What a shard needs to know of an op's record beyond the op: the region that accepted
/// the write (the record's `origin`, the same bytes in every region, so the stamp
/// (effective hlc, origin) is the same everywhere) and the digest of the record's value
/// bytes ([`hektor_merge::digest`]; used for mirrored sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    pub origin: String,
    pub digest: u128,
    /// What the writer's region had applied of the others ([`hektor_merge::SEEN_HEADER`]);
    /// `None`: unknown, and no conflict is counted for the write.
    pub seen: Option<VersionVector>,
}

/// Whether a write from `origin` that had seen `seen` is concurrent with the stored write
/// (`stored_hlc`, `stored_origin`) of another region: it did not know it.
fn concurrent_with(
    origin: &str,
    seen: Option<&VersionVector>,
    stored_hlc: Hlc,
    stored_origin: &str,
) -> bool {
    match seen {
        Some(seen) => {
            !origin.is_empty()
                && !stored_origin.is_empty()
                && origin != stored_origin
                && seen.get(stored_origin) < stored_hlc
        }
        None => false,
    }
}

/// The meta key of a mirrored source's next offset.
fn source_offset_key(region: &str) -> String {
    format!("source/{region}/next_offset")
}

/// The meta key of a mirrored source's clock floor.
fn source_floor_key(region: &str) -> String {
    format!("source/{region}/floor")
}

/// The key of a remembered record of a mirrored source in the `sources` database.
fn source_record_key(region: &str, hlc: Hlc) -> Vec<u8> {
    let mut key = Vec::with_capacity(region.len() + 9);
    key.extend_from_slice(region.as_bytes());
    key.push(0);
    key.extend_from_slice(&hlc.0.to_be_bytes());
    key
}

/// An op of a batch that was refused for bad input (it still advances the offset; the
/// caller may send it to the dead-letter topic).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedOp {
    pub offset: u64,
    pub id: String,
    pub reason: String,
}

/// What [`Shard::apply`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyReport {
    /// Upserts written (new ids and replacements).
    pub upserted: usize,
    /// Deletes written (including tombstones for ids never seen).
    pub deleted: usize,
    /// Ops skipped because their offset was already applied (replays).
    pub replayed: usize,
    /// Ops ignored because a newer write (by stamp: hlc, then origin) for their id is
    /// stored.
    pub stale: usize,
    /// Ops of a mirrored source recognised as redelivered copies and skipped.
    pub duplicates: usize,
    /// Writes that met a write of another region they had not seen (concurrent writes,
    /// resolved by the stamps); counted where the writer said what it had seen.
    pub conflicts: usize,
    /// Ops refused for bad input.
    pub rejected: Vec<RejectedOp>,
    /// `next_offset` after the batch.
    pub next_offset: u64,
}

/// What [`Shard::build_index`] did (or [`Shard::set_engine`]: then `indexed` is every item
/// the new engine indexed and `removed` what the old engine's index held).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// Items (re)indexed.
    pub indexed: u64,
    /// Items removed from the index (deleted, or replaced and re-added).
    pub removed: u64,
    /// Items in the index after the build.
    pub index_len: u64,
    pub duration: Duration,
}

/// A snapshot of a shard's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub len: u64,
    pub pending: u64,
    pub tombstones: u64,
    pub bytes_on_disk: u64,
    pub next_offset: u64,
    pub engine: EngineKind,
    pub dimension: usize,
    pub distance: Distance,
}

/// Hand the heap's free pages back to the system after a build: the fold's candidate
/// lists and the batches applied beside it are freed, but glibc's allocator kept them
/// (at 100k vectors the heap stood at 3.3x the raw vectors after indexing, 1.4x after a
/// restart with the same graph). `malloc_trim` releases free memory in every arena, not
/// only at the top of the heap. Best effort; a no-op off glibc.
fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bound glibc's malloc arenas to one per core (at least 2), instead of its default of
/// eight per core. Call once at process start, before threads allocate. Each thread that
/// allocates may get an arena of its own, and an arena keeps the pages of what was freed
/// in it, fragmented; a hot shard's parallel build links on fresh helper threads, whose
/// arenas held ~25-40 MiB after a 62k-vector load that no `malloc_trim` returned (server
/// RSS 278-283 vs 236-246 MiB bounded, search CPU unchanged). A no-op off glibc.
pub fn limit_heap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = cores.clamp(2, 64) as libc::c_int;
        // SAFETY: mallopt only changes the allocator's tuning; it is called before the
        // process starts its threads (see above), and a failure leaves the default.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// A shard's bytes on disk: its LMDB environment by database, and the other files in
/// its directory (the hot graph and its journal) by name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardFootprint {
    pub store: crate::store::Footprint,
    pub files: std::collections::BTreeMap<String, u64>,
}

/// A shard. `Send + Sync`: search from many threads while one applies and one builds.
#[derive(Debug)]
pub struct Shard {
    store: Store,
    /// How the hot graph came to memory when the shard opened (`None`: another engine).
    opened: Option<Opened>,
    /// When the in-memory index was last saved ([`Shard::checkpoint`]).
    last_checkpoint: Mutex<Instant>,
    /// When the map's pages were last let go of ([`Shard::release_mapped_pages`]).
    last_release: Mutex<Instant>,
    /// The current engine. Swapped by [`Shard::set_engine`] while holding the write lock
    /// below and, for the commit, this lock's write side.
    engine: RwLock<Arc<dyn IndexEngine>>,
    config: ShardConfig,
    /// Serialises the writers in this process (LMDB would too, but this keeps the cached
    /// counters below in commit order).
    write_lock: Mutex<()>,
    /// One index build, tier switch or checkpoint at a time. Taken before `write_lock`.
    build_lock: parking_lot::Mutex<()>,
    next_offset: AtomicU64,
    len: AtomicU64,
    pending: AtomicU64,
    tombstones: AtomicU64,
    /// The clock floors of the mirrored sources applied so far, loaded on first use
    /// (dropped when an apply fails, so they are reloaded from what was committed).
    mirrors: Mutex<std::collections::HashMap<String, SourceFloor>>,
    /// The hot graph's items' ids and payloads ([`RecordCache`]); empty under other
    /// engines.
    cached: RecordCache,
}

impl Shard {
    /// Open the shard in `dir`, creating it when new. Reopening with another dimension or
    /// distance than it was created with is an [`Error::ConfigMismatch`]. Reopening with
    /// another engine is not an error: the shard opens with its stored engine (see
    /// [`ShardConfig::engine`]); compare [`Shard::engine`] and call [`Shard::set_engine`]
    /// to move it.
    pub fn open(dir: &Path, mut config: ShardConfig) -> Result<Shard> {
        if config.dimension == 0 {
            return Err(Error::InvalidConfig("dimension must be at least 1".into()));
        }
        if config.arroy.search_k_factor == 0 || config.arroy.n_trees == Some(0) {
            return Err(Error::InvalidConfig(
                "arroy n_trees and search_k_factor must be at least 1".into(),
            ));
        }
        let store = Store::open(dir, config.map_size, config.dimension)?;
        let wanted = StoredConfig {
            dimension: config.dimension,
            distance: config.distance,
            engine: config.engine,
        };
        let mut wtxn = store.env.write_txn().map_err(|e| store.storage(e))?;
        match store
            .meta
            .get(&wtxn, META_CONFIG)
            .map_err(|e| store.storage(e))?
        {
            Some(bytes) => {
                let stored: StoredConfig = serde_json::from_slice(bytes).map_err(|e| {
                    store.corrupt(format!("stored configuration does not decode: {e}"))
                })?;
                check_config(dir, &stored, &wanted)?;
                let stamped = check_format(&store, &mut wtxn)?;
                if stored.engine != config.engine {
                    tracing::info!(
                        path = %dir.display(),
                        stored = %stored.engine,
                        configured = %config.engine,
                        "opening the shard with its stored engine"
                    );
                    config.engine = stored.engine;
                }
                if stamped {
                    wtxn.commit().map_err(|e| store.storage(e))?;
                } else {
                    wtxn.abort();
                }
            }
            None => {
                let bytes =
                    serde_json::to_vec(&wanted).map_err(|e| Error::InvalidConfig(e.to_string()))?;
                store
                    .meta
                    .put(&mut wtxn, META_CONFIG, &bytes)
                    .map_err(|e| store.storage(e))?;
                store
                    .meta
                    .put(&mut wtxn, META_FORMAT, &STORE_FORMAT.to_be_bytes())
                    .map_err(|e| store.storage(e))?;
                wtxn.commit().map_err(|e| store.storage(e))?;
            }
        }
        let (engine, opened) = make_engine(config.engine, &store, &config)?;
        // A graph rebuilt now has no file yet: the first idle moment saves it.
        let last_checkpoint = match opened {
            Some(Opened::Rebuilt { .. }) => Instant::now()
                .checked_sub(CHECKPOINT_IDLE_AFTER)
                .unwrap_or_else(Instant::now),
            _ => Instant::now(),
        };
        let shard = Shard {
            store,
            opened,
            last_checkpoint: Mutex::new(last_checkpoint),
            last_release: Mutex::new(Instant::now()),
            engine: RwLock::new(engine),
            config,
            write_lock: Mutex::new(()),
            build_lock: parking_lot::Mutex::new(()),
            next_offset: AtomicU64::new(0),
            len: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
            mirrors: Mutex::new(std::collections::HashMap::new()),
            cached: RecordCache::default(),
        };
        let rtxn = shard.read_txn()?;
        shard.refresh_counters(&rtxn)?;
        if shard.current_engine().folds_outside() {
            shard.cached.fill(&shard.store, &rtxn)?;
            // The fill read every record: its faults mapped the vector pages around them.
            shard.store.release_pages();
        }
        drop(rtxn);
        Ok(shard)
    }

    /// The directory holding this shard.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The log offset to resume reading from (0 when new).
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Live vectors.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The median ring position of the live vectors (where a split by size cuts), or
    /// `None` for an empty shard. Walks half the ring index: call it off the hot path.
    pub fn ring_median(&self) -> Result<Option<u64>> {
        let s = &self.store;
        let st = |e| s.storage(e);
        let txn = self.read_txn()?;
        let n = s.ring.len(&txn).map_err(st)?;
        if n == 0 {
            return Ok(None);
        }
        let Some(entry) = s.ring.iter(&txn).map_err(st)?.nth((n / 2) as usize) else {
            return Ok(None);
        };
        let (key, ()) = entry.map_err(st)?;
        if key.len() != 12 {
            return Err(s.corrupt("ring index key is not 12 bytes"));
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&key[..8]);
        Ok(Some(u64::from_be_bytes(b)))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vectors written since the last build (searched by exact scan until then).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// The current engine (the stored one; changed by [`Shard::set_engine`]).
    pub fn engine(&self) -> EngineKind {
        self.current_engine().kind()
    }

    fn current_engine(&self) -> Arc<dyn IndexEngine> {
        self.engine.read().clone()
    }

    /// Set the engine's per-search effort for later searches (the hnsw and warm engines'
    /// `ef_search`, the cold engine's rescored candidates; at least `k` is used); takes
    /// effect at once, from any thread, until the engine is switched. Returns `false` when
    /// the engine has no such knob (arroy, exact).
    pub fn set_search_effort(&self, effort: usize) -> bool {
        self.current_engine().set_search_effort(effort)
    }

    /// The engine's current per-search effort, when it has one.
    pub fn search_effort(&self) -> Option<usize> {
        self.current_engine().search_effort()
    }

    /// Bytes of LMDB pages the current engine's index uses (0 for exact, and for hnsw,
    /// whose graph is memory).
    pub fn index_bytes(&self) -> Result<u64> {
        let (engine, txn) = self.engine_and_snapshot()?;
        engine::engine_data_bytes(engine.kind(), &txn, &self.store)
    }

    /// The current engine and a read snapshot it was built for. Taken together under the
    /// engine lock; [`Shard::set_engine`] commits and swaps under its write side.
    fn engine_and_snapshot(&self) -> Result<(Arc<dyn IndexEngine>, RoTxn<'_, heed::WithoutTls>)> {
        let slot = self.engine.read();
        let txn = self.read_txn()?;
        Ok((slot.clone(), txn))
    }

    /// Bytes the shard's LMDB environment takes on disk (a file stat).
    pub fn bytes_on_disk(&self) -> u64 {
        self.store.env.real_disk_size().unwrap_or(0)
    }

    /// Where the shard's bytes on disk are, database by database (see
    /// [`crate::store::Footprint`]), plus the saved graph's files.
    pub fn footprint(&self) -> Result<ShardFootprint> {
        let store = self.store.footprint()?;
        let mut files = std::collections::BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.store.path()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".mdb") {
                    continue;
                }
                if let Ok(meta) = entry.metadata() {
                    if meta.is_file() {
                        files.insert(name, meta.len());
                    }
                }
            }
        }
        Ok(ShardFootprint { store, files })
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            len: self.len(),
            pending: self.pending(),
            tombstones: self.tombstones.load(Ordering::Acquire),
            bytes_on_disk: self.store.env.real_disk_size().unwrap_or(0),
            next_offset: self.next_offset(),
            engine: self.engine(),
            dimension: self.config.dimension,
            distance: self.config.distance,
        }
    }

    fn read_txn(&self) -> Result<RoTxn<'_, heed::WithoutTls>> {
        self.store.env.read_txn().map_err(|e| self.store.storage(e))
    }

    fn refresh_counters(&self, txn: &RoTxn) -> Result<()> {
        let s = &self.store;
        let st = |e| s.storage(e);
        self.next_offset
            .store(s.meta_u64(txn, META_NEXT_OFFSET)?, Ordering::Release);
        self.len
            .store(s.records.len(txn).map_err(st)?, Ordering::Release);
        self.pending
            .store(s.pending.len(txn).map_err(st)?, Ordering::Release);
        self.tombstones
            .store(s.tombstones.len(txn).map_err(st)?, Ordering::Release);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock left no partial LMDB write (the txn aborted).
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Apply a batch of ops read from the log, with their offsets, in one transaction.
    /// Ops whose offset is below [`Shard::next_offset`] (or not above the previous op of
    /// the batch) are replays and skipped; afterwards `next_offset` is one past the last
    /// offset. Bad ops (wrong dimension, non-finite values, empty or oversized id, a zero
    /// vector under cosine) are reported in [`ApplyReport::rejected`], not applied.
    /// The writes are stamped with an empty origin; see [`Shard::apply_from`].
    pub fn apply(&self, ops: &[(u64, ShardOp)]) -> Result<ApplyReport> {
        self.apply_from(Source::Local, ops, &[])
    }

    /// [`Shard::apply`] for a batch from `source`, with each op's [`Provenance`] (empty:
    /// every origin empty; allowed for this region's log only). Each write is stamped
    /// (effective hlc, origin). From this region's log the shard's offset and floor
    /// advance; from a mirrored source, the source's own offset and floor do, and the
    /// digests let its floor recognise redelivered copies, which are counted in
    /// [`ApplyReport::duplicates`] and skipped. Either way a write replaces what is stored
    /// for its id only when its stamp is greater, so every region ends with the same
    /// winner whatever the order in which the sources arrive.
    pub fn apply_from(
        &self,
        source: Source<'_>,
        ops: &[(u64, ShardOp)],
        provenance: &[Provenance],
    ) -> Result<ApplyReport> {
        let needed = matches!(source, Source::Mirror { .. }) || !provenance.is_empty();
        if needed && provenance.len() != ops.len() {
            return Err(Error::InvalidConfig(format!(
                "a batch with provenance needs one per op: {} ops, {} given",
                ops.len(),
                provenance.len()
            )));
        }
        let result = self.apply_inner(source, ops, provenance);
        if let (Err(_), Source::Mirror { region }) = (&result, source) {
            // The floor in memory may be ahead of what was committed: reload it.
            self.mirror_floors().remove(region);
        }
        result
    }

    fn mirror_floors(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SourceFloor>> {
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mirrored source's floor as committed: its floor and remembered records.
    fn load_mirror_floor(&self, txn: &RoTxn, region: &str) -> Result<SourceFloor> {
        let s = &self.store;
        let floor = Hlc(s.meta_u64(txn, &source_floor_key(region))?);
        let lo = source_record_key(region, Hlc(0));
        let mut hi = region.as_bytes().to_vec();
        hi.push(1);
        let range = (
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
        );
        let mut recent = Vec::new();
        for entry in s.sources.range(txn, &range).map_err(|e| s.storage(e))? {
            let (key, value) = entry.map_err(|e| s.storage(e))?;
            let hlc = key
                .len()
                .checked_sub(8)
                .and_then(|at| key[at..].try_into().ok())
                .map(|b: [u8; 8]| Hlc(u64::from_be_bytes(b)));
            let digest = <[u8; 16]>::try_from(value).ok().map(u128::from_le_bytes);
            match (hlc, digest) {
                (Some(h), Some(d)) => recent.push((h, d)),
                _ => {
                    return Err(s.corrupt(format!(
                        "a remembered record of source `{region}` does not decode"
                    )))
                }
            }
        }
        SourceFloor::restore(
            floor,
            recent,
            hektor_merge::source::DEFAULT_HORIZON_MS,
            hektor_merge::source::DEFAULT_MAX_RECENT,
        )
        .map_err(|e| s.corrupt(format!("source `{region}`: {e}")))
    }

    /// The next offset of a mirrored source to apply (0 before its first batch).
    pub fn source_next_offset(&self, region: &str) -> Result<u64> {
        let txn = self.read_txn()?;
        self.store.meta_u64(&txn, &source_offset_key(region))
    }

    /// The clock floor of a mirrored source: the effective hlc of its newest record
    /// applied (zero before its first).
    pub fn source_floor(&self, region: &str) -> Result<Hlc> {
        let txn = self.read_txn()?;
        Ok(Hlc(self.store.meta_u64(&txn, &source_floor_key(region))?))
    }

    /// The clock floor of this region's own partition as committed: the effective hlc of
    /// the newest record applied (zero before the first).
    pub fn hlc_floor(&self) -> Result<Hlc> {
        let txn = self.read_txn()?;
        Ok(Hlc(self.store.meta_u64(&txn, META_HLC_FLOOR)?))
    }

    fn apply_inner(
        &self,
        source: Source<'_>,
        ops: &[(u64, ShardOp)],
        provenance: &[Provenance],
    ) -> Result<ApplyReport> {
        let _guard = self.lock();
        // Fixed while the write lock is held (`set_engine` takes it too).
        let engine = self.current_engine();
        let engine = engine.as_ref();
        let s = &self.store;
        let st = |e| s.storage(e);
        let (offset_key, floor_key) = match source {
            Source::Local => (META_NEXT_OFFSET.to_owned(), META_HLC_FLOOR.to_owned()),
            Source::Mirror { region } => (source_offset_key(region), source_floor_key(region)),
        };
        let mut wtxn = s.env.write_txn().map_err(st)?;
        let mut next = s.meta_u64(&wtxn, &offset_key)?;
        let mut report = ApplyReport {
            next_offset: next,
            ..ApplyReport::default()
        };
        if ops.is_empty() {
            wtxn.abort();
            return Ok(report);
        }
        let mut floors = self.mirror_floors();
        let mut clock = match source {
            Source::Local => PartitionClock::Local {
                floor: s.meta_u64(&wtxn, &floor_key)?,
            },
            Source::Mirror { region } => {
                if !floors.contains_key(region) {
                    let loaded = self.load_mirror_floor(&wtxn, region)?;
                    floors.insert(region.to_owned(), loaded);
                }
                PartitionClock::Mirror {
                    floor: floors.get_mut(region).expect("inserted above"),
                    stamped: Vec::new(),
                }
            }
        };
        let mut next_item = s.meta_u64(&wtxn, META_NEXT_ITEM)?;
        let start = next;
        for (i, (offset, op)) in ops.iter().enumerate() {
            if *offset < next {
                report.replayed += 1;
                continue;
            }
            next = offset.saturating_add(1);
            let (origin, digest, seen) = provenance.get(i).map_or(("", 0, None), |p| {
                (p.origin.as_str(), p.digest, p.seen.as_ref())
            });
            match op {
                ShardOp::Upsert {
                    id,
                    tenant,
                    ring,
                    vector,
                    payload,
                    hlc,
                } => {
                    if let Some(reason) = self.invalid_upsert(id, vector) {
                        report.rejected.push(RejectedOp {
                            offset: *offset,
                            id: id.clone(),
                            reason,
                        });
                        continue;
                    }
                    let Some(hlc) = clock.stamp(*hlc, digest) else {
                        report.duplicates += 1;
                        continue;
                    };
                    let mut record = Record {
                        ring: *ring,
                        hlc,
                        id: id.clone(),
                        tenant: tenant.clone(),
                        origin: origin.to_owned(),
                        concurrent: false,
                        payload: payload.clone(),
                        stamps: None,
                    };
                    let applied = self.upsert(
                        engine,
                        &mut wtxn,
                        &mut record,
                        vector,
                        seen,
                        &mut next_item,
                        &mut report.conflicts,
                    )?;
                    if applied {
                        report.upserted += 1;
                    } else {
                        report.stale += 1;
                    }
                }
                ShardOp::Delete { id, tenant, hlc } => {
                    if id.is_empty() || id.len() > MAX_ID_BYTES {
                        report.rejected.push(RejectedOp {
                            offset: *offset,
                            id: id.clone(),
                            reason: format!("id must be 1 to {MAX_ID_BYTES} bytes"),
                        });
                        continue;
                    }
                    let Some(hlc) = clock.stamp(*hlc, digest) else {
                        report.duplicates += 1;
                        continue;
                    };
                    let applied = self.delete(
                        engine,
                        &mut wtxn,
                        (tenant.as_deref(), id),
                        (hlc, origin),
                        seen,
                        &mut report.conflicts,
                    )?;
                    if applied {
                        report.deleted += 1;
                    } else {
                        report.stale += 1;
                    }
                }
                ShardOp::Skip => {}
                ShardOp::Pass { hlc } => {
                    if clock.stamp(*hlc, digest).is_none() {
                        report.duplicates += 1;
                    }
                }
            }
        }
        if next != start {
            s.meta
                .put(&mut wtxn, &offset_key, &next.to_be_bytes())
                .map_err(st)?;
            s.meta
                .put(&mut wtxn, META_NEXT_ITEM, &next_item.to_be_bytes())
                .map_err(st)?;
            match &clock {
                PartitionClock::Local { floor } => s
                    .meta
                    .put(&mut wtxn, &floor_key, &floor.to_be_bytes())
                    .map_err(st)?,
                PartitionClock::Mirror { floor, stamped } => {
                    let Source::Mirror { region } = source else {
                        unreachable!("a mirror clock belongs to a mirrored source")
                    };
                    s.meta
                        .put(&mut wtxn, &floor_key, &floor.floor().0.to_be_bytes())
                        .map_err(st)?;
                    for (hlc, digest) in stamped {
                        s.sources
                            .put(
                                &mut wtxn,
                                &source_record_key(region, *hlc),
                                &digest.to_le_bytes(),
                            )
                            .map_err(st)?;
                    }
                    // Forget what the floor forgot: everything older than its oldest.
                    let lo = source_record_key(region, Hlc(0));
                    let hi = match floor.recent().next() {
                        Some((oldest, _)) => source_record_key(region, oldest),
                        None => {
                            let mut hi = region.as_bytes().to_vec();
                            hi.push(1);
                            hi
                        }
                    };
                    let range = (
                        Bound::Included(lo.as_slice()),
                        Bound::Excluded(hi.as_slice()),
                    );
                    s.sources.delete_range(&mut wtxn, &range).map_err(st)?;
                }
            }
            let len = s.records.len(&wtxn).map_err(st)?;
            let pending = s.pending.len(&wtxn).map_err(st)?;
            let tombstones = s.tombstones.len(&wtxn).map_err(st)?;
            wtxn.commit().map_err(st)?;
            self.len.store(len, Ordering::Release);
            self.pending.store(pending, Ordering::Release);
            self.tombstones.store(tombstones, Ordering::Release);
            if source == Source::Local {
                self.next_offset.store(next, Ordering::Release);
            }
        } else {
            wtxn.abort();
        }
        report.next_offset = next;
        Ok(report)
    }

    fn invalid_upsert(&self, id: &str, vector: &[f32]) -> Option<String> {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Some(format!("id must be 1 to {MAX_ID_BYTES} bytes"));
        }
        if vector.len() != self.config.dimension {
            return Some(format!(
                "vector has {} dimensions, the collection has {}",
                vector.len(),
                self.config.dimension
            ));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Some("vector has a NaN or infinite component".into());
        }
        if self.config.distance == Distance::Cosine && metric::norm(vector) == 0.0 {
            return Some("a zero vector has no direction under cosine distance".into());
        }
        None
    }

    /// Write one upsert unless a newer write (by hlc) is stored for its (tenant, id).
    /// Returns whether it was applied.
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &self,
        engine: &dyn IndexEngine,
        wtxn: &mut RwTxn,
        record: &mut Record,
        vector: &[f32],
        seen: Option<&VersionVector>,
        next_item: &mut u64,
        conflicts: &mut usize,
    ) -> Result<bool> {
        let s = &self.store;
        let st = |e| s.storage(e);
        let key = vector_store_key(record.tenant.as_deref(), &record.id);
        let existing = s.ids.get(wtxn, &key).map_err(st)?;
        let fresh = existing.is_none();
        let item = match existing {
            Some(item) => {
                let old = s.record(wtxn, item)?.ok_or_else(|| {
                    s.corrupt(format!("id `{}` maps to missing item {item}", record.id))
                })?;
                let concurrent = concurrent_with(&record.origin, seen, old.hlc, &old.origin);
                *conflicts += usize::from(concurrent);
                let older = (record.hlc, record.origin.as_str()) < (old.hlc, old.origin.as_str());
                if self.config.merge == MergePolicy::Crdt {
                    // The payload merges per field whichever write is newer.
                    let mut stamps = old.stamps.clone().unwrap_or_else(|| {
                        FieldStamps::of_whole(old.payload.as_ref(), &(old.hlc, old.origin.clone()))
                    });
                    let mut values = fields::values(old.payload.as_ref(), &stamps);
                    let stamp = (record.hlc, record.origin.clone());
                    let joined = stamps.deleted.as_ref().is_none_or(|d| &stamp > d)
                        && stamps.join_upsert(&mut values, &stamp, record.payload.as_ref());
                    if older {
                        if joined || (concurrent && !old.concurrent) {
                            // The vector stays; the fields (and the conflict mark) change.
                            let mut old = old;
                            old.concurrent |= concurrent;
                            old.payload = fields::render(&values);
                            old.stamps = Some(stamps);
                            self.cached.forget(item);
                            s.records.put(wtxn, &item, &old.encode()).map_err(st)?;
                        }
                        return Ok(joined);
                    }
                    record.payload = fields::render(&values);
                    record.stamps = Some(stamps);
                } else if older {
                    if concurrent && !old.concurrent {
                        // The stored write won a conflict: say so on it.
                        let mut old = old;
                        old.concurrent = true;
                        self.cached.forget(item);
                        s.records.put(wtxn, &item, &old.encode()).map_err(st)?;
                    }
                    return Ok(false);
                }
                record.concurrent = concurrent;
                if old.ring != record.ring {
                    s.ring
                        .delete(wtxn, &Store::ring_key(old.ring, item))
                        .map_err(st)?;
                }
                if engine.needs_build() && engine.is_indexed(wtxn, item)? {
                    s.stale.put(wtxn, &item, &()).map_err(st)?;
                }
                item
            }
            None => {
                if let Some(t) = s.tombstones.get(wtxn, &key).map_err(st)? {
                    let (hlc, origin) = decode_tombstone(t).ok_or_else(|| {
                        s.corrupt(format!("tombstone of `{}` does not decode", record.id))
                    })?;
                    let concurrent = concurrent_with(&record.origin, seen, hlc, origin);
                    *conflicts += usize::from(concurrent);
                    if (record.hlc, record.origin.as_str()) < (hlc, origin) {
                        return Ok(false);
                    }
                    record.concurrent = concurrent;
                    if self.config.merge == MergePolicy::Crdt {
                        // Revived: an older write's fields must not come back with it.
                        record.stamps = Some(FieldStamps {
                            deleted: Some((hlc, origin.to_owned())),
                            ..FieldStamps::default()
                        });
                    }
                    s.tombstones.delete(wtxn, &key).map_err(st)?;
                }
                if self.config.merge == MergePolicy::Crdt {
                    let mut stamps = record.stamps.take().unwrap_or_default();
                    let mut values = Default::default();
                    let stamp = (record.hlc, record.origin.clone());
                    stamps.join_upsert(&mut values, &stamp, record.payload.as_ref());
                    record.payload = fields::render(&values);
                    record.stamps = Some(stamps);
                }
                let item = u32::try_from(*next_item).map_err(|_| Error::ItemIdsExhausted {
                    path: s.path().to_path_buf(),
                })?;
                *next_item += 1;
                s.ids.put(wtxn, &key, &item).map_err(st)?;
                item
            }
        };
        if fresh {
            // A fresh item id is above every stored one (ids are never reused), so the
            // record and the vector are appended: LMDB then keeps each leaf page full
            // instead of splitting it, which for ~1.5 KB vectors meant one vector per
            // 4 KiB page (2.7x the raw bytes; 1.35x appended).
            s.records
                .put_with_flags(wtxn, PutFlags::APPEND, &item, &record.encode())
                .map_err(st)?;
            s.vectors
                .put_with_flags(wtxn, PutFlags::APPEND, &item, &Store::encode_vector(vector))
                .map_err(st)?;
        } else {
            self.cached.forget(item);
            s.records.put(wtxn, &item, &record.encode()).map_err(st)?;
            s.vectors
                .put(wtxn, &item, &Store::encode_vector(vector))
                .map_err(st)?;
        }
        s.ring
            .put(wtxn, &Store::ring_key(record.ring, item), &())
            .map_err(st)?;
        if engine.needs_build() {
            s.pending.put(wtxn, &item, &()).map_err(st)?;
        }
        Ok(true)
    }

    /// Delete the vector (`tenant`, `id`) unless a newer write is stored; leaves a
    /// tombstone. Returns whether it was applied.
    fn delete(
        &self,
        engine: &dyn IndexEngine,
        wtxn: &mut RwTxn,
        (tenant, id): (Option<&str>, &str),
        (hlc, origin): (Hlc, &str),
        seen: Option<&VersionVector>,
        conflicts: &mut usize,
    ) -> Result<bool> {
        let s = &self.store;
        let st = |e| s.storage(e);
        let key = vector_store_key(tenant, id);
        match s.ids.get(wtxn, &key).map_err(st)? {
            Some(item) => {
                let bytes =
                    s.records.get(wtxn, &item).map_err(st)?.ok_or_else(|| {
                        s.corrupt(format!("id `{id}` maps to missing item {item}"))
                    })?;
                let (old_hlc, old_origin) = Record::decode_stamp(bytes)
                    .ok_or_else(|| s.corrupt(format!("record of item {item} does not decode")))?;
                let concurrent = concurrent_with(origin, seen, old_hlc, old_origin);
                *conflicts += usize::from(concurrent);
                let old = s
                    .record(wtxn, item)?
                    .ok_or_else(|| s.corrupt(format!("item {item} vanished")))?;
                if (hlc, origin) < (old_hlc, old_origin) {
                    let mut old = old;
                    let mut changed = concurrent && !old.concurrent;
                    old.concurrent |= concurrent;
                    let mut joined = false;
                    if self.config.merge == MergePolicy::Crdt {
                        // The vector stays; the fields older than the delete go.
                        let mut stamps = old.stamps.take().unwrap_or_else(|| {
                            FieldStamps::of_whole(
                                old.payload.as_ref(),
                                &(old.hlc, old.origin.clone()),
                            )
                        });
                        let mut values = fields::values(old.payload.as_ref(), &stamps);
                        joined = stamps.join_delete(&mut values, &(hlc, origin.to_owned()));
                        old.payload = fields::render(&values);
                        old.stamps = Some(stamps);
                        changed |= joined;
                    }
                    if changed {
                        self.cached.forget(item);
                        s.records.put(wtxn, &item, &old.encode()).map_err(st)?;
                    }
                    return Ok(joined);
                }
                s.ids.delete(wtxn, &key).map_err(st)?;
                self.cached.forget(item);
                s.records.delete(wtxn, &item).map_err(st)?;
                s.vectors.delete(wtxn, &item).map_err(st)?;
                s.ring
                    .delete(wtxn, &Store::ring_key(old.ring, item))
                    .map_err(st)?;
                s.pending.delete(wtxn, &item).map_err(st)?;
                if engine.needs_build() && engine.is_indexed(wtxn, item)? {
                    s.stale.put(wtxn, &item, &()).map_err(st)?;
                }
            }
            None => {
                if let Some(t) = s.tombstones.get(wtxn, &key).map_err(st)? {
                    let (old_hlc, old_origin) = decode_tombstone(t)
                        .ok_or_else(|| s.corrupt(format!("tombstone of `{id}` does not decode")))?;
                    *conflicts += usize::from(concurrent_with(origin, seen, old_hlc, old_origin));
                    if (hlc, origin) < (old_hlc, old_origin) {
                        return Ok(false);
                    }
                }
            }
        }
        s.tombstones
            .put(wtxn, &key, &encode_tombstone(hlc, origin))
            .map_err(st)?;
        Ok(true)
    }

    /// The stored vector (`tenant`, `id`), if live: another tenant's vector with the same
    /// id is another vector.
    pub fn get(&self, tenant: Option<&str>, id: &str) -> Result<Option<StoredVector>> {
        let s = &self.store;
        let txn = self.read_txn()?;
        let key = vector_store_key(tenant, id);
        let Some(item) = s.ids.get(&txn, &key).map_err(|e| s.storage(e))? else {
            return Ok(None);
        };
        let record = s
            .record(&txn, item)?
            .ok_or_else(|| s.corrupt(format!("id `{id}` maps to missing item {item}")))?;
        let mut vector = vec![0.0f32; self.config.dimension];
        if s.vector_into(&txn, item, &mut vector)?.is_none() {
            return Err(s.corrupt(format!("item {item} has no vector")));
        }
        Ok(Some(StoredVector {
            id: record.id,
            tenant: record.tenant,
            vector,
            payload: record.payload,
            ring: record.ring,
            hlc: record.hlc,
            origin: record.origin,
            concurrent: record.concurrent,
        }))
    }

    /// The `k` nearest live vectors to `query`, best first. With `range`, only vectors
    /// whose ring position lies in it (a tenant's range) are considered, inside the
    /// engine's search.
    pub fn search(&self, query: &[f32], k: usize, range: Option<RingRange>) -> Result<Vec<Hit>> {
        self.search_with(query, k, range, SearchOptions::default())
    }

    /// [`Shard::search`] with this search's own [`SearchOptions`]: an effort overriding
    /// the configured one ([`Shard::set_search_effort`]; engines without the knob ignore
    /// it), and whether the warm tier rescores.
    pub fn search_with(
        &self,
        query: &[f32],
        k: usize,
        range: Option<RingRange>,
        options: SearchOptions,
    ) -> Result<Vec<Hit>> {
        self.search_found(query, k, range, options)?.into_hits()
    }

    /// [`Shard::search_with`] without reading any record yet: the hits' items and scores
    /// with the snapshot to read their records from ([`Found`]).
    pub fn search_found(
        &self,
        query: &[f32],
        k: usize,
        range: Option<RingRange>,
        options: SearchOptions,
    ) -> Result<Found<'_>> {
        let nothing = || Found {
            shard: self,
            txn: None,
            hits: Vec::new(),
            hot: false,
            tail: Vec::new(),
        };
        if query.len() != self.config.dimension {
            return Err(Error::DimensionMismatch {
                expected: self.config.dimension,
                got: query.len(),
            });
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidQuery(
                "the query has a NaN or infinite component".into(),
            ));
        }
        if k == 0 {
            return Ok(nothing());
        }
        // The doors (HTTP, internal calls) check k against their own, smaller bound; this
        // one keeps any caller from sizing buffers by an absurd k.
        if k > MAX_SEARCH_K {
            return Err(Error::InvalidQuery(format!(
                "k = {k} is larger than a shard answers ({MAX_SEARCH_K} at most)"
            )));
        }
        let s = &self.store;
        let st = |e| s.storage(e);
        let (engine, txn) = self.engine_and_snapshot()?;
        let prepared = PreparedQuery::new(self.config.distance, query).with_options(options);
        let candidates = match range {
            Some(r) => self.range_items(&txn, r)?,
            None => None,
        };
        if candidates.as_ref().is_some_and(|c| c.is_empty()) {
            return Ok(nothing());
        }
        let mut exclude = RoaringBitmap::new();
        for entry in s.stale.iter(&txn).map_err(st)? {
            exclude.insert(entry.map_err(st)?.0);
        }
        let mut top = TopK::new(k);
        for (item, score) in engine.search(&txn, s, &prepared, k, candidates.as_ref(), &exclude)? {
            top.push(item, score);
        }
        // The pending tail, exactly.
        let mut buf = vec![0.0f32; self.config.dimension];
        let mut tail = Vec::new();
        for entry in s.pending.iter(&txn).map_err(st)? {
            let item = entry.map_err(st)?.0;
            if candidates.as_ref().is_some_and(|c| !c.contains(item)) {
                continue;
            }
            if let Some(norm) = s.vector_into(&txn, item, &mut buf)? {
                top.push(item, prepared.score(&buf, norm));
                tail.push(item);
            }
        }
        let hits = top.into_sorted();
        tail.retain(|item| hits.iter().any(|(hit, _)| hit == item));
        Ok(Found {
            shard: self,
            txn: Some(txn),
            hits,
            hot: engine.folds_outside(),
            tail,
        })
    }

    /// Items whose ring position is in `range`; `None` when that is every item.
    fn range_items(&self, txn: &RoTxn, range: RingRange) -> Result<Option<RoaringBitmap>> {
        let s = &self.store;
        let st = |e| s.storage(e);
        let first = s.ring.first(txn).map_err(st)?;
        let last = s.ring.last(txn).map_err(st)?;
        let (Some((first, _)), Some((last, _))) = (first, last) else {
            return Ok(Some(RoaringBitmap::new())); // empty shard
        };
        let pos = |key: &[u8]| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key[..8]);
            u64::from_be_bytes(b)
        };
        if first.len() == 12
            && last.len() == 12
            && range.contains(pos(first))
            && range.contains(pos(last))
        {
            return Ok(None);
        }
        let start = Store::ring_key(range.start, 0);
        let mut items = RoaringBitmap::new();
        let end_key = range.end.map(|end| Store::ring_key(end, 0));
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
            Bound::Included(&start[..]),
            match &end_key {
                Some(end) => Bound::Excluded(&end[..]),
                None => Bound::Unbounded,
            },
        );
        let iter = s.ring.range(txn, &bounds).map_err(st)?;
        for entry in iter {
            let (key, ()) = entry.map_err(st)?;
            if key.len() != 12 {
                return Err(s.corrupt("ring index key is not 12 bytes"));
            }
            items.insert(u32::from_be_bytes([key[8], key[9], key[10], key[11]]));
        }
        Ok(Some(items))
    }

    /// Fold the pending tail (and the removals since the last build) into the engine's
    /// index. For an engine that folds outside the write transaction (the hot graph), the
    /// fold reads a snapshot while `apply` goes on, and a short write transaction then
    /// publishes it: an item written again meanwhile stays pending (and stale, so the
    /// outdated copy just folded is never returned). Other engines build inside one write
    /// transaction, and `apply` waits for it. Searches never wait.
    pub fn build_index(&self) -> Result<BuildReport> {
        let _build = self.build_lock.lock();
        let engine = self.current_engine();
        if !engine.folds_outside() {
            return self.build_inside(engine);
        }
        let started = Instant::now();
        let s = &self.store;
        let st = |e| s.storage(e);
        let rtxn = self.read_txn()?;
        let mut changes = Changes::default();
        for entry in s.pending.iter(&rtxn).map_err(st)? {
            changes.upserted.insert(entry.map_err(st)?.0);
        }
        for entry in s.stale.iter(&rtxn).map_err(st)? {
            changes.stale.insert(entry.map_err(st)?.0);
        }
        if changes.upserted.is_empty() && changes.stale.is_empty() {
            return Ok(BuildReport {
                indexed: 0,
                removed: 0,
                index_len: engine.indexed_len(&rtxn, s)?,
                duration: started.elapsed(),
            });
        }
        // What each item was when folded: its record's hlc (none: deleted).
        let folded = &changes.upserted | &changes.stale;
        let mut seen = Vec::with_capacity(folded.len() as usize);
        for item in folded.iter() {
            seen.push(self.record_hlc(&rtxn, item)?);
        }
        // From here until the commit, the engine holds a build LMDB does not know: a
        // failure or a panic reloads it from LMDB (and its file).
        let mut reload = ReloadOnFailure {
            shard: self,
            armed: true,
        };
        let epoch = engine.fold_outside(&rtxn, s, &changes)?;
        drop(rtxn);
        let _guard = self.lock();
        let mut wtxn = s.env.write_txn().map_err(st)?;
        // The records of the nodes this commit makes visible, and the items it removes.
        let mut staged = Staged::default();
        let mut gone = Vec::new();
        for (item, then) in folded.iter().zip(seen) {
            if self.record_hlc(&wtxn, item)? == then {
                s.pending.delete(&mut wtxn, &item).map_err(st)?;
                s.stale.delete(&mut wtxn, &item).map_err(st)?;
                if then.is_some() && changes.upserted.contains(item) {
                    staged.read(s, &wtxn, item)?;
                } else {
                    gone.push(item);
                }
            } else {
                // Written again while folding: the folded copy is outdated.
                s.stale.put(&mut wtxn, &item, &()).map_err(st)?;
            }
        }
        engine.commit_fold(&mut wtxn, s, &changes, epoch)?;
        let pending = s.pending.len(&wtxn).map_err(st)?;
        let index_len = engine.indexed_len(&wtxn, s)?;
        let committed = wtxn.id();
        wtxn.commit().map_err(st)?;
        reload.armed = false;
        self.cached.publish(committed, staged, gone.into_iter());
        self.pending.store(pending, Ordering::Release);
        // The fold read the new vectors through the map; the graph holds them now.
        s.release_pages();
        release_heap();
        Ok(BuildReport {
            indexed: changes.upserted.len(),
            removed: changes.stale.len(),
            index_len,
            duration: started.elapsed(),
        })
    }

    /// The hlc of item `item`'s record in `txn` (`None`: no record, it was deleted).
    fn record_hlc(&self, txn: &RoTxn, item: u32) -> Result<Option<Hlc>> {
        let s = &self.store;
        match s.records.get(txn, &item).map_err(|e| s.storage(e))? {
            None => Ok(None),
            Some(bytes) => Record::decode_hlc(bytes)
                .map(Some)
                .ok_or_else(|| s.corrupt(format!("record of item {item} does not decode"))),
        }
    }

    /// [`Shard::build_index`] for engines that build inside the write transaction.
    fn build_inside(&self, engine: Arc<dyn IndexEngine>) -> Result<BuildReport> {
        let _guard = self.lock();
        let started = Instant::now();
        let s = &self.store;
        let st = |e| s.storage(e);
        let mut wtxn = s.env.write_txn().map_err(st)?;
        let mut changes = Changes::default();
        for entry in s.pending.iter(&wtxn).map_err(st)? {
            changes.upserted.insert(entry.map_err(st)?.0);
        }
        for entry in s.stale.iter(&wtxn).map_err(st)? {
            changes.stale.insert(entry.map_err(st)?.0);
        }
        let nothing_to_do = changes.upserted.is_empty() && changes.stale.is_empty();
        if !nothing_to_do {
            engine.build(&mut wtxn, s, &changes)?;
        }
        s.pending.clear(&mut wtxn).map_err(st)?;
        s.stale.clear(&mut wtxn).map_err(st)?;
        let index_len = engine.indexed_len(&wtxn, s)?;
        wtxn.commit().map_err(st)?;
        self.pending.store(0, Ordering::Release);
        Ok(BuildReport {
            indexed: changes.upserted.len(),
            removed: changes.stale.len(),
            index_len,
            duration: started.elapsed(),
        })
    }

    /// How the hot graph came to memory when the shard opened: loaded from its file (and
    /// how many builds were replayed) or rebuilt (and why). `None` for other engines.
    pub fn opened(&self) -> Option<&Opened> {
        self.opened.as_ref()
    }

    /// Whether [`Shard::build_index`] folds beside `apply` (the hot graph) rather than
    /// stalling it for the whole build.
    pub fn builds_beside_applies(&self) -> bool {
        self.current_engine().folds_outside()
    }

    /// Heap bytes of the hot graph's records held in memory ([`RecordCache`]; 0 under
    /// other engines).
    pub fn record_cache_bytes(&self) -> u64 {
        self.cached.bytes()
    }

    /// Items folded into the engine's in-memory index (the hot graph) since it was last
    /// saved: what a crash would make the next open replay from the journal.
    pub fn unsaved(&self) -> u64 {
        self.current_engine().unsaved()
    }

    /// For a shard serving from memory (the hot graph), let go of the map's pages at most
    /// every [`RELEASE_PAGES_EVERY`] (see [`Store::release_pages`]). Searches read only
    /// the hits' records, a few MiB, but each read fault maps the 16 pages around it that
    /// the page cache holds (the kernel's fault-around; `MADV_RANDOM` does not stop it),
    /// mostly vectors the graph already has in memory: 1,000 searches left ~100 MiB of a
    /// 100k-vector node's shard files mapped. Called from checkpoints, which the host runs
    /// after each build and whenever a caught-up shard's consumer finds nothing new.
    fn release_mapped_pages(&self) {
        if !self.current_engine().folds_outside() {
            return;
        }
        let Ok(mut last) = self.last_release.lock() else {
            return;
        };
        if last.elapsed() >= RELEASE_PAGES_EVERY {
            self.store.release_pages();
            *last = Instant::now();
        }
    }

    /// Save the engine's in-memory index (the hot graph) so that the next open loads it
    /// instead of rebuilding, when it is due: once the unsaved changes reach
    /// [`CHECKPOINT_MIN_ITEMS`] or an eighth of the shard, or with `idle` once anything is
    /// unsaved and the last save is [`CHECKPOINT_IDLE_AFTER`] old. `force`: whenever
    /// anything is unsaved. Holds the write lock while it writes (applies wait; searches
    /// do not). Returns what it saved, if anything.
    pub fn checkpoint(&self, force: bool, idle: bool) -> Result<Option<CheckpointReport>> {
        self.release_mapped_pages();
        let unsaved = self.unsaved();
        let due = unsaved > 0
            && (force
                || unsaved >= CHECKPOINT_MIN_ITEMS.max(self.len() / 8)
                || (idle
                    && self
                        .last_checkpoint
                        .lock()
                        .map(|t| t.elapsed() >= CHECKPOINT_IDLE_AFTER)
                        .unwrap_or(true)));
        if !due {
            return Ok(None);
        }
        // No build runs while the graph is written (it is then exactly the committed
        // build's); applies go on.
        let _build = self.build_lock.lock();
        let started = Instant::now();
        let engine = self.current_engine();
        let s = &self.store;
        let rtxn = self.read_txn()?;
        let saved = engine.save(&rtxn, s)?;
        drop(rtxn);
        if let Ok(mut last) = self.last_checkpoint.lock() {
            *last = Instant::now();
        }
        let Some((epoch, bytes)) = saved else {
            return Ok(None);
        };
        let _guard = self.lock();
        let mut wtxn = s.env.write_txn().map_err(|e| s.storage(e))?;
        engine.after_save(&mut wtxn, s, epoch)?;
        wtxn.commit().map_err(|e| s.storage(e))?;
        Ok(Some(CheckpointReport {
            epoch,
            bytes,
            items: unsaved,
            duration: started.elapsed(),
        }))
    }

    /// Write a consistent copy of this shard's files into the new directory `out`, for
    /// another node to open instead of replaying its partition (a move by snapshot; see
    /// [`crate::snapshot`]): the hot graph is saved first, then, with builds, tier switches
    /// and checkpoints held off, the graph file is linked (or copied) and the LMDB
    /// environment copied, compacted, at one read transaction. The copy is at least as new
    /// as the graph, and the graph's journal in the copy covers every build since the
    /// save, so opening the copy loads the graph and replays what it lacks, exactly as a
    /// restart does. Applies and searches go on meanwhile (a copy does not block them).
    /// Blocking: run it on a blocking thread.
    pub fn snapshot_into(&self, out: &Path) -> Result<Vec<String>> {
        self.checkpoint(true, false)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(out).map_err(io(out))?;
        let _build = self.build_lock.lock();
        let mut files = Vec::new();
        let graph = crate::engine::hnsw::graph_path(self.path());
        if graph.exists() {
            let to = out.join(crate::engine::hnsw::GRAPH_FILE);
            // A save replaces the file by rename, so a hard link keeps this version.
            if std::fs::hard_link(&graph, &to).is_err() {
                std::fs::copy(&graph, &to).map_err(io(&to))?;
            }
            files.push(crate::engine::hnsw::GRAPH_FILE.to_string());
        }
        let data = out.join(SNAPSHOT_DATA_FILE);
        let mut file = std::fs::File::create(&data).map_err(io(&data))?;
        self.store
            .env
            .copy_to_file(&mut file, heed::CompactionOption::Enabled)
            .map_err(|e| self.store.storage(e))?;
        file.sync_all().map_err(io(&data))?;
        files.push(SNAPSHOT_DATA_FILE.to_string());
        Ok(files)
    }

    /// Remove every vector whose ring position lies outside `range` (a shard opened from
    /// a snapshot of a wider one: one half of a split), with its id and pending mark; in
    /// the built index the removed items become stale, and the next build drops them.
    /// Tombstones of ids outside the range go too, except hashed ones (their position
    /// cannot be recomputed; they only keep an old write from reviving an id this range
    /// never receives). Returns how many vectors were removed. The applied offset stays:
    /// the records outside the range are ones this shard's consumer skips anyway.
    pub fn retain_range(&self, range: RingRange) -> Result<u64> {
        let _build = self.build_lock.lock();
        let _guard = self.lock();
        let engine = self.current_engine();
        let s = &self.store;
        let st = |e| s.storage(e);
        let mut wtxn = s.env.write_txn().map_err(st)?;
        let mut outside = Vec::new();
        for entry in s.ring.iter(&wtxn).map_err(st)? {
            let (key, ()) = entry.map_err(st)?;
            if key.len() != 12 {
                return Err(s.corrupt("ring index key is not 12 bytes"));
            }
            let position = u64::from_be_bytes(key[..8].try_into().expect("12-byte key"));
            if !range.contains(position) {
                outside.push((
                    key.to_vec(),
                    u32::from_be_bytes([key[8], key[9], key[10], key[11]]),
                ));
            }
        }
        for (ring_key, item) in &outside {
            let record = s
                .record(&wtxn, *item)?
                .ok_or_else(|| s.corrupt(format!("ring index names missing item {item}")))?;
            let key = vector_store_key(record.tenant.as_deref(), &record.id);
            s.ids.delete(&mut wtxn, &key).map_err(st)?;
            self.cached.forget(*item);
            s.records.delete(&mut wtxn, item).map_err(st)?;
            s.vectors.delete(&mut wtxn, item).map_err(st)?;
            s.ring.delete(&mut wtxn, ring_key).map_err(st)?;
            s.pending.delete(&mut wtxn, item).map_err(st)?;
            if engine.needs_build() && engine.is_indexed(&wtxn, *item)? {
                s.stale.put(&mut wtxn, item, &()).map_err(st)?;
            }
        }
        let mut dead_tombstones = Vec::new();
        for entry in s.tombstones.iter(&wtxn).map_err(st)? {
            let (key, _) = entry.map_err(st)?;
            if let Some((tenant, id)) = hektor_topics::record::split_vector_key(key) {
                if key.first() != Some(&crate::store::HASHED_KEY)
                    && !range.contains(hektor_topics::ring::position(tenant, id))
                {
                    dead_tombstones.push(key.to_vec());
                }
            }
        }
        for key in &dead_tombstones {
            s.tombstones.delete(&mut wtxn, key).map_err(st)?;
        }
        wtxn.commit().map_err(st)?;
        let rtxn = self.read_txn()?;
        self.refresh_counters(&rtxn)?;
        Ok(outside.len() as u64)
    }

    /// Move the shard to engine `kind` (a tier change) while it serves. Builds the new
    /// engine's index from every stored vector (indexed and pending), clears the old
    /// engine's data and stores `kind` as the shard's engine, all in one write
    /// transaction, then swaps the engine. Blocking: `apply` and `build_index` wait until
    /// it is done (LMDB has one writer; the caller runs this on a blocking thread).
    /// Searches do not wait: until the swap they are answered by the old engine on the
    /// old snapshot, afterwards by the new one; the swap itself holds searches for the
    /// commit only. A failure leaves the shard on its old engine, unchanged. Switching to
    /// the current engine is a plain [`Shard::build_index`]. The new engine starts at its
    /// configured search effort.
    pub fn set_engine(&self, kind: EngineKind) -> Result<BuildReport> {
        let build = self.build_lock.lock();
        let old = self.current_engine();
        if old.kind() == kind {
            drop(build);
            return self.build_index();
        }
        let _guard = self.lock();
        let started = Instant::now();
        let s = &self.store;
        let st = |e| s.storage(e);
        // The hnsw engine builds its graph from a read snapshot here: nothing is written
        // meanwhile (the write lock is held), so that snapshot is the transaction's start.
        let (new, _) = make_engine(kind, s, &self.config)?;
        let mut wtxn = s.env.write_txn().map_err(st)?;
        let removed = old.indexed_len(&wtxn, s)?;
        let mut pending = RoaringBitmap::new();
        for entry in s.pending.iter(&wtxn).map_err(st)? {
            pending.insert(entry.map_err(st)?.0);
        }
        let mut stale = RoaringBitmap::new();
        for entry in s.stale.iter(&wtxn).map_err(st)? {
            stale.insert(entry.map_err(st)?.0);
        }
        let changes = if kind == EngineKind::Hnsw {
            // The graph already holds every non-pending vector; fold in the tail.
            Changes {
                upserted: pending,
                stale,
            }
        } else {
            Changes {
                upserted: s.vector_items(&wtxn)?,
                stale: RoaringBitmap::new(),
            }
        };
        engine::clear_engine_data(old.kind(), &mut wtxn, s)?;
        engine::clear_engine_data(kind, &mut wtxn, s)?;
        new.build(&mut wtxn, s, &changes)?;
        let stored = StoredConfig {
            dimension: self.config.dimension,
            distance: self.config.distance,
            engine: kind,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        s.meta.put(&mut wtxn, META_CONFIG, &bytes).map_err(st)?;
        s.pending.clear(&mut wtxn).map_err(st)?;
        s.stale.clear(&mut wtxn).map_err(st)?;
        let index_len = new.indexed_len(&wtxn, s)?;
        let hot = new.folds_outside();
        {
            let mut slot = self.engine.write();
            self.cached.clear();
            wtxn.commit().map_err(st)?;
            *slot = new;
        }
        if hot {
            // Still under the write lock: nothing is written before the fill's snapshot.
            let rtxn = self.read_txn()?;
            self.cached.fill(s, &rtxn)?;
            s.release_pages();
        }
        self.pending.store(0, Ordering::Release);
        tracing::info!(path = %s.path().display(), from = %old.kind(), to = %kind,
            index_len, took_s = started.elapsed().as_secs_f64(), "shard switched engine");
        Ok(BuildReport {
            indexed: index_len,
            removed,
            index_len,
            duration: started.elapsed(),
        })
    }
}

/// Armed while an engine holds a build that LMDB has not committed: dropped armed (an
/// error or a panic on the way), it reloads the engine from LMDB, so that the index never
/// disagrees with the store.
struct ReloadOnFailure<'a> {
    shard: &'a Shard,
    armed: bool,
}

impl Drop for ReloadOnFailure<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shard = self.shard;
        let kind = shard.current_engine().kind();
        match make_engine(kind, &shard.store, &shard.config) {
            Ok((engine, _)) => *shard.engine.write() = engine,
            Err(err) => tracing::error!(%err, path = %shard.path().display(),
                "reloading the index after a failed build failed; searches may miss items until the shard reopens"),
        }
    }
}

/// The engine `kind` over `store`, with `config`'s parameters. The hnsw engine is built
/// in memory from the store's indexed vectors (everything not pending) now.
fn make_engine(
    kind: EngineKind,
    store: &Store,
    config: &ShardConfig,
) -> Result<(Arc<dyn IndexEngine>, Option<Opened>)> {
    Ok(match kind {
        EngineKind::Arroy => (
            Arc::new(ArroyEngine::new(store, config.distance, config.arroy)),
            None,
        ),
        EngineKind::Exact => (Arc::new(ExactEngine), None),
        EngineKind::Hnsw => {
            let started = Instant::now();
            let (engine, opened) = HnswEngine::open(store, config.distance, config.hnsw)?;
            let secs = started.elapsed().as_secs_f64();
            let path = store.path().display();
            match &opened {
                Opened::Loaded { replayed_builds } => tracing::info!(%path, secs,
                    replayed_builds, "hot graph loaded from its file"),
                Opened::Rebuilt { why } => tracing::info!(%path, secs, %why,
                    "hot graph built from the stored vectors"),
            }
            (Arc::new(engine), Some(opened))
        }
        EngineKind::Warm => (
            Arc::new(WarmEngine::new(store, config.distance, config.warm)?),
            None,
        ),
        EngineKind::Cold => (
            Arc::new(ColdEngine::new(store, config.distance, config.cold)?),
            None,
        ),
    })
}

/// Check the store format of a shard that exists (see `store`'s documentation): format 2
/// opens; format 1 (no `format` key) holding no vector with a tenant is stamped 2 in
/// `wtxn` (returns true: commit it), its keys being the same bytes in both; format 1
/// holding vectors with a tenant is [`Error::OldFormat`]; a newer format is refused.
fn check_format(store: &Store, wtxn: &mut RwTxn) -> Result<bool> {
    match store.meta_u64(wtxn, META_FORMAT)? {
        STORE_FORMAT => return Ok(false),
        0 => {}
        found => {
            return Err(Error::NewerFormat {
                path: store.path().to_path_buf(),
                found,
                supported: STORE_FORMAT,
            })
        }
    }
    // Format 1 did not store the tenant: a record placed elsewhere than its id alone
    // places it (`ring::position(None, id)`) was written with one.
    for entry in store.records.iter(wtxn).map_err(|e| store.storage(e))? {
        let (item, bytes) = entry.map_err(|e| store.storage(e))?;
        let record = Record::decode(bytes)
            .ok_or_else(|| store.corrupt(format!("record of item {item} does not decode")))?;
        if record.ring != hektor_topics::ring::position(None, &record.id) {
            return Err(Error::OldFormat {
                path: store.path().to_path_buf(),
            });
        }
    }
    store
        .meta
        .put(wtxn, META_FORMAT, &STORE_FORMAT.to_be_bytes())
        .map_err(|e| store.storage(e))?;
    Ok(true)
}

fn check_config(dir: &Path, stored: &StoredConfig, wanted: &StoredConfig) -> Result<()> {
    let mismatch = |field, stored: String, wanted: String| Error::ConfigMismatch {
        path: PathBuf::from(dir),
        field,
        stored,
        wanted,
    };
    if stored.dimension != wanted.dimension {
        return Err(mismatch(
            "dimension",
            stored.dimension.to_string(),
            wanted.dimension.to_string(),
        ));
    }
    if stored.distance != wanted.distance {
        return Err(mismatch(
            "distance",
            format!("{:?}", stored.distance),
            format!("{:?}", wanted.distance),
        ));
    }
    Ok(())
}

#[cfg(test)]
impl Shard {
    /// Make a shard look as format 1 wrote it: no `format` key, every key the bare id.
    pub(crate) fn into_format_1(self) {
        let s = &self.store;
        let mut wtxn = s.env.write_txn().unwrap();
        s.meta.delete(&mut wtxn, META_FORMAT).unwrap();
        let records: Vec<(u32, Record)> = s
            .records
            .iter(&wtxn)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|(item, bytes)| (item, Record::decode(bytes).unwrap()))
            .collect();
        for (item, record) in records {
            s.ids
                .delete(
                    &mut wtxn,
                    &vector_store_key(record.tenant.as_deref(), &record.id),
                )
                .unwrap();
            s.ids.put(&mut wtxn, record.id.as_bytes(), &item).unwrap();
            let old = Record {
                tenant: None,
                ..record
            };
            s.records.put(&mut wtxn, &item, &old.encode()).unwrap();
        }
        wtxn.commit().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(shard: &Shard) -> [u64; 3] {
        let s = &shard.store;
        let txn = shard.read_txn().unwrap();
        [&s.index, &s.index_warm, &s.index_cold].map(|db| db.len(&txn).unwrap())
    }

    #[test]
    fn set_engine_clears_the_old_engines_data_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 8;
        let config = ShardConfig::new(dim, Distance::Cosine, EngineKind::Hnsw);
        let shard = Shard::open(dir.path(), config).unwrap();
        let ops: Vec<(u64, ShardOp)> = (0..300u64)
            .map(|i| {
                let vector: Vec<f32> = (0..dim)
                    .map(|d| ((i * 31 + d as u64 * 17) % 97) as f32 + 1.0)
                    .collect();
                let op = ShardOp::Upsert {
                    id: format!("v{i}"),
                    tenant: None,
                    ring: i << 40,
                    vector,
                    payload: None,
                    hlc: Hlc(1),
                };
                (i, op)
            })
            .collect();
        shard.apply(&ops).unwrap();
        shard.build_index().unwrap();
        assert_eq!(
            lens(&shard),
            [3, 0, 0],
            "hnsw keeps its epoch, lineage and one journal entry"
        );
        // (engine, which of `index` / `index_warm` / `index_cold` holds data afterwards)
        for (kind, holds) in [
            (EngineKind::Warm, [false, true, false]),
            (EngineKind::Cold, [false, false, true]),
            (EngineKind::Arroy, [true, false, false]),
            (EngineKind::Exact, [false, false, false]),
            (EngineKind::Hnsw, [true, false, false]),
        ] {
            let report = shard.set_engine(kind).unwrap();
            assert_eq!(report.removed, 300, "{kind}: old index length");
            let got = lens(&shard).map(|n| n > 0);
            assert_eq!(got, holds, "{kind}: databases holding data");
            let stored: StoredConfig = {
                let txn = shard.read_txn().unwrap();
                serde_json::from_slice(shard.store.meta.get(&txn, META_CONFIG).unwrap().unwrap())
                    .unwrap()
            };
            assert_eq!(stored.engine, kind);
        }
    }

    fn put(id: &str, tenant: Option<&str>) -> ShardOp {
        ShardOp::Upsert {
            id: id.into(),
            tenant: tenant.map(str::to_owned),
            ring: hektor_topics::ring::position(tenant, id),
            vector: vec![1.0, 2.0],
            payload: None,
            hlc: Hlc(1),
        }
    }

    #[test]
    fn a_format_1_shard_without_tenants_opens_and_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig::new(2, Distance::Cosine, EngineKind::Exact);
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        shard.apply(&[(0, put("x", None))]).unwrap();
        shard.into_format_1();
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        assert_eq!(shard.get(None, "x").unwrap().unwrap().vector, [1.0, 2.0]);
        let txn = shard.read_txn().unwrap();
        assert_eq!(
            shard.store.meta_u64(&txn, META_FORMAT).unwrap(),
            STORE_FORMAT
        );
    }

    #[test]
    fn a_format_1_shard_with_tenants_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig::new(2, Distance::Cosine, EngineKind::Exact);
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        shard
            .apply(&[(0, put("x", None)), (1, put("y", Some("t")))])
            .unwrap();
        shard.into_format_1();
        let err = Shard::open(dir.path(), config.clone()).unwrap_err();
        assert!(matches!(err, Error::OldFormat { .. }), "{err}");
        assert!(err.to_string().contains("rebuild it from the log"), "{err}");
        // Refused, not changed: still format 1.
        assert!(matches!(
            Shard::open(dir.path(), config).unwrap_err(),
            Error::OldFormat { .. }
        ));
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig::new(2, Distance::Cosine, EngineKind::Exact);
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        let mut wtxn = shard.store.env.write_txn().unwrap();
        let newer = STORE_FORMAT + 1;
        shard
            .store
            .meta
            .put(&mut wtxn, META_FORMAT, &newer.to_be_bytes())
            .unwrap();
        wtxn.commit().unwrap();
        drop(shard);
        let err = Shard::open(dir.path(), config).unwrap_err();
        assert!(
            matches!(err, Error::NewerFormat { found, .. } if found == newer),
            "{err}"
        );
    }
}
