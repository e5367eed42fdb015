//! The shard host: the indexer role of a node. It holds the shards its [`Assignments`]
//! name (the ring ranges the shard maps give this node, per collection) and runs, for
//! each, a consumer that follows the vectors-topic partition the range lies in, applying
//! the upserts and deletes whose ring position falls in the range, in batches.
//!
//! - Exactly-once effect: a shard stores the offset it has applied in the same LMDB
//!   transaction as the vectors, and the consumer resumes from it (crash-safe). A shard
//!   new to this node replays its partition from the start.
//! - Poison records (undecodable, wrong dimension, wrong collection) go to the
//!   collection's dead-letter topic with the reason in a header, from the shard's first
//!   replica only; delivery is at least once (a crash, or a shard rebuilt elsewhere, sends
//!   again): deduplicate by the source header. The consumer goes on.
//! - The index is built in the background when the shard is caught up (or the tail grows
//!   large); until then the tail is searched exactly. A hot shard's builder runs beside
//!   its consumer (the graph folds outside the write transaction), so a bulk load keeps
//!   the tail short without stalling applies; other engines' builds stall them, so they
//!   wait for a long tail. A shard is *caught up* once it has
//!   read to the end of its partition with its index built: the condition for reporting
//!   a shard being built as ready.
//! - A range no longer assigned keeps serving for a grace period (routers on the previous
//!   epoch may still ask), then its consumer stops and its directory is removed.
//! - Hot shards save their graph when a checkpoint is due (after builds that changed
//!   enough, when idle, and at [`ShardHost::checkpoint_all`] when the node stops), so a
//!   restart loads graphs instead of rebuilding them.
//! - Readers wait on [`HostedShard::wait_applied`] for read-your-writes.
//! - **Archive tier** (with [`ShardHost::set_archive`]): a held shard whose map tier is
//!   [`Tier::Archive`] is archived by its first replica (consumer stopped, snapshot
//!   uploaded and checked, then the local directory removed; other replicas drop theirs
//!   once the archive exists) and is no longer held by any engine. A read that needs it
//!   ([`ShardHost::resolve_or_restore`]) restores it: download, digests checked, opened,
//!   caught up from the log from the snapshot's offset; the host then asks (the
//!   `on_restored` callback) for the map to say cold. A failed restore is remembered for
//!   [`RESTORE_RETRY`] and reported as it is; nothing is served from a bad copy.
//!
//! It does not decide what to hold (the control plane does) and does not serve HTTP or
//! merge results across shards: that is `hektor-query`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hektor_log::{Log, LogRecord, StoredRecord};
use hektor_topics::catalog::Catalog;
use hektor_topics::codec;
use hektor_topics::hlc::{Hlc, HlcClock};
use hektor_topics::record::{CollectionSpec, Distance, RingRange, Tier, VectorRecord};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, validate_collection_name, TopicKind};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::shard::{Provenance, Source};
use crate::snapshot::{
    ArchivePut, Archived, Fetched, ShardArchive, SnapshotRequest, SnapshotSource,
};
use crate::{EngineKind, Error, Shard, ShardConfig, ShardOp};
use serde::Serialize;

pub use hektor_topics::topic::{DLQ_REASON_HEADER, DLQ_SOURCE_HEADER};

/// Records read per batch.
const READ_BATCH: usize = 4096;
/// Build the index once this many vectors wait in the tail even while still catching up.
/// A build holds the shard's one LMDB writer, so building while catching up stalls
/// applies; the tail is searched exactly meanwhile, so writes are searchable without it.
/// Only a very long tail (slow exact scans) justifies building before the consumer is idle.
const BUILD_WHEN_PENDING: u64 = 250_000;
/// When caught up, build once at least this many wait.
const BUILD_WHEN_IDLE: u64 = 512;
/// A hot shard folds a tail shorter than [`BUILD_WHEN_IDLE`] once its partition has been
/// quiet this long (its builds do not stall applies).
const BUILD_SHORT_TAIL_AFTER: Duration = Duration::from_secs(1);
/// For an engine that builds beside the applies (the hot graph): while catching up, keep
/// a builder folding the tail once this many wait, so the exactly-searched tail stays
/// short during a bulk load.
const BUILD_BESIDE_WHEN_PENDING: u64 = 4_096;

/// The ranges a node must hold for one collection, from its shard map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Which creation of the collection the map is for.
    pub incarnation: u64,
    /// The epoch of the map these ranges come from.
    pub epoch: u64,
    pub ranges: Vec<AssignedRange>,
}

/// One range to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedRange {
    pub range: RingRange,
    pub tier: Tier,
    /// This node is the shard's first replica: it dead-letters poison records.
    pub primary: bool,
}

/// What this node holds, per collection.
pub type Assignments = BTreeMap<String, Assignment>;

/// Tuning of a host.
#[derive(Clone)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    /// The engine of hot shards (warm shards use [`EngineKind::Warm`], cold ones
    /// [`EngineKind::Cold`]).
    pub engine: EngineKind,
    /// How long a range no longer assigned keeps serving before it is dropped.
    pub grace: Duration,
    /// Where a range this node has no directory for is fetched from as a snapshot of a
    /// current holder (a move; see [`crate::snapshot`]); `None`, or no holder able to
    /// give one: the shard is built by replaying its partition from the log.
    pub snapshots: Option<Arc<dyn SnapshotSource>>,
    /// The other regions whose vectors topics MirrorMaker 2 copies into this region's log
    /// (`<region>.hektor.C.vectors`): every shard follows and merges their partitions too
    /// ([`Source::Mirror`]). Empty: one region.
    pub mirrors: Vec<String>,
    /// This node's clock: it observes the stamps of the mirrored writes applied, so a
    /// write accepted here afterwards orders after them even when this node's wall clock
    /// is behind the other region's.
    pub clock: Option<Arc<HlcClock>>,
    /// This node's region: the name other regions' `seen` vectors give this region's
    /// partitions (what write levels wait on, [`HostedShard::merged_by`]).
    pub region: String,
}

impl std::fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConfig")
            .field("data_dir", &self.data_dir)
            .field("engine", &self.engine)
            .field("grace", &self.grace)
            .field("snapshots", &self.snapshots.is_some())
            .field("mirrors", &self.mirrors)
            .finish()
    }
}

/// How a hosted shard came to this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardOrigin {
    /// Opened from its directory on this node (a restart, or a shard held all along).
    Local,
    /// New here, built by replaying its partition from the log.
    Log,
    /// Restored from the archive tier (object storage), then caught up from the log.
    Archive {
        location: String,
        bytes: u64,
        /// From asking to serving-ready (downloaded, checked, opened).
        millis: u64,
    },
    /// New here, received as a snapshot from another node, then caught up from the log.
    Snapshot {
        from: String,
        bytes: u64,
        /// From asking to serving-ready (received, opened, trimmed to its range).
        millis: u64,
        /// Vectors of the sender's wider range dropped (one half of a split).
        trimmed: u64,
    },
}

/// One shard served by this node, and its consumer's progress.
pub struct HostedShard {
    pub collection: String,
    /// The vectors-topic partition the range lies in.
    pub partition: u32,
    pub range: RingRange,
    pub shard: Arc<Shard>,
    applied: watch::Sender<u64>,
    high_watermark: AtomicU64,
    dead_lettered: AtomicU64,
    primary: AtomicBool,
    caught_up: AtomicBool,
    /// A tier switch is running.
    retiering: AtomicBool,
    /// A background builder is running ([`request_build`]).
    building: AtomicBool,
    stop: AtomicBool,
    /// When it stopped being assigned (it serves until the grace period ends).
    retired: Mutex<Option<Instant>>,
    /// Why its consumer is failing (applies fail or panic; it retries), if it is.
    failure: Mutex<Option<String>>,
    /// How it came to this node.
    pub origin: ShardOrigin,
    /// Per mirrored region: (next offset applied, the mirrored partition's high
    /// watermark as last read, redelivered copies skipped).
    mirrored: Mutex<std::collections::BTreeMap<String, MirrorProgress>>,
    /// Concurrent writes of different regions met since this node opened the shard.
    conflicts: AtomicU64,
    /// This node's region and the regions mirrored into it (see [`HostConfig`]).
    region: String,
    mirrors: Vec<String>,
    /// Per mirrored region, the join of the `seen` vectors its records carried: how far
    /// that region had merged each other region's partition when it wrote them.
    acknowledged: Mutex<std::collections::BTreeMap<String, hektor_merge::VersionVector>>,
    /// Bumped after each merge of a mirrored batch (what floor waits watch).
    merges: watch::Sender<u64>,
    /// Its own partition's consumer is running (false once it has stopped).
    consuming: watch::Sender<bool>,
    /// Restored from the archive while its map tier still says archive: not archived
    /// again until the map has said another tier.
    restored: AtomicBool,
    /// Being archived.
    archiving: AtomicBool,
}

/// How far a shard has merged one mirrored region's partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MirrorProgress {
    /// The next offset of the mirrored partition to apply.
    pub next_offset: u64,
    /// The mirrored partition's end as last read.
    pub high_watermark: u64,
    /// MirrorMaker's redelivered copies recognised and skipped.
    pub duplicates: u64,
    /// The source's clock floor: the effective hlc of its newest write applied.
    pub floor: u64,
}

impl HostedShard {
    /// The next offset this shard will apply (everything below is applied).
    pub fn next_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records in the log not applied yet, as of the last poll.
    pub fn lag(&self) -> u64 {
        self.high_watermark
            .load(Ordering::Relaxed)
            .saturating_sub(self.next_offset())
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// The engine serving it now (its tier's once a switch is done).
    pub fn engine(&self) -> EngineKind {
        self.shard.engine()
    }

    /// Read to the end of its partition once, with the index built.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Why the shard's consumer is failing right now (it keeps retrying), if it is. A
    /// failing shard is not following its partition: `/health` says so.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    fn fail(&self, why: String) {
        *self.failure.lock() = Some(why);
    }

