//! The shard host: the indexer role of a node. For every collection in the catalog it
//! opens one [`Shard`] per partition under the data directory and runs a consumer that
//! follows that partition of the vectors topic, applying upserts and deletes in batches.
//!
//! - Exactly-once effect: a shard stores the offset it has applied in the same LMDB
//!   transaction as the vectors, and the consumer resumes from it (crash-safe).
//! - Poison records (undecodable, wrong dimension, wrong collection) go to the
//!   collection's dead-letter topic with the reason in a header; the consumer goes on.
//! - The index is built in the background when the shard is caught up (or the tail grows
//!   large); until then the tail is searched exactly.
//! - Readers wait on [`HostedShard::wait_applied`] for read-your-writes.
//!
//! It does not serve HTTP or merge results across shards: that is `hektor-query`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hektor_topics::catalog::Catalog;
use hektor_topics::codec;
use hektor_topics::log::{Log, LogRecord, StoredRecord};
use hektor_topics::record::{CollectionSpec, Distance, VectorRecord};
use hektor_topics::ring;
use hektor_topics::topic::{topic_name, TopicKind};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::{EngineKind, Error, Shard, ShardConfig, ShardOp};

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

/// Tuning of a host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    pub engine: EngineKind,
}

/// One shard served by this node, and its consumer's progress.
pub struct HostedShard {
    pub collection: String,
    pub partition: u32,
    pub shard: Arc<Shard>,
    applied: watch::Sender<u64>,
    high_watermark: AtomicU64,
    dead_lettered: AtomicU64,
    stop: AtomicBool,
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

    /// Wait until the record at `offset` is applied. Returns false on timeout.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|next| *next > offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The shards of one collection on this node, indexed by partition.
pub struct HostedCollection {
    pub spec: CollectionSpec,
    /// Which creation of this collection name these shards belong to (see
    /// [`Catalog::incarnation`]).
    pub incarnation: u64,
    pub shards: Vec<Arc<HostedShard>>,
}

/// The indexer role: shards and their consumers, following the catalog.
pub struct ShardHost {
    config: HostConfig,
    catalog: Arc<Catalog>,
    collections: RwLock<HashMap<String, Arc<HostedCollection>>>,
    /// Bumped after every sync with the catalog.
    synced: watch::Sender<u64>,
}

/// How long a request for a collection the catalog knows waits for its shards to open.
const OPEN_WAIT: Duration = Duration::from_secs(10);

impl ShardHost {
    /// Open the shards of every collection in the catalog and keep following it.
    pub async fn start(config: HostConfig, catalog: Arc<Catalog>) -> Result<Arc<ShardHost>, Error> {
        let host = Arc::new(ShardHost {
            config,
            catalog,
            collections: RwLock::new(HashMap::new()),
            synced: watch::channel(0).0,
        });
        host.sync().await?;
        let follower = Arc::clone(&host);
        let mut changes = follower.catalog.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Err(err) = follower.sync().await {
                    tracing::error!(%err, "could not open shards for a catalog change");
                }
            }
        });
        Ok(host)
    }

    /// The catalog this host follows.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn collection(&self, name: &str) -> Option<Arc<HostedCollection>> {
        self.collections.read().get(name).cloned()
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

    pub fn collections(&self) -> Vec<Arc<HostedCollection>> {
        self.collections.read().values().cloned().collect()
    }

    fn shard_dir(&self, collection: &str, incarnation: u64, partition: u32) -> PathBuf {
        shard_dir(&self.config.data_dir, collection, incarnation, partition)
    }

    /// Open shards for new collections, stop and remove those of dropped ones.
    async fn sync(self: &Arc<Self>) -> Result<(), Error> {
        let wanted = self.catalog.list_incarnations();
        let current: Vec<(String, u64)> = self
            .collections
            .read()
            .values()
            .map(|c| (c.spec.name.clone(), c.incarnation))
            .collect();
        for (name, incarnation) in current {
            let keep = wanted
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
        for (spec, incarnation) in wanted {
            if self.collections.read().contains_key(&spec.name) {
                continue;
            }
            let hosted = self.open_collection(spec.clone(), incarnation).await?;
            self.collections.write().insert(spec.name.clone(), hosted);
        }
        self.synced.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn open_collection(
        self: &Arc<Self>,
        spec: CollectionSpec,
        incarnation: u64,
    ) -> Result<Arc<HostedCollection>, Error> {
        let mut shards = Vec::with_capacity(spec.partitions as usize);
        for partition in 0..spec.partitions {
            let dir = self.shard_dir(&spec.name, incarnation, partition);
            let config =
                ShardConfig::new(spec.dimension as usize, spec.distance, self.config.engine);
            let shard = tokio::task::spawn_blocking(move || Shard::open(&dir, config))
                .await
                .map_err(|e| Error::Background(e.to_string()))??;
            let next = shard.next_offset();
            let hosted = Arc::new(HostedShard {
                collection: spec.name.clone(),
                partition,
                shard: Arc::new(shard),
                applied: watch::channel(next).0,
                high_watermark: AtomicU64::new(next),
                dead_lettered: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            });
            tokio::spawn(consume(
                Arc::clone(self.catalog.log()),
                spec.clone(),
                Arc::clone(&hosted),
            ));
            shards.push(hosted);
        }
        Ok(Arc::new(HostedCollection {
            spec,
            incarnation,
            shards,
        }))
    }
}

/// Where the shards of one incarnation of a collection live:
/// `DATA_DIR/shards/<collection>/<incarnation>/`.
pub fn collection_dir(data_dir: &std::path::Path, collection: &str, incarnation: u64) -> PathBuf {
    data_dir
        .join("shards")
        .join(collection)
        .join(incarnation.to_string())
}

/// Where one shard lives: `DATA_DIR/shards/<collection>/<incarnation>/p<partition>`.
pub fn shard_dir(
    data_dir: &std::path::Path,
    collection: &str,
    incarnation: u64,
    partition: u32,
) -> PathBuf {
    collection_dir(data_dir, collection, incarnation).join(format!("p{partition:04}"))
}

fn remove_later(dir: PathBuf) {
    // Give in-flight searches and the consumer time to let go of the environment.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
    });
}