    /// Concurrent writes of different regions this shard met since this node opened it
    /// (each write that arrived not knowing the other region's write stored for its id).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Per mirrored region, how far this shard has merged its partition.
    pub fn mirrored(&self) -> std::collections::BTreeMap<String, MirrorProgress> {
        self.mirrored.lock().clone()
    }

    /// The clock floors of this partition here: this region's own (by its name) and each
    /// mirrored region's, as committed (a read here sees at least what they cover).
    pub fn floors(&self) -> Vec<(String, Hlc)> {
        let own = self.shard.hlc_floor().unwrap_or_default();
        let mut floors = vec![(self.region.clone(), own)];
        for region in &self.mirrors {
            floors.push((
                region.clone(),
                self.shard.source_floor(region).unwrap_or_default(),
            ));
        }
        floors
    }

    /// Wait until every floor of [`HostedShard::floors`] is at least `at_least`: a read
    /// then reflects every record of every region's partition stamped up to there. On
    /// timeout, the floors that fell short.
    pub async fn wait_floors(
        &self,
        at_least: Hlc,
        timeout: Duration,
    ) -> Result<(), Vec<(String, Hlc)>> {
        let short = |floors: Vec<(String, Hlc)>| -> Vec<(String, Hlc)> {
            floors.into_iter().filter(|(_, f)| *f < at_least).collect()
        };
        let mut applied = self.applied.subscribe();
        let mut merges = self.merges.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = short(self.floors());
            if missing.is_empty() {
                return Ok(());
            }
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    r = applied.changed() => r.is_ok(),
                    r = merges.changed() => r.is_ok(),
                }
            })
            .await;
            match woke {
                Ok(true) => {}
                // Timed out, or the shard closed: report what is missing now.
                _ => {
                    let missing = short(self.floors());
                    return if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(missing)
                    };
                }
            }
        }
    }

    /// The clock floor of `region`'s copy of this partition merged here, as the mirror's
    /// consumer last merged it (0 before its first merge since the shard opened here):
    /// what this region's node streams to `region` for its write levels.
    pub fn mirror_floor(&self, region: &str) -> u64 {
        self.mirrored.lock().get(region).map_or(0, |p| p.floor)
    }

    /// How far `region` had merged this region's partition, by the `seen` vector of the
    /// newest of its records merged here (zero before any).
    pub fn merged_by(&self, region: &str) -> Hlc {
        self.acknowledged
            .lock()
            .get(region)
            .map(|seen| seen.get(&self.region))
            .unwrap_or_default()
    }

    /// Changes whenever a mirrored batch has been merged (what waits on
    /// [`HostedShard::merged_by`] or on mirrored floors watch).
    pub fn merges(&self) -> watch::Receiver<u64> {
        self.merges.subscribe()
    }

    /// No longer assigned: serving out its grace period.
    pub fn retired(&self) -> bool {
        self.retired.lock().is_some()
    }

    /// Wait until the record at `offset` is applied. Returns false on timeout.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|next| *next > offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The shards of one collection on this node, in ring order.
pub struct HostedCollection {
    pub spec: CollectionSpec,
    /// Which creation of this collection name these shards belong to (see
    /// [`Catalog::incarnation`]).
    pub incarnation: u64,
    /// The map epoch the assigned ranges come from.
    pub epoch: u64,
    /// Assigned shards and, after them, retired ones still in their grace period.
    pub shards: Vec<Arc<HostedShard>>,
}

impl HostedCollection {
    /// The shard holding exactly `range`, retired ones included.
    pub fn shard(&self, range: RingRange) -> Option<&Arc<HostedShard>> {
        self.shards.iter().find(|s| s.range == range)
    }

    /// The assigned (not retired) shards.
    pub fn serving(&self) -> impl Iterator<Item = &Arc<HostedShard>> {
        self.shards.iter().filter(|s| !s.retired())
    }
}

/// The indexer role: shards and their consumers, following the assignments.
pub struct ShardHost {
    config: HostConfig,
    catalog: Arc<Catalog>,
    collections: RwLock<HashMap<String, Arc<HostedCollection>>>,
    /// Bumped after every sync with the assignments.
    synced: watch::Sender<u64>,
    sync_lock: tokio::sync::Mutex<()>,
    /// The assignments last synced to.
    wanted: RwLock<Assignments>,
    /// The archive tier, when configured ([`ShardHost::set_archive`]).
    archive: RwLock<Option<ArchiveHook>>,
    /// Shards of the archive tier: being archived, archived, being restored.
    archives: Mutex<HashMap<ArchiveKey, ArchiveState>>,
    /// Bumped whenever an entry of `archives` changes.
    archive_changes: watch::Sender<u64>,
}

/// How long a request for a collection the catalog knows waits for its shards to open.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// After a failed restore, reads are answered with its error for this long before the
/// next read tries again.
pub const RESTORE_RETRY: Duration = Duration::from_secs(5);
/// After a failed archive upload, the shard keeps serving and is tried again after this.
const ARCHIVE_RETRY: Duration = Duration::from_secs(30);
/// How long archiving waits for the shard's consumer to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The archive tier of a host: where archived shards go and what to tell once one is
/// restored.
#[derive(Clone)]
pub struct ArchiveHook {
    pub store: Arc<dyn ShardArchive>,
    /// Called with (collection, range) after a shard in tier archive was restored by a
    /// read, so that the map can say cold (`serve` asks its controller).
    pub on_restored: Option<OnRestored>,
}

/// What a host calls with (collection, range) after a read restored an archived shard.
pub type OnRestored = Arc<dyn Fn(&str, RingRange) + Send + Sync>;

/// Where a shard of the archive tier stands on this node.
#[derive(Debug, Clone)]
enum ArchiveState {
    Archiving,
    ArchiveFailed {
        at: Instant,
        why: String,
    },
    /// Looking the archive up in the store (a node that did not upload it).
    Locating,
    Archived(Archived),
    Restoring {
        since: Instant,
    },
    RestoreFailed {
        at: Instant,
        why: String,
    },
}

type ArchiveKey = (String, u64, RingRange);

/// Why [`ShardHost::resolve_or_restore`] has no shard to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unheld {
    /// This node does not hold the range (nor is it assigned it in the archive tier).
    NotHeld,
    /// The shard is archived and being restored (or archived right now): ask again.
    Restoring { why: String, retry_after: Duration },
    /// Restoring it failed; the next try is after `retry_after`.
    Failed { why: String, retry_after: Duration },
}

impl std::fmt::Display for Unheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unheld::NotHeld => write!(f, "shard not held by this node"),
            Unheld::Restoring { why, .. } => write!(f, "{why}"),
            Unheld::Failed { why, .. } => write!(f, "restoring the archived shard failed: {why}"),
        }
    }
}

impl HostConfig {
    /// The engine that serves a shard of this tier.
    pub fn engine_of(&self, tier: Tier) -> EngineKind {
        match tier {
            Tier::Hot => self.engine,
            Tier::Warm => EngineKind::Warm,
            // An archived shard is held by no engine; restored, it serves as cold.
            Tier::Cold | Tier::Archive => EngineKind::Cold,
        }
    }
}

impl ShardHost {
    /// Open the assigned shards and keep following the assignments (and the catalog, for
    /// collection settings and drops).
    pub async fn start(
        config: HostConfig,
        catalog: Arc<Catalog>,
        mut assignments: watch::Receiver<Assignments>,
    ) -> Result<Arc<ShardHost>, Error> {
        let host = Arc::new(ShardHost {
            config,
            catalog,
            collections: RwLock::new(HashMap::new()),
            synced: watch::channel(0).0,
            sync_lock: tokio::sync::Mutex::new(()),
            wanted: RwLock::new(Assignments::new()),
            archive: RwLock::new(None),
            archives: Mutex::new(HashMap::new()),
            archive_changes: watch::channel(0).0,
        });
        let first = assignments.borrow_and_update().clone();
        host.sync(&first).await?;
        let follower = Arc::clone(&host);
        let mut catalog_rx = follower.catalog.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    r = assignments.changed() => if r.is_err() { return },
                    r = catalog_rx.changed() => if r.is_err() { return },
                    _ = tick.tick() => {}
                }
                let wanted = assignments.borrow_and_update().clone();
                if let Err(err) = follower.sync(&wanted).await {
                    tracing::error!(%err, "could not open shards for an assignment change");
                }
            }
        });
        Ok(host)
    }

    /// The catalog this host follows.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The settings it was started with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn collection(&self, name: &str) -> Option<Arc<HostedCollection>> {
        self.collections.read().get(name).cloned()
    }

    /// The shard holding exactly `range` of `collection`, waiting (bounded) for it to open
    /// when the catalog has the collection but this host has not caught up with it yet.
    pub async fn resolve_shard(
        &self,
        name: &str,
        range: RingRange,
        wait: Duration,
    ) -> Option<Arc<HostedShard>> {
        let find = || self.collection(name).and_then(|c| c.shard(range).cloned());
        if let Some(found) = find() {
            return Some(found);
        }
        self.catalog.get(name)?;
        let mut synced = self.synced.subscribe();
        let waited = tokio::time::timeout(wait, async {
            loop {
                if let Some(found) = find() {
                    return Some(found);
                }
                if synced.changed().await.is_err() {
                    return None;
                }
            }
        });
        waited.await.ok().flatten()
    }

    /// The collection's shards; if the catalog has the collection but this host has not
    /// opened it yet (it was created a moment ago), wait for it (bounded).
    pub async fn resolve(&self, name: &str) -> Option<Arc<HostedCollection>> {
        if let Some(found) = self.collection(name) {
            return Some(found);
        }
        self.catalog.get(name)?;
        let mut synced = self.synced.subscribe();
        let waited = tokio::time::timeout(OPEN_WAIT, async {
            loop {
                if let Some(found) = self.collection(name) {
                    return Some(found);
                }
                if synced.changed().await.is_err() {
                    return None;
                }
            }
        });
        waited.await.ok().flatten()
    }

    /// What this node has merged of the other regions for `collection`'s `partition`: each
    /// mirrored region's clock floor as committed in the shard, so a write stamped with it
    /// covers every other region's write a read here can already see (the in-memory
    /// [`HostedShard::mirrored`] lags the commit by a wake-up). `None` where this node holds
    /// no shard of the partition or the floors cannot be read.
    pub fn merged(&self, collection: &str, partition: u32) -> Option<hektor_merge::VersionVector> {
        let hosted = self.collection(collection)?;
        let shard = hosted.shards.iter().find(|s| s.partition == partition)?;
        self.config
            .mirrors
            .iter()
            .map(|region| Some((region.clone(), shard.shard.source_floor(region).ok()?)))
            .collect()
    }

    pub fn collections(&self) -> Vec<Arc<HostedCollection>> {
        self.collections.read().values().cloned().collect()
    }

    /// Save every hot shard's graph that has unsaved changes, so that the next start
    /// loads them instead of rebuilding (call when the node stops).
    pub async fn checkpoint_all(&self) {
        let shards: Vec<Arc<Shard>> = self
            .collections()
            .iter()
            .flat_map(|c| c.shards.iter().map(|s| Arc::clone(&s.shard)))
            .collect();
        for shard in shards {
            checkpoint(&shard, true, false).await;
        }
    }

    /// Whether this host holds `range` of that incarnation of `collection` caught up.
    pub fn caught_up(&self, collection: &str, incarnation: u64, range: RingRange) -> bool {
        self.collection(collection)
            .filter(|c| c.incarnation == incarnation)
            .and_then(|c| c.shard(range).map(|s| s.caught_up() && !s.retired()))
            .unwrap_or(false)
    }

    /// Open newly assigned shards, retire unassigned ones, drop retired ones past their
    /// grace period and every shard of dropped collections.
    async fn sync(self: &Arc<Self>, wanted: &Assignments) -> Result<(), Error> {
        let _one_at_a_time = self.sync_lock.lock().await;
        *self.wanted.write() = wanted.clone();
        let archiving = self.archive.read().is_some();
        let mut catalog = self.catalog.list_incarnations();
        // The catalog refuses such names already; no directory is made or removed for one.
        catalog.retain(|(spec, _)| match check_dir_name(&spec.name) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "not hosting a collection whose name is no directory name");
                false
            }
        });
        // Collections dropped (or re-created) go at once.
        let current: Vec<(String, u64)> = self
            .collections
            .read()
            .values()
            .map(|c| (c.spec.name.clone(), c.incarnation))
            .collect();
        for (name, incarnation) in current {
            let keep = catalog
                .iter()
                .any(|(s, inc)| s.name == name && *inc == incarnation);
            if !keep {
                if let Some(gone) = self.collections.write().remove(&name) {
                    for shard in &gone.shards {
                        shard.stop.store(true, Ordering::Relaxed);
                    }
                    let dir = collection_dir(&self.config.data_dir, &name, incarnation);
                    drop(gone);
                    remove_later(dir);
                }
            }
        }
        for (spec, incarnation) in catalog {
            let assignment = wanted
                .get(&spec.name)
                .filter(|a| a.incarnation == incarnation);
            let old = self.collection(&spec.name);
            let mut shards: Vec<Arc<HostedShard>> = Vec::new();
            let mut changed = old.is_none();
            let ranges: &[AssignedRange] = assignment.map_or(&[], |a| &a.ranges);
            // Open the new ranges' shards side by side (loading or rebuilding their
            // indexes runs on blocking threads).
            let held =
                |a: &&AssignedRange| old.as_ref().is_some_and(|c| c.shard(a.range).is_some());
            // A range of the archive tier is opened only where its directory is still
            // here (archiving did not finish); otherwise it stays in the archive until a
            // read restores it.
            // One being archived or restored right now is that task's to open or remove.
            let busy = |range: RingRange| {
                matches!(
                    self.archives
                        .lock()
                        .get(&(spec.name.clone(), incarnation, range)),
                    Some(ArchiveState::Archiving | ArchiveState::Restoring { .. })
                )
            };
            let archived: Vec<RingRange> = ranges
                .iter()
                .filter(|a| archiving && a.tier == Tier::Archive && !held(a))
                .filter(|a| {
                    busy(a.range) || !self.shard_dir(&spec.name, incarnation, a.range).exists()
                })
                .map(|a| a.range)
                .collect();
            let results = futures::future::join_all(
                ranges
                    .iter()
                    .filter(|a| !held(a) && !archived.contains(&a.range))
                    .map(|a| self.open_shard(&spec, incarnation, a.range, a.primary)),
            )
            .await;
            let mut opened: Vec<Arc<HostedShard>> = Vec::with_capacity(results.len());
            let mut failed = None;
            for result in results {
                match result {
                    Ok(shard) => opened.push(shard),
                    Err(err) => failed = Some(err),
                }
            }
            if let Some(err) = failed {
                // The next sync opens them all again: stop the consumers of those opened.
                for shard in &opened {
                    shard.stop.store(true, Ordering::Relaxed);
                }
                return Err(err);
            }
            for assigned in ranges {
                match old.as_ref().and_then(|c| c.shard(assigned.range).cloned()) {
                    Some(existing) => {
                        if existing.retired.lock().take().is_some() {
                            changed = true;
                        }
                        existing.primary.store(assigned.primary, Ordering::Relaxed);
                        self.retier(&existing, assigned.tier);
                        if assigned.tier != Tier::Archive {
                            existing.restored.store(false, Ordering::Relaxed);
                        } else if archiving && !existing.restored.load(Ordering::Relaxed) {
                            self.archive_later(&spec, incarnation, &existing);
                        }
                        shards.push(existing);
                    }
                    None if archived.contains(&assigned.range) => {
                        self.locate_later(&spec, incarnation, assigned.range);
                    }
                    None => {
                        let at = opened
                            .iter()
                            .position(|s| s.range == assigned.range)
                            .expect("every range not held was opened above");
                        let new = opened.swap_remove(at);
                        self.retier(&new, assigned.tier);
                        shards.push(new);
                        changed = true;
                    }
                }
            }
            // Unassigned shards serve out their grace period, then go.
            if let Some(old) = &old {
                for s in &old.shards {
                    if ranges.iter().any(|a| a.range == s.range) {
                        continue;
                    }
                    let mut retired = s.retired.lock();
                    let since = *retired.get_or_insert_with(|| {
                        changed = true;
                        Instant::now()
                    });
                    if since.elapsed() < self.config.grace {
                        shards.push(Arc::clone(s));
                    } else {
                        s.stop.store(true, Ordering::Relaxed);
                        remove_later(self.shard_dir(&spec.name, incarnation, s.range));
                        changed = true;
                    }
                }
            }
            let epoch = assignment.map_or(0, |a| a.epoch);
            if changed || old.as_ref().is_some_and(|c| c.epoch != epoch) {
                shards.sort_by_key(|s| (s.retired(), s.range.start));
                self.collections.write().insert(
                    spec.name.clone(),
                    Arc::new(HostedCollection {
                        spec: spec.clone(),
                        incarnation,
                        epoch,
                        shards,
                    }),
                );
            }
        }
        self.synced.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Switch a shard's engine to its tier's in the background (it serves from its
    /// current engine meanwhile; see [`Shard::set_engine`]). One switch at a time per shard.
    fn retier(&self, hosted: &Arc<HostedShard>, tier: Tier) {
        let wanted = self.config.engine_of(tier);
        if hosted.shard.engine() == wanted || hosted.retiering.swap(true, Ordering::AcqRel) {
            return;
        }
        let hosted = Arc::clone(hosted);
        tokio::spawn(async move {
            let shard = Arc::clone(&hosted.shard);
            let path = shard.path().display().to_string();
            match tokio::task::spawn_blocking(move || shard.set_engine(wanted)).await {
                Ok(Ok(report)) => tracing::info!(%path, engine = %wanted,
                    secs = report.duration.as_secs_f64(), "shard switched tier"),
                Ok(Err(err)) => tracing::error!(%err, %path, "tier switch failed"),
                Err(err) => tracing::error!(%err, %path, "tier switch panicked"),
            }
            hosted.retiering.store(false, Ordering::Release);
        });
    }

    fn shard_dir(&self, collection: &str, incarnation: u64, range: RingRange) -> PathBuf {
        shard_dir(&self.config.data_dir, collection, incarnation, range)
    }

    async fn open_shard(
        self: &Arc<Self>,
        spec: &CollectionSpec,
        incarnation: u64,
        range: RingRange,
        primary: bool,
    ) -> Result<Arc<HostedShard>, Error> {
        check_dir_name(&spec.name)?;
        let dir = self.shard_dir(&spec.name, incarnation, range);
        let config = ShardConfig::of_collection(spec, self.config.engine);
        let started = Instant::now();
        let request = SnapshotRequest {
            collection: spec.name.clone(),
            incarnation,
            range,
            dimension: spec.dimension as usize,
            distance: spec.distance,
        };
        // A range new to this node starts from a snapshot when it can: of a shard this
        // node holds that covers it (a split here: no transfer), else of another holder's.
        let fetched = match (&self.config.snapshots, dir.exists()) {
            (Some(source), false) => {
                let local = self
                    .collection(&spec.name)
                    .filter(|c| c.incarnation == incarnation)
                    .and_then(|c| {
                        c.shards
                            .iter()
                            .find(|s| crate::snapshot::covers(s.range, range))
                            .cloned()
                    });
                let copied = match local {
                    Some(held) => {
                        let node = "local".to_string();
                        let source = LocalSnapshot { held, node };
                        receive_snapshot(&source, request.clone(), &dir).await
                    }
                    None => None,
                };
                match copied {
                    Some(fetched) => Some(fetched),
                    None => receive_snapshot(source.as_ref(), request.clone(), &dir).await,
                }
            }
            _ => None,
        };
        // No holder gave one (all gone, or the range was archived and is now assigned
        // to a tier this node serves): the archive's snapshot, when there is one, rather
        // than the whole partition from the log.
        let hook = self.archive.read().clone();
        let (fetched, from_archive) = match (fetched, hook) {
            (None, Some(hook)) if !dir.exists() => {
                let source = ArchiveSnapshot { store: hook.store };
                let fetched = receive_snapshot(&source, request, &dir).await;
                let restored = fetched.is_some();
                if restored {
                    self.set_state(&(spec.name.clone(), incarnation, range), None);
                }
                (fetched, restored)
            }
            (fetched, _) => (fetched, false),
        };
        let existed = dir.exists();
        let received = fetched.is_some();
        let open = move || {
            let shard = open_or_rebuild(&dir, config)?;
            let trimmed = if received {
                let trimmed = shard.retain_range(range)?;
                if trimmed > 0 {
                    // Drop the other half's nodes from the graph before serving.
                    shard.build_index()?;
                }
                trimmed
            } else {
                0
            };
            Ok::<_, Error>((shard, trimmed))
        };
        // A shard that arrived from another holder opens at a lower priority than the
        // searches this node serves; a restart's opens go at full speed.
        let (shard, trimmed) = if received {
            crate::background::spawn("shard-open", open)
                .await
                .map_err(|e| Error::Background(e.to_string()))??
        } else {
            tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| Error::Background(e.to_string()))??
        };
        let origin = match fetched {
            Some(fetched) if from_archive => {
                let origin = ShardOrigin::Archive {
                    location: fetched.manifest.from,
                    bytes: fetched.bytes,
                    millis: started.elapsed().as_millis() as u64,
                };
                tracing::info!(collection = %spec.name, ?range, ?origin, next_offset = shard.next_offset(),
                    vectors = shard.len(), "shard restored from the archive; catching up from the log");
                origin
            }
            Some(fetched) => {
                let origin = ShardOrigin::Snapshot {
                    from: fetched.manifest.from,
                    bytes: fetched.bytes,
                    millis: started.elapsed().as_millis() as u64,
                    trimmed,
                };
                tracing::info!(collection = %spec.name, ?range, ?origin, next_offset = shard.next_offset(),
                    vectors = shard.len(), "shard received as a snapshot; catching up from the log");
                origin
            }
            None if existed => ShardOrigin::Local,
            None => ShardOrigin::Log,
        };
        Ok(self.start_hosted(spec, range, primary, shard, origin))
    }

    /// Serve an opened shard: its record, its consumer and its mirrors' consumers.
    fn start_hosted(
        self: &Arc<Self>,
        spec: &CollectionSpec,
        range: RingRange,
        primary: bool,
        shard: Shard,
        origin: ShardOrigin,
    ) -> Arc<HostedShard> {
        let partition = ring::partition_of(range.start, spec.partitions);
        let next = shard.next_offset();
        let hosted = Arc::new(HostedShard {
            collection: spec.name.clone(),
            partition,
            range,
            shard: Arc::new(shard),
            applied: watch::channel(next).0,
            high_watermark: AtomicU64::new(next),
            dead_lettered: AtomicU64::new(0),
            primary: AtomicBool::new(primary),
            caught_up: AtomicBool::new(false),
            retiering: AtomicBool::new(false),
            building: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            retired: Mutex::new(None),
            failure: Mutex::new(None),
            origin,
            mirrored: Mutex::new(std::collections::BTreeMap::new()),
            conflicts: AtomicU64::new(0),
            region: self.config.region.clone(),
            mirrors: self.config.mirrors.clone(),
            acknowledged: Mutex::new(std::collections::BTreeMap::new()),
            merges: watch::channel(0).0,
            consuming: watch::channel(false).0,
            restored: AtomicBool::new(false),
            archiving: AtomicBool::new(false),
        });
        self.spawn_consumers(spec, &hosted);
        hosted
    }

    /// Start a hosted shard's consumers (again, after a failed archive stopped them).
    fn spawn_consumers(&self, spec: &CollectionSpec, hosted: &Arc<HostedShard>) {
        let log = Arc::clone(self.catalog.log());
        let (l, sp, h) = (Arc::clone(&log), spec.clone(), Arc::clone(hosted));
        hosted.consuming.send_replace(true);
        let done = Arc::clone(hosted);
        let consumer = supervise(
            Arc::clone(hosted),
            "the shard's consumer".into(),
            move || consume(Arc::clone(&l), sp.clone(), Arc::clone(&h)),
        );
        tokio::spawn(async move {
            consumer.await;
            done.consuming.send_replace(false);
        });
        for region in &self.config.mirrors {
            let (l, sp, h) = (Arc::clone(&log), spec.clone(), Arc::clone(hosted));
            let (r, clock) = (region.clone(), self.config.clock.clone());
            tokio::spawn(supervise(
                Arc::clone(hosted),
                format!("the consumer of region `{region}`'s mirror"),
                move || {
                    follow_mirror(
                        Arc::clone(&l),
                        sp.clone(),
                        Arc::clone(&h),
                        r.clone(),
                        clock.clone(),
                    )
                },
            ));
        }
    }
}