/// Turn one stored record into a shard op, or the reason it is poison.
pub fn to_op(
    spec: &CollectionSpec,
    partition: u32,
    stored: &StoredRecord,
) -> Result<ShardOp, String> {
    let record: VectorRecord = codec::from_log_record(&stored.record).map_err(|e| e.to_string())?;
    if record.collection() != spec.name {
        return Err(format!(
            "record is for collection `{}`, not `{}`",
            record.collection(),
            spec.name
        ));
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
                ring: position,
                vector: u.vector,
                payload: u.payload,
                hlc: u.hlc,
            }
        }
        VectorRecord::Delete(d) => ShardOp::Delete {
            id: d.id,
            hlc: d.hlc,
        },
    })
}

async fn consume(log: Arc<dyn Log>, spec: CollectionSpec, hosted: Arc<HostedShard>) {
    let topic = topic_name(&spec.name, TopicKind::Vectors);
    let dlq = topic_name(&spec.name, TopicKind::DeadLetter);
    let mut last_hw_poll = std::time::Instant::now() - Duration::from_secs(10);
    while !hosted.stop.load(Ordering::Relaxed) {
        if last_hw_poll.elapsed() > Duration::from_millis(500) {
            if let Ok(hw) = log.high_watermark(&topic, hosted.partition).await {
                hosted.high_watermark.store(hw, Ordering::Relaxed);
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
            Err(hektor_topics::Error::UnknownTopic(_)) => return,
            Err(err) => {
                tracing::warn!(%err, %topic, partition = hosted.partition, "read failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Caught up: fold the tail into the index.
            if hosted.shard.pending() >= BUILD_WHEN_IDLE {
                build(&hosted.shard).await;
            }
            continue;
        }
        let mut ops = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for stored in &batch {
            match to_op(&spec, hosted.partition, stored) {
                Ok(op) => ops.push((stored.offset, op)),
                Err(reason) => {
                    ops.push((stored.offset, ShardOp::Skip));
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
        match tokio::task::spawn_blocking(move || shard.apply(&ops)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::error!(%err, %topic, partition = hosted.partition, "apply failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => {
                tracing::error!(%err, "apply task panicked");
                return;
            }
        }
        hosted.applied.send_replace(hosted.shard.next_offset());
        // Still catching up, but the exactly-searched tail is getting long.
        if hosted.shard.pending() >= BUILD_WHEN_PENDING {
            build(&hosted.shard).await;
        }
    }
}

/// Build a shard's index on a blocking thread (applies wait for it: one LMDB writer).
async fn build(shard: &Arc<Shard>) {
    let shard = Arc::clone(shard);
    let path = shard.path().display().to_string();
    match tokio::task::spawn_blocking(move || shard.build_index()).await {
        Ok(Ok(report)) => tracing::debug!(%path, indexed = report.indexed, "index built"),
        Ok(Err(err)) => tracing::error!(%err, %path, "index build failed"),
        Err(err) => tracing::error!(%err, %path, "index build panicked"),
    }
}