/// The archive tier (see the module doc).
impl ShardHost {
    /// Turn the archive tier on: shards whose map tier is archive go to `hook.store`.
    /// Call right after [`ShardHost::start`].
    pub fn set_archive(&self, hook: ArchiveHook) {
        *self.archive.write() = Some(hook);
    }

    /// Where the archived snapshot of `range` of `collection` lies, as this node knows
    /// it (it archived the shard, or looked the archive up as one of its replicas).
    pub fn archived(&self, collection: &str, range: RingRange) -> Option<Archived> {
        let incarnation = self.catalog.incarnation(collection)?;
        match self
            .archives
            .lock()
            .get(&(collection.to_owned(), incarnation, range))
        {
            Some(ArchiveState::Archived(a)) => Some(a.clone()),
            _ => None,
        }
    }

    /// Why this node's last try to archive or restore `range` failed, if it did.
    pub fn archive_error(&self, collection: &str, range: RingRange) -> Option<String> {
        let incarnation = self.catalog.incarnation(collection)?;
        match self
            .archives
            .lock()
            .get(&(collection.to_owned(), incarnation, range))
        {
            Some(ArchiveState::ArchiveFailed { why, .. }) => Some(format!("archiving: {why}")),
            Some(ArchiveState::RestoreFailed { why, .. }) => Some(format!("restoring: {why}")),
            _ => None,
        }
    }

    fn set_state(&self, key: &ArchiveKey, state: Option<ArchiveState>) {
        let mut archives = self.archives.lock();
        match state {
            Some(state) => archives.insert(key.clone(), state),
            None => archives.remove(key),
        };
        drop(archives);
        self.archive_changes.send_modify(|n| *n += 1);
    }

    /// The shard holding exactly `range` of `collection`; one of the archive tier
    /// assigned to this node is restored first (waiting at most `wait` for it).
    pub async fn resolve_or_restore(
        self: &Arc<Self>,
        collection: &str,
        range: RingRange,
        wait: Duration,
    ) -> Result<Arc<HostedShard>, Unheld> {
        if let Some(found) = self
            .collection(collection)
            .and_then(|c| c.shard(range).cloned())
        {
            return Ok(found);
        }
        let assigned = self.wanted.read().get(collection).and_then(|a| {
            a.ranges
                .iter()
                .find(|r| r.range == range && r.tier == Tier::Archive)
                .map(|r| (a.incarnation, r.primary))
        });
        let hook = self.archive.read().clone();
        let (Some((incarnation, primary)), Some(_)) = (assigned, hook) else {
            return self
                .resolve_shard(collection, range, wait)
                .await
                .ok_or(Unheld::NotHeld);
        };
        let Some(spec) = self
            .catalog
            .list_incarnations()
            .into_iter()
            .find(|(s, inc)| s.name == collection && *inc == incarnation)
            .map(|(s, _)| s)
        else {
            return Err(Unheld::NotHeld);
        };
        let key: ArchiveKey = (collection.to_owned(), incarnation, range);
        let mut changes = self.archive_changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(found) = self
                .collection(collection)
                .and_then(|c| c.shard(range).cloned())
            {
                return Ok(found);
            }
            let state = self.archives.lock().get(&key).cloned();
            match state {
                Some(ArchiveState::RestoreFailed { at, why }) if at.elapsed() < RESTORE_RETRY => {
                    return Err(Unheld::Failed {
                        why,
                        retry_after: RESTORE_RETRY.saturating_sub(at.elapsed()),
                    });
                }
                Some(ArchiveState::Restoring { .. }) | Some(ArchiveState::Archiving) => {}
                _ => {
                    self.set_state(
                        &key,
                        Some(ArchiveState::Restoring {
                            since: Instant::now(),
                        }),
                    );
                    let host = Arc::clone(self);
                    let (spec, key) = (spec.clone(), key.clone());
                    tokio::spawn(async move { host.restore(spec, key, primary).await });
                }
            }
            let woke = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                if let Some(found) = self
                    .collection(collection)
                    .and_then(|c| c.shard(range).cloned())
                {
                    return Ok(found);
                }
                let why = match self.archives.lock().get(&key) {
                    Some(ArchiveState::Archiving) => format!(
                        "shard [{:#x}, {:?}) of `{collection}` is being archived right now",
                        range.start, range.end
                    ),
                    Some(ArchiveState::Restoring { since }) => format!(
                        "shard [{:#x}, {:?}) of `{collection}` is archived and being restored (for {} ms so far)",
                        range.start, range.end, since.elapsed().as_millis()
                    ),
                    Some(ArchiveState::RestoreFailed { why, at }) => {
                        return Err(Unheld::Failed {
                            why: why.clone(),
                            retry_after: RESTORE_RETRY.saturating_sub(at.elapsed()),
                        })
                    }
                    _ => format!(
                        "shard [{:#x}, {:?}) of `{collection}` is archived; restoring it",
                        range.start, range.end
                    ),
                };
                return Err(Unheld::Restoring {
                    why,
                    retry_after: Duration::from_secs(2),
                });
            }
        }
    }

    /// Restore one archived shard: download its newest snapshot (or, with none archived,
    /// replay the log), open it, serve it, and report it restored.
    async fn restore(self: Arc<Self>, spec: CollectionSpec, key: ArchiveKey, primary: bool) {
        let (collection, incarnation, range) = key.clone();
        let started = Instant::now();
        match self.restore_inner(&spec, incarnation, range, primary).await {
            Ok(hosted) => {
                tracing::info!(%collection, ?range, origin = ?hosted.origin,
                    millis = started.elapsed().as_millis() as u64,
                    "archived shard restored; catching up from the log");
                self.set_state(&key, None);
                self.synced.send_modify(|v| *v += 1);
                let hook = self.archive.read().clone();
                if let Some(callback) = hook.and_then(|h| h.on_restored) {
                    callback(&collection, range);
                }
            }
            Err(why) => {
                tracing::error!(%collection, ?range, %why, "restoring an archived shard failed");
                self.set_state(
                    &key,
                    Some(ArchiveState::RestoreFailed {
                        at: Instant::now(),
                        why,
                    }),
                );
            }
        }
    }

    async fn restore_inner(
        self: &Arc<Self>,
        spec: &CollectionSpec,
        incarnation: u64,
        range: RingRange,
        primary: bool,
    ) -> Result<Arc<HostedShard>, String> {
        let hook = self
            .archive
            .read()
            .clone()
            .ok_or("the archive tier is not configured (serve --archive-url)")?;
        check_dir_name(&spec.name).map_err(|e| e.to_string())?;
        let dir = self.shard_dir(&spec.name, incarnation, range);
        let started = Instant::now();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let scratch = dir.with_file_name(format!(".{name}.restoring"));
        let (d, sc) = (dir.clone(), scratch.clone());
        let existed = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&sc);
            if let Some(parent) = d.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Ok::<_, std::io::Error>(d.exists())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("preparing {}: {e}", dir.display()))?;
        let request = SnapshotRequest {
            collection: spec.name.clone(),
            incarnation,
            range,
            dimension: spec.dimension as usize,
            distance: spec.distance,
        };
        let origin = if existed {
            // Left by an archive that did not finish: a consistent shard, caught up below.
            ShardOrigin::Local
        } else {
            match hook.store.get(request, scratch.clone()).await? {
                Some((fetched, archived)) => {
                    let (from, to) = (scratch.clone(), dir.clone());
                    tokio::task::spawn_blocking(move || std::fs::rename(&from, &to))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("moving the restored files into place: {e}"))?;
                    ShardOrigin::Archive {
                        location: archived.location,
                        bytes: fetched.bytes,
                        millis: started.elapsed().as_millis() as u64,
                    }
                }
                None => {
                    tracing::warn!(collection = %spec.name, ?range,
                        "nothing archived for this shard; rebuilding it from the log");
                    ShardOrigin::Log
                }
            }
        };
        let config = ShardConfig::of_collection(spec, self.config.engine_of(Tier::Archive));
        let d = dir.clone();
        let shard = crate::background::spawn("shard-restore", move || open_or_rebuild(&d, config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let _one_at_a_time = self.sync_lock.lock().await;
        let current = self
            .collection(&spec.name)
            .filter(|c| c.incarnation == incarnation);
        let Some(current) = current else {
            return Err(format!(
                "collection `{}` is no longer hosted here",
                spec.name
            ));
        };
        let hosted = self.start_hosted(spec, range, primary, shard, origin);
        hosted.restored.store(true, Ordering::Relaxed);
        let mut shards = current.shards.clone();
        shards.retain(|s| s.range != range);
        shards.push(Arc::clone(&hosted));
        shards.sort_by_key(|s| (s.retired(), s.range.start));
        self.collections.write().insert(
            spec.name.clone(),
            Arc::new(HostedCollection {
                spec: current.spec.clone(),
                incarnation,
                epoch: current.epoch,
                shards,
            }),
        );
        Ok(hosted)
    }

    /// Archive a held shard in the background, unless that runs or failed a moment ago.
    fn archive_later(
        self: &Arc<Self>,
        spec: &CollectionSpec,
        incarnation: u64,
        hosted: &Arc<HostedShard>,
    ) {
        let key: ArchiveKey = (spec.name.clone(), incarnation, hosted.range);
        if let Some(ArchiveState::ArchiveFailed { at, .. }) = self.archives.lock().get(&key) {
            if at.elapsed() < ARCHIVE_RETRY {
                return;
            }
        }
        if hosted.archiving.swap(true, Ordering::AcqRel) {
            return;
        }
        self.set_state(&key, Some(ArchiveState::Archiving));
        let host = Arc::clone(self);
        let (spec, hosted) = (spec.clone(), Arc::clone(hosted));
        tokio::spawn(async move {
            let started = Instant::now();
            match host.archive_shard(&spec, incarnation, &hosted).await {
                Ok(archived) => {
                    tracing::info!(collection = %spec.name, range = ?hosted.range,
                        location = %archived.location, bytes = archived.bytes,
                        next_offset = archived.next_offset,
                        secs = started.elapsed().as_secs_f64(),
                        "shard archived; its local files are removed");
                    // The last holder of its environment: closed before a restore opens it.
                    drop(hosted);
                    host.set_state(&key, Some(ArchiveState::Archived(archived)));
                }
                Err(why) => {
                    tracing::error!(collection = %spec.name, range = ?hosted.range, %why,
                        "archiving the shard failed; it keeps serving from here");
                    if hosted.stop.swap(false, Ordering::AcqRel) {
                        host.spawn_consumers(&spec, &hosted);
                    }
                    hosted.archiving.store(false, Ordering::Release);
                    host.set_state(
                        &key,
                        Some(ArchiveState::ArchiveFailed {
                            at: Instant::now(),
                            why,
                        }),
                    );
                }
            }
        });
    }

    /// Stop the shard's consumer, upload its snapshot (the first replica; the others
    /// wait for it to exist), then stop serving it here and remove its directory.
    async fn archive_shard(
        self: &Arc<Self>,
        spec: &CollectionSpec,
        incarnation: u64,
        hosted: &Arc<HostedShard>,
    ) -> Result<Archived, String> {
        let hook = self
            .archive
            .read()
            .clone()
            .ok_or("the archive tier is not configured")?;
        let request = SnapshotRequest {
            collection: spec.name.clone(),
            incarnation,
            range: hosted.range,
            dimension: spec.dimension as usize,
            distance: spec.distance,
        };
        let archived = if hosted.primary.load(Ordering::Relaxed) {
            hosted.stop.store(true, Ordering::Release);
            let mut consuming = hosted.consuming.subscribe();
            tokio::time::timeout(STOP_WAIT, consuming.wait_for(|running| !*running))
                .await
                .map_err(|_| format!("the shard's consumer did not stop within {STOP_WAIT:?}"))?
                .map_err(|e| e.to_string())?;
            let dir = self.config.data_dir.join("archive-scratch").join(format!(
                "{}-{incarnation}-{:016x}",
                spec.name, hosted.range.start
            ));
            let shard = Arc::clone(&hosted.shard);
            let manifest = crate::snapshot::Manifest {
                format: crate::snapshot::SNAPSHOT_FORMAT,
                collection: spec.name.clone(),
                incarnation,
                range: hosted.range,
                dimension: spec.dimension as usize,
                distance: spec.distance,
                engine: shard.engine(),
                from: self.config.region.clone(),
                files: Vec::new(),
            };
            let scratch = dir.clone();
            let partition = hosted.partition;
            let put = crate::background::spawn("archive-snapshot", move || {
                let _ = std::fs::remove_dir_all(&scratch);
                let names = shard.snapshot_into(&scratch).map_err(|e| e.to_string())?;
                let mut files = Vec::new();
                for name in names {
                    let len = std::fs::metadata(scratch.join(&name))
                        .map_err(|e| e.to_string())?
                        .len();
                    files.push((name, len));
                }
                let hlc_floor = shard.hlc_floor().map_err(|e| e.to_string())?.0;
                Ok::<_, String>(ArchivePut {
                    manifest: crate::snapshot::Manifest { files, ..manifest },
                    partition,
                    next_offset: shard.next_offset(),
                    hlc_floor,
                    dir: scratch,
                })
            })
            .await
            .map_err(|e| e.to_string())?;
            let put = match put {
                Ok(put) => put,
                Err(why) => {
                    let _ =
                        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
                    return Err(format!("writing the snapshot: {why}"));
                }
            };
            let uploaded = hook.store.put(put).await;
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            uploaded?
        } else {
            hook.store
                .locate(request)
                .await?
                .ok_or("waiting for the first replica to upload the archive")?
        };
        // Stop serving it here; searches in flight finish on the shard they hold.
        {
            let _one_at_a_time = self.sync_lock.lock().await;
            hosted.stop.store(true, Ordering::Release);
            if let Some(current) = self
                .collection(&spec.name)
                .filter(|c| c.incarnation == incarnation)
            {
                let shards = current
                    .shards
                    .iter()
                    .filter(|s| !Arc::ptr_eq(s, hosted))
                    .cloned()
                    .collect();
                self.collections.write().insert(
                    spec.name.clone(),
                    Arc::new(HostedCollection {
                        spec: current.spec.clone(),
                        incarnation,
                        epoch: current.epoch,
                        shards,
                    }),
                );
            }
        }
        self.synced.send_modify(|v| *v += 1);
        // Searches in flight finish on the shard they hold; the LMDB environment must be
        // closed (its last holder gone) before a restore opens the same path again.
        let deadline = Instant::now() + STOP_WAIT;
        while Arc::strong_count(hosted) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let dir = self.shard_dir(&spec.name, incarnation, hosted.range);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", dir.display())),
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(archived)
    }

    /// Look up, once, where the archive of a range this node is assigned in the archive
    /// tier lies (for `GET /cluster`).
    fn locate_later(self: &Arc<Self>, spec: &CollectionSpec, incarnation: u64, range: RingRange) {
        let Some(hook) = self.archive.read().clone() else {
            return;
        };
        let key: ArchiveKey = (spec.name.clone(), incarnation, range);
        {
            let mut archives = self.archives.lock();
            if archives.contains_key(&key) {
                return;
            }
            archives.insert(key.clone(), ArchiveState::Locating);
        }
        let request = SnapshotRequest {
            collection: spec.name.clone(),
            incarnation,
            range,
            dimension: spec.dimension as usize,
            distance: spec.distance,
        };
        let host = Arc::clone(self);
        tokio::spawn(async move {
            let found = hook.store.locate(request).await;
            let mut archives = host.archives.lock();
            if matches!(archives.get(&key), Some(ArchiveState::Locating)) {
                match found {
                    Ok(Some(archived)) => {
                        archives.insert(key, ArchiveState::Archived(archived));
                    }
                    // Keep `Locating`: not looked up again; a read restores it (or
                    // rebuilds it from the log when nothing is archived).
                    Ok(None) => {}
                    Err(why) => {
                        tracing::warn!(collection = %key.0, range = ?key.2, %why,
                            "could not look up an archived shard");
                    }
                }
            }
        });
    }
}

/// How long a range new to this node waits for the archive to say whether it holds a
/// snapshot of it.
const ARCHIVE_LOOKUP: Duration = Duration::from_secs(5);

/// The archive tier as a source of snapshots, for a range new to this node that no holder
/// could give (its `from` becomes the archived snapshot's location).
struct ArchiveSnapshot {
    store: Arc<dyn crate::snapshot::ShardArchive>,
}

impl SnapshotSource for ArchiveSnapshot {
    fn fetch(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> futures::future::BoxFuture<'static, Result<Option<Fetched>, String>> {
        let located = self.store.locate(request.clone());
        let got = self.store.get(request, into);
        Box::pin(async move {
            // Asked for every range new to this node: a store that does not answer must
            // not hold its open up for long (the log is the fallback).
            match tokio::time::timeout(ARCHIVE_LOOKUP, located).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(why)) => return Err(format!("looking the archive up: {why}")),
                Err(_) => {
                    return Err(format!(
                        "the archive did not answer within {ARCHIVE_LOOKUP:?}"
                    ))
                }
            }
            Ok(got.await?.map(|(mut fetched, archived)| {
                fetched.manifest.from = archived.location;
                fetched
            }))
        })
    }
}

/// A snapshot of a shard held by this node, copied straight into place.
struct LocalSnapshot {
    held: Arc<HostedShard>,
    node: String,
}

impl SnapshotSource for LocalSnapshot {
    fn fetch(
        &self,
        request: SnapshotRequest,
        into: PathBuf,
    ) -> futures::future::BoxFuture<'static, Result<Option<Fetched>, String>> {
        let held = Arc::clone(&self.held);
        let node = self.node.clone();
        Box::pin(async move {
            let copy = crate::background::spawn("snapshot-copy", move || {
                let names = held.shard.snapshot_into(&into).map_err(|e| e.to_string())?;
                let mut files = Vec::new();
                for name in names {
                    let len = std::fs::metadata(into.join(&name))
                        .map_err(|e| e.to_string())?
                        .len();
                    files.push((name, len));
                }
                let manifest = crate::snapshot::Manifest {
                    format: crate::snapshot::SNAPSHOT_FORMAT,
                    collection: request.collection.clone(),
                    incarnation: request.incarnation,
                    range: held.range,
                    dimension: request.dimension,
                    distance: request.distance,
                    engine: held.shard.engine(),
                    from: node,
                    files,
                };
                manifest.check(&request)?;
                let bytes = manifest.files.iter().map(|(_, n)| n).sum();
                Ok::<_, String>(Some(Fetched { manifest, bytes }))
            });
            copy.await.map_err(|e| e.to_string())?
        })
    }
}

/// Fetch a snapshot for a shard this node has no directory for into a scratch directory
/// beside `dir`, then move it into place. `None` (and nothing left behind) when no holder
/// gives one or it fails: the caller replays the log instead.
async fn receive_snapshot(
    source: &dyn SnapshotSource,
    request: SnapshotRequest,
    dir: &std::path::Path,
) -> Option<Fetched> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let scratch = dir.with_file_name(format!(".{name}.receiving"));
    let parent = dir.parent()?.to_path_buf();
    let cleared = scratch.clone();
    let ready = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&cleared);
        std::fs::create_dir_all(&parent)
    })
    .await;
    if !matches!(ready, Ok(Ok(()))) {
        return None;
    }
    let range = request.range;
    match source.fetch(request, scratch.clone()).await {
        Ok(Some(fetched)) => {
            let to = dir.to_path_buf();
            let from = scratch.clone();
            match tokio::task::spawn_blocking(move || std::fs::rename(&from, &to)).await {
                Ok(Ok(())) => Some(fetched),
                _ => {
                    tracing::warn!(
                        ?range,
                        "could not move a received snapshot into place; replaying the log"
                    );
                    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&scratch))
                        .await;
                    None
                }
            }
        }
        Ok(None) => None,
        Err(why) => {
            tracing::warn!(?range, %why, "no snapshot received; replaying the log");
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&scratch)).await;
            None
        }
    }
}

/// Open a shard; one written in a store format that cannot be upgraded in place
/// ([`Error::OldFormat`]: keyed by id alone, with vectors of tenants) is removed and
/// opened empty, so that its consumer rebuilds it from the log, the source of its data.
fn open_or_rebuild(dir: &std::path::Path, config: ShardConfig) -> Result<Shard, Error> {
    match Shard::open(dir, config.clone()) {
        Err(err @ Error::OldFormat { .. }) => {
            tracing::warn!(%err, "rebuilding the shard from the log");
            std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            Shard::open(dir, config)
        }
        other => other,
    }
}

/// Check that a collection name is one plain directory name, so that
/// [`collection_dir`] stays under `DATA_DIR/shards/`: a valid collection name (see
/// [`hektor_topics::topic::validate_collection_name`]), so no path separator, no `..`
/// and not absolute. The catalog checks every name it applies; this is the last check
/// before a name becomes a path that is created or removed.
pub fn check_dir_name(collection: &str) -> Result<(), Error> {
    let mut parts = std::path::Path::new(collection).components();
    let one_plain_part = matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    );
    if !one_plain_part || collection.contains(['/', '\\']) || collection.contains("..") {
        return Err(Error::InvalidConfig(format!(
            "collection name `{}` is not a plain directory name",
            collection.escape_debug()
        )));
    }
    validate_collection_name(collection).map_err(|err| Error::InvalidConfig(err.to_string()))
}

/// Where the shards of one incarnation of a collection live:
/// `DATA_DIR/shards/<collection>/<incarnation>/` (check the name with [`check_dir_name`]
/// first).
pub fn collection_dir(data_dir: &std::path::Path, collection: &str, incarnation: u64) -> PathBuf {
    data_dir
        .join("shards")
        .join(collection)
        .join(incarnation.to_string())
}

/// Where one shard lives: `DATA_DIR/shards/<collection>/<incarnation>/<start>-<end>`, the
/// range's bounds in hex (`end` for 2^64).
pub fn shard_dir(
    data_dir: &std::path::Path,
    collection: &str,
    incarnation: u64,
    range: RingRange,
) -> PathBuf {
    let end = range
        .end
        .map_or_else(|| "end".to_owned(), |e| format!("{e:016x}"));
    collection_dir(data_dir, collection, incarnation).join(format!("{:016x}-{end}", range.start))
}

fn remove_later(dir: PathBuf) {
    // Give in-flight searches and the consumer time to let go of the environment.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
    });
}

/// Why a record cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub reason: String,
    /// Known without a ring position (undecodable, wrong collection or partition): the
    /// shard at the partition's start reports it; otherwise the shard holding its position.
    pub partition_level: bool,
}

/// Turn one stored record into an op for the shard holding `range` of `partition`:
/// records outside the range are [`ShardOp::Pass`] (they still advance the partition's
/// clock floor, so every shard of a partition stamps alike); poison records are an error.
pub fn to_range_op(
    spec: &CollectionSpec,
    partition: u32,
    range: RingRange,
    stored: &StoredRecord,
) -> Result<ShardOp, Poison> {
    to_range_op_from(spec, partition, range, stored).map(|(op, _)| op)
}

/// [`to_range_op`], with the region that accepted the record (its `origin`).
pub fn to_range_op_from(
    spec: &CollectionSpec,
    partition: u32,
    range: RingRange,
    stored: &StoredRecord,
) -> Result<(ShardOp, String), Poison> {
    let record: VectorRecord =
        codec::from_log_record(&stored.record).map_err(|e| partition_poison(e.to_string()))?;
    let origin = record.origin().to_owned();
    if let VectorRecord::Tick(tick) = &record {
        // A closed timestamp: every shard of the partition passes it (its floor advances).
        if tick.collection != spec.name || tick.partition != partition {
            return Err(partition_poison(format!(
                "tick for collection `{}` partition {}, found in `{}` partition {partition}",
                tick.collection, tick.partition, spec.name
            )));
        }
        return Ok((ShardOp::Pass { hlc: tick.hlc }, origin));
    }
    let position = ring::position(record.tenant(), record.id());
    if record.collection() == spec.name
        && ring::partition_of(position, spec.partitions) == partition
        && !range.contains(position)
    {
        return Ok((ShardOp::Pass { hlc: record.hlc() }, origin));
    }
    let partition_level = record.collection() != spec.name
        || ring::partition_of(position, spec.partitions) != partition;
    op_of(spec, partition, record)
        .map(|op| (op, origin))
        .map_err(|reason| Poison {
            partition_level,
            reason,
        })
}

fn partition_poison(reason: String) -> Poison {
    Poison {
        reason,
        partition_level: true,
    }
}

/// Turn one stored record into a shard op, or the reason it is poison.
pub fn to_op(
    spec: &CollectionSpec,
    partition: u32,
    stored: &StoredRecord,
) -> Result<ShardOp, String> {
    let record: VectorRecord = codec::from_log_record(&stored.record).map_err(|e| e.to_string())?;
    op_of(spec, partition, record)
}

/// A decoded record as a shard op, or the reason it is poison.
fn op_of(spec: &CollectionSpec, partition: u32, record: VectorRecord) -> Result<ShardOp, String> {
    if record.collection() != spec.name {
        return Err(format!(
            "record is for collection `{}`, not `{}`",
            record.collection(),
            spec.name
        ));
    }
    if let VectorRecord::Tick(tick) = &record {
        if tick.partition != partition {
            return Err(format!(
                "tick for partition {}, found in {partition}",
                tick.partition
            ));
        }
        return Ok(ShardOp::Pass { hlc: tick.hlc });
    }
    let position = ring::position(record.tenant(), record.id());
    let expected = ring::partition_of(position, spec.partitions);
    if expected != partition {
        return Err(format!(
            "record belongs to partition {expected} by its ring position, found in {partition}"
        ));
    }
    Ok(match record {
        VectorRecord::Upsert(u) => {
            if u.vector.len() != spec.dimension as usize {
                return Err(format!(
                    "vector has {} dimensions, collection has {}",
                    u.vector.len(),
                    spec.dimension
                ));
            }
            if u.vector.iter().any(|x| !x.is_finite()) {
                return Err("vector has a value that is not finite".into());
            }
            if spec.distance == Distance::Cosine && u.vector.iter().all(|x| *x == 0.0) {
                return Err("a zero vector has no cosine similarity".into());
            }
            ShardOp::Upsert {
                id: u.id,
                tenant: u.tenant,
                ring: position,
                vector: u.vector,
                payload: u.payload,
                hlc: u.hlc,
            }
        }
        VectorRecord::Delete(d) => ShardOp::Delete {
            id: d.id,
            tenant: d.tenant,
            hlc: d.hlc,
        },
        VectorRecord::Tick(t) => ShardOp::Pass { hlc: t.hlc },
    })
}

/// Run one of a shard's consumers (`what`, for the report) until the shard stops; a
/// consumer that panics is reported (the shard's [`HostedShard::failure`]) and restarted
/// after a backoff, never left dead.
async fn supervise<F, Fut>(hosted: Arc<HostedShard>, what: String, run: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        match tokio::spawn(run()).await {
            Ok(()) => return,
            Err(err) => {
                let why = format!("{what} panicked: {err}; restarting it");
                tracing::error!(collection = %hosted.collection, partition = hosted.partition, %why);
                hosted.fail(why);
            }
        }
        if hosted.stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn consume(log: Arc<dyn Log>, spec: CollectionSpec, hosted: Arc<HostedShard>) {
    let mut backoff = Duration::from_millis(500);
    let topic = topic_name(&spec.name, TopicKind::Vectors);
    let dlq = topic_name(&spec.name, TopicKind::DeadLetter);
    let mut last_hw_poll = std::time::Instant::now() - Duration::from_secs(10);
    let head = ring::partition_range(hosted.partition, spec.partitions).start == hosted.range.start;
    // Whether `high_watermark` holds a value read from the log (not just the open offset).
    let mut hw_known = false;
    // Since when reads have come back empty.
    let mut idle_since: Option<Instant> = None;
    while !hosted.stop.load(Ordering::Relaxed) {
        if last_hw_poll.elapsed() > Duration::from_millis(500) {
            if let Ok(hw) = log.high_watermark(&topic, hosted.partition).await {
                hosted.high_watermark.store(hw, Ordering::Relaxed);
                hw_known = true;
            }
            last_hw_poll = std::time::Instant::now();
        }
        let from = hosted.shard.next_offset();
        let batch = match log
            .read(
                &topic,
                hosted.partition,
                from,
                READ_BATCH,
                Duration::from_millis(200),
            )
            .await
        {
            Ok(batch) => batch,
            Err(hektor_log::LogError::UnknownTopic(_)) => return,
            Err(err) => {
                tracing::warn!(%err, %topic, partition = hosted.partition, "read failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Caught up: fold the tail into the index; a short one too, once the
            // partition has been quiet for a while (it would be scanned exactly forever).
            let quiet = *idle_since.get_or_insert_with(Instant::now);
            let pending = hosted.shard.pending();
            if pending >= BUILD_WHEN_IDLE
                || (pending > 0
                    && quiet.elapsed() >= BUILD_SHORT_TAIL_AFTER
                    && hosted.shard.builds_beside_applies())
            {
                if hosted.shard.builds_beside_applies() {
                    request_build(&hosted);
                } else {
                    build(&hosted.shard).await;
                }
            } else {
                hosted.caught_up.store(true, Ordering::Relaxed);
                checkpoint(&hosted.shard, false, true).await;
            }
            continue;
        }
        idle_since = None;
        let mut ops = Vec::with_capacity(batch.len());
        let mut provenance = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for stored in &batch {
            match to_range_op_from(&spec, hosted.partition, hosted.range, stored) {
                Ok((op, origin)) => {
                    ops.push((stored.offset, op));
                    provenance.push(Provenance {
                        origin,
                        digest: 0,
                        seen: seen_of(stored),
                    });
                }
                Err(Poison {
                    reason,
                    partition_level,
                }) => {
                    ops.push((stored.offset, ShardOp::Skip));
                    provenance.push(Provenance::default());
                    if !hosted.primary.load(Ordering::Relaxed) || (partition_level && !head) {
                        continue;
                    }
                    poison.push(
                        LogRecord {
                            key: stored.record.key.clone(),
                            value: stored.record.value.clone(),
                            headers: stored.record.headers.clone(),
                        }
                        .with_header(DLQ_REASON_HEADER, reason)
                        .with_header(
                            DLQ_SOURCE_HEADER,
                            format!("{topic}/{}/{}", hosted.partition, stored.offset),
                        ),
                    );
                }
            }
        }
        if !poison.is_empty() {
            // Dead-letter before applying: a crash in between re-sends (at least once),
            // never loses the poison record.
            let n = poison.len() as u64;
            loop {
                match log.append(&dlq, 0, poison.clone()).await {
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(%err, "dead-letter append failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if hosted.stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                }
            }
            hosted.dead_lettered.fetch_add(n, Ordering::Relaxed);
        }
        let shard = Arc::clone(&hosted.shard);
        let failed = match tokio::task::spawn_blocking(move || {
            shard.apply_from(Source::Local, &ops, &provenance)
        })
        .await
        {
            Ok(Ok(report)) => {
                hosted
                    .conflicts
                    .fetch_add(report.conflicts as u64, Ordering::Relaxed);
                None
            }
            Ok(Err(err)) => Some(format!("applying offsets from {from} failed: {err}")),
            // The apply is one LMDB transaction: a panic aborts it, nothing is half-written.
            Err(err) => Some(format!("applying offsets from {from} panicked: {err}")),
        };
        if let Some(why) = failed {
            tracing::error!(%topic, partition = hosted.partition, %why, "retrying");
            hosted.fail(why);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        }
        if hosted.failure.lock().take().is_some() {
            tracing::info!(%topic, partition = hosted.partition, "the shard follows its partition again");
        }
        backoff = Duration::from_millis(500);
        hosted.applied.send_replace(hosted.shard.next_offset());
        // Reached the end of the partition as it was at the last poll: caught up, even if
        // writes keep coming (a busy partition never gives an empty read), once the index
        // holds nearly everything.
        if hw_known
            && !hosted.caught_up()
            && hosted.next_offset() >= hosted.high_watermark.load(Ordering::Relaxed)
        {
            if hosted.shard.pending() >= BUILD_WHEN_IDLE {
                build(&hosted.shard).await;
            }
            hosted.caught_up.store(true, Ordering::Relaxed);
        }
        // Still catching up, but the exactly-searched tail is getting long: a hot shard
        // builds beside the applies; another engine's build stalls them, so it waits
        // for a long tail.
        if hosted.shard.builds_beside_applies() {
            if hosted.shard.pending() >= BUILD_BESIDE_WHEN_PENDING {
                request_build(&hosted);
            }
        } else if hosted.shard.pending() >= BUILD_WHEN_PENDING {
            build(&hosted.shard).await;
        }
    }
}

/// The `seen` vector a record carries ([`hektor_merge::stamp::SEEN_HEADER`]), if it
/// carries a valid one (a bad one only loses the conflict count of that write).
fn seen_of(stored: &StoredRecord) -> Option<hektor_merge::VersionVector> {
    let (_, value) = stored
        .record
        .headers
        .iter()
        .find(|(k, _)| k == hektor_merge::stamp::SEEN_HEADER)?;
    hektor_merge::VersionVector::from_header(value).ok()
}

/// Follow region `region`'s partition as MirrorMaker 2 copied it into this region's log
/// (`<region>.hektor.C.vectors`, same partition numbers) and merge it into the shard
/// ([`Source::Mirror`]): records outside the shard's range only advance the source's
/// clock; poison records are skipped (the origin region dead-letters them); copies
/// MirrorMaker redelivers are recognised by digest. Until MirrorMaker has created the
/// topic, it waits.
async fn follow_mirror(
    log: Arc<dyn Log>,
    spec: CollectionSpec,
    hosted: Arc<HostedShard>,
    region: String,
    clock: Option<Arc<HlcClock>>,
) {
    let topic = format!("{region}.{}", topic_name(&spec.name, TopicKind::Vectors));
    let mut backoff = Duration::from_millis(500);
    let mut from: Option<u64> = None;
    let mut last_hw_poll = Instant::now() - Duration::from_secs(10);
    while !hosted.stop.load(Ordering::Relaxed) {
        let start = match from {
            Some(from) => from,
            None => {
                let shard = Arc::clone(&hosted.shard);
                let r = region.clone();
                match tokio::task::spawn_blocking(move || shard.source_next_offset(&r)).await {
                    Ok(Ok(next)) => *from.insert(next),
                    Ok(Err(err)) => {
                        tracing::warn!(%err, %topic, "reading a mirrored source's offset failed; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(%err, %topic, "reading a mirrored source's offset panicked; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
        };
        if last_hw_poll.elapsed() > Duration::from_millis(500) {
            if let Ok(hw) = log.high_watermark(&topic, hosted.partition).await {
                hosted
                    .mirrored
                    .lock()
                    .entry(region.clone())
                    .or_default()
                    .high_watermark = hw;
            }
            last_hw_poll = Instant::now();
        }
        let batch = match log
            .read(
                &topic,
                hosted.partition,
                start,
                READ_BATCH,
                Duration::from_millis(200),
            )
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                // Most often: MirrorMaker has not created the topic yet.
                tracing::debug!(%err, %topic, partition = hosted.partition, "mirror read failed; retrying");
                tokio::time::sleep(Duration::from_millis(1000)).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let mut ops = Vec::with_capacity(batch.len());
        let mut provenance = Vec::with_capacity(batch.len());
        let mut newest = Hlc(0);
        let mut acknowledged = hektor_merge::VersionVector::new();
        for stored in &batch {
            let (op, origin) = to_range_op_from(&spec, hosted.partition, hosted.range, stored)
                .unwrap_or((ShardOp::Skip, String::new()));
            if let ShardOp::Upsert { hlc, .. }
            | ShardOp::Delete { hlc, .. }
            | ShardOp::Pass { hlc } = &op
            {
                newest = newest.max(*hlc);
            }
            ops.push((stored.offset, op));
            let seen = seen_of(stored);
            if let Some(seen) = &seen {
                acknowledged.join(seen);
            }
            provenance.push(Provenance {
                origin,
                digest: hektor_merge::digest(&stored.record.value),
                seen,
            });
        }
        let shard = Arc::clone(&hosted.shard);
        let r = region.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let report = shard.apply_from(Source::Mirror { region: &r }, &ops, &provenance)?;
            let floor = shard.source_floor(&r)?;
            Ok::<_, crate::error::Error>((report, floor))
        })
        .await;
        match applied {
            Ok(Ok((report, floor))) => {
                hosted
                    .conflicts
                    .fetch_add(report.conflicts as u64, Ordering::Relaxed);
                from = Some(report.next_offset);
                backoff = Duration::from_millis(500);
                let mut failure = hosted.failure.lock();
                if failure
                    .as_deref()
                    .is_some_and(|f| f.starts_with(&format!("merging region `{region}`")))
                {
                    *failure = None;
                }
                drop(failure);
                if let Some(clock) = &clock {
                    clock.observe(newest);
                }
                let mut mirrored = hosted.mirrored.lock();
                let progress = mirrored.entry(region.clone()).or_default();
                progress.next_offset = report.next_offset;
                progress.duplicates += report.duplicates as u64;
                progress.floor = floor.0;
                progress.high_watermark = progress.high_watermark.max(report.next_offset);
                drop(mirrored);
                hosted
                    .acknowledged
                    .lock()
                    .entry(region.clone())
                    .or_default()
                    .join(&acknowledged);
                hosted.merges.send_modify(|n| *n += 1);
            }
            Ok(Err(err)) => {
                let why = format!(
                    "merging region `{region}`'s records from offset {start} failed: {err}"
                );
                tracing::error!(%topic, partition = hosted.partition, %why, "retrying");
                hosted.fail(why);
                from = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(err) => {
                let why = format!(
                    "merging region `{region}`'s records from offset {start} panicked: {err}"
                );
                tracing::error!(%topic, partition = hosted.partition, %why, "retrying");
                hosted.fail(why);
                from = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Build a shard's index on a blocking thread (applies wait for it: one LMDB writer),
/// then save the hot graph if a checkpoint is due.
async fn build(shard: &Arc<Shard>) {
    let built = Arc::clone(shard);
    let path = shard.path().display().to_string();
    match tokio::task::spawn_blocking(move || built.build_index()).await {
        Ok(Ok(report)) => tracing::debug!(%path, indexed = report.indexed, "index built"),
        Ok(Err(err)) => tracing::error!(%err, %path, "index build failed"),
        Err(err) => tracing::error!(%err, %path, "index build panicked"),
    }
    checkpoint(shard, false, false).await;
}

/// Start a builder for the shard in the background unless one runs: it builds until
/// fewer than [`BUILD_WHEN_IDLE`] items wait, while the consumer goes on applying (for
/// engines that fold beside the applies; see [`Shard::build_index`]).
fn request_build(hosted: &Arc<HostedShard>) {
    if hosted.building.swap(true, Ordering::AcqRel) {
        return;
    }
    let hosted = Arc::clone(hosted);
    tokio::spawn(async move {
        loop {
            build(&hosted.shard).await;
            if hosted.stop.load(Ordering::Relaxed) || hosted.shard.pending() < BUILD_WHEN_IDLE {
                break;
            }
        }
        hosted.building.store(false, Ordering::Release);
    });
}

/// Save a shard's hot graph on a blocking thread when due (see [`Shard::checkpoint`]);
/// a failed save is logged and costs only the next open's time (it replays or rebuilds).
async fn checkpoint(shard: &Arc<Shard>, force: bool, idle: bool) {
    let saving = Arc::clone(shard);
    let path = shard.path().display().to_string();
    match tokio::task::spawn_blocking(move || saving.checkpoint(force, idle)).await {
        Ok(Ok(Some(report))) => tracing::debug!(%path, epoch = report.epoch,
            bytes = report.bytes, items = report.items,
            secs = report.duration.as_secs_f64(), "hot graph saved"),
        Ok(Ok(None)) => {}
        Ok(Err(err)) => tracing::warn!(%err, %path, "saving the hot graph failed"),
        Err(err) => tracing::warn!(%err, %path, "saving the hot graph panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_collection_names_become_directories() {
        assert!(check_dir_name("docs_v2-384").is_ok());
        for bad in [
            "", ".", "..", "../etc", "a/b", "/etc", "a\\b", "a..b", "a b",
        ] {
            assert!(check_dir_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A shard keyed by id alone with tenants' vectors in it (store format 1) is rebuilt:
    /// opened empty from offset 0, so its consumer replays its partition.
    #[test]
    fn an_old_format_shard_with_tenants_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShardConfig::new(2, Distance::Cosine, EngineKind::Exact);
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        let put = ShardOp::Upsert {
            id: "x".into(),
            tenant: Some("t".into()),
            ring: ring::position(Some("t"), "x"),
            vector: vec![1.0, 0.0],
            payload: None,
            hlc: hektor_topics::hlc::Hlc(1),
        };
        shard.apply(&[(0, put)]).unwrap();
        shard.into_format_1();
        assert!(matches!(
            Shard::open(dir.path(), config.clone()),
            Err(Error::OldFormat { .. })
        ));
        let shard = open_or_rebuild(dir.path(), config.clone()).unwrap();
        assert_eq!((shard.len(), shard.next_offset()), (0, 0));
        drop(shard);
        // Rebuilt in the current format: it opens as it is from now on.
        assert!(Shard::open(dir.path(), config).is_ok());
    }
}
