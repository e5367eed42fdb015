//! The intake re-partitioner: moves the vector records that any Kafka client wrote to a
//! collection's intake topic (`hektor.C.intake`, any partitioning) into its vectors topic
//! (`hektor.C.vectors`) at their ring partitions.
//!
//! It owns following the intake topics, checking each record, choosing its hybrid logical
//! clock stamp, dead-lettering poison records and remembering how far it got. It does not
//! own the placement rule nor the append (that is [`Writer::append_records`], shared with
//! the HTTP writes), nor the validation rules ([`crate::validate`]), nor the record format
//! ([`hektor_topics::codec`]).
//!
//! # What a record goes through
//!
//! One task per (collection, intake partition) reads batches with `Log::read`. Each record:
//! 1. is decoded (`hektor-encoding` header, or JSON when it has none);
//! 2. must name this collection and pass exactly the rules of an HTTP write
//!    ([`validate_batch`] of a one-item batch: id, tenant, dimension, finite values,
//!    payload);
//! 3. gets its stamp: a record that carries an `hlc` keeps it (refused when it is more than
//!    [`MAX_HLC_AHEAD_MS`] ahead of this node's wall clock); one without gets
//!    [`intake_hlc`], derived from the intake record alone: the Kafka timestamp in ms as the
//!    physical part, the intake offset mod 2^16 as the logical part. An empty `origin`
//!    becomes this node's region. The node's clock observes the stamp (capped at
//!    wall + [`MAX_HLC_AHEAD_MS`]), so a later HTTP write on this node orders after it.
//!
//! Poison records (undecodable, wrong collection, invalid) go to `hektor.C.deadletter`
//! unchanged, with the reason in [`DLQ_REASON_HEADER`] and `hektor.C.intake/partition/offset`
//! in [`DLQ_SOURCE_HEADER`] (the same headers as the shard host's). Then the good records
//! are appended by [`Writer::append_records`]; then the progress is committed.
//!
//! # Progress and what survives a crash
//!
//! Progress is the next intake offset to read, per (collection, incarnation, partition), as
//! a JSON record in the compacted topic [`PROGRESS_TOPIC`] (`hektor.intake-progress`, one
//! partition, key `C/<incarnation>/<partition>`). The incarnation is the offset of the
//! collection's `create` entry in `hektor.catalog`, so a collection dropped and created
//! again starts from the beginning of its new intake topic, never from the old one's
//! progress. A batch's progress is committed only after its dead-letter and vectors appends
//! are durable, so **every intake record is forwarded (or dead-lettered) at least once**.
//! A crash between the appends and the commit forwards that batch again (at most one batch
//! per partition; a dead-lettered record may appear twice in the dead-letter topic).
//!
//! **A duplicate forward rewrites the same value**: it has the same id, tenant, vector and
//! payload. Shards order the writes of one partition by the vectors log itself (each record
//! is stamped `max(its hlc, the partition's floor + 1)`, see `hektor_indexers::shard`), so
//! the re-forward lands as the latest write of its id. One hole remains until the intake
//! forwards transactionally: a direct write of the same id acknowledged between the first
//! forward and the crash is overwritten by the re-forward. (The compacted vectors topic
//! keeps the latest offset per (tenant, id) key, `hektor_topics::record::vector_key`, which
//! is exactly what shards keep.)
//!
//! Order between intake records of one id: the order in which they are forwarded into the
//! vectors topic. Within one intake partition that is the intake order; records of one id
//! in different intake partitions have no defined order. A producer that needs a strict
//! order keys records by id (Kafka's default partitioner then keeps one id in one
//! partition).
//!
//! # Several nodes
//!
//! Every node running [`Intake`] follows every intake partition; on a shared cluster the
//! records are then forwarded once per node, which is harmless by the above, but wasteful.
//! Giving each intake partition one owner is part of the node-roles work.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hektor_log::{Cleanup, Log, LogRecord, StoredRecord, TopicSpec};
use hektor_topics::codec;
use hektor_topics::hlc::{wall_ms, Hlc};
use hektor_topics::record::{CollectionSpec, VectorDelete, VectorRecord, VectorUpsert};
use hektor_topics::topic::{topic_name, TopicKind, DLQ_REASON_HEADER, DLQ_SOURCE_HEADER};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::validate::{validate_batch, DeleteItem, UpsertItem, WriteBatch};
use crate::{IngestError, Writer};

/// The compacted topic holding each intake partition's progress.
pub const PROGRESS_TOPIC: &str = "hektor.intake-progress";
/// How far ahead of this node's wall clock a record's own `hlc` may be.
pub const MAX_HLC_AHEAD_MS: u64 = 60_000;
/// Pause before retrying a failed read or append.
const RETRY: Duration = Duration::from_millis(500);

/// Tuning of the re-partitioner.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Records read (and forwarded, and committed) per batch.
    pub batch: usize,
    /// How long one read waits for records.
    pub wait: Duration,
    /// Kafka replication factor of [`PROGRESS_TOPIC`] (ignored by the embedded log).
    pub replication: u16,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            batch: 1024,
            wait: Duration::from_millis(500),
            replication: 1,
        }
    }
}

/// One progress record of [`PROGRESS_TOPIC`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Progress {
    collection: String,
    incarnation: u64,
    partition: u32,
    /// The next intake offset to forward: everything below is forwarded.
    next: u64,
}

fn progress_key(collection: &str, incarnation: u64, partition: u32) -> String {
    format!("{collection}/{incarnation}/{partition}")
}

/// The spec of [`PROGRESS_TOPIC`].
pub fn progress_topic(replication: u16) -> TopicSpec {
    TopicSpec {
        name: PROGRESS_TOPIC.into(),
        partitions: 1,
        cleanup: Cleanup::Compact,
        replication,
    }
}

/// The tasks following one collection's intake partitions.
struct Follow {
    incarnation: u64,
    next: Vec<Arc<AtomicU64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Follow {
    fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The re-partitioner of a node: follows the catalog and every collection's intake topic.
pub struct Intake {
    writer: Arc<Writer>,
    config: IntakeConfig,
    follows: Mutex<HashMap<String, Follow>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// One sync with the catalog at a time.
    syncing: tokio::sync::Mutex<()>,
    forwarded: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Intake {
    /// Start following the intake topic of every collection in the catalog, and the
    /// catalog's changes. The tasks run until [`Intake::stop`] (dropping the handle does
    /// not stop them).
    pub async fn start(
        writer: Arc<Writer>,
        config: IntakeConfig,
    ) -> Result<Arc<Intake>, IngestError> {
        let log = Arc::clone(writer.catalog().log());
        log.ensure_topic(&progress_topic(config.replication))
            .await?;
        let mut changes = writer.catalog().subscribe();
        let intake = Arc::new(Intake {
            writer,
            config,
            follows: Mutex::new(HashMap::new()),
            supervisor: Mutex::new(None),
            syncing: tokio::sync::Mutex::new(()),
            forwarded: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        });
        intake.sync().await?;
        let follower = Arc::clone(&intake);
        let supervisor = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Err(err) = follower.sync().await {
                    tracing::error!(%err, "intake: could not follow a catalog change");
                }
            }
        });
        *lock(&intake.supervisor) = Some(supervisor);
        Ok(intake)
    }

    /// Stop every task at its next await point, as a crash would (progress already
    /// committed stays; a batch forwarded but not committed is forwarded again by the
    /// next start).
    pub fn stop(&self) {
        if let Some(supervisor) = lock(&self.supervisor).take() {
            supervisor.abort();
        }
        for (_, follow) in lock(&self.follows).drain() {
            follow.abort();
        }
    }

    /// Records forwarded to vectors topics since start (a re-forward counts again).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Records sent to dead-letter topics since start.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// The next intake offset to forward, per partition, of a followed collection.
    pub fn next_offsets(&self, collection: &str) -> Option<Vec<u64>> {
        lock(&self.follows)
            .get(collection)
            .map(|f| f.next.iter().map(|n| n.load(Ordering::Acquire)).collect())
    }

    fn log(&self) -> &Arc<dyn Log> {
        self.writer.catalog().log()
    }

    /// Follow new collections, stop following dropped (or dropped and re-created) ones.
    async fn sync(self: &Arc<Self>) -> Result<(), IngestError> {
        let _one_at_a_time = self.syncing.lock().await;
        let wanted: BTreeMap<String, (CollectionSpec, u64)> = self
            .writer
            .catalog()
            .list_incarnations()
            .into_iter()
            .map(|(spec, incarnation)| (spec.name.clone(), (spec, incarnation)))
            .collect();
        let new: Vec<(CollectionSpec, u64)> = {
            let mut follows = lock(&self.follows);
            follows.retain(|name, follow| {
                let keep = wanted
                    .get(name)
                    .is_some_and(|(_, incarnation)| *incarnation == follow.incarnation);
                if !keep {
                    follow.abort();
                }
                keep
            });
            wanted
                .values()
                .filter(|(spec, _)| !follows.contains_key(&spec.name))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let progress = load_progress(self.log().as_ref()).await?;
        for (spec, incarnation) in new {
            let mut next = Vec::with_capacity(spec.partitions as usize);
            let mut tasks = Vec::with_capacity(spec.partitions as usize);
            for partition in 0..spec.partitions {
                let key = progress_key(&spec.name, incarnation, partition);
                let from = progress.get(&key).copied().unwrap_or(0);
                let cursor = Arc::new(AtomicU64::new(from));
                tasks.push(tokio::spawn(Arc::clone(self).follow(
                    spec.clone(),
                    incarnation,
                    partition,
                    Arc::clone(&cursor),
                )));
                next.push(cursor);
            }
            tracing::debug!(collection = %spec.name, incarnation, "intake: following");
            lock(&self.follows).insert(
                spec.name.clone(),
                Follow {
                    incarnation,
                    next,
                    tasks,
                },
            );
        }
        Ok(())
    }

    /// Forward one intake partition, batch by batch, until the topic is gone or stopped.
    async fn follow(
        self: Arc<Self>,
        spec: CollectionSpec,
        incarnation: u64,
        partition: u32,
        next: Arc<AtomicU64>,
    ) {
        let log = Arc::clone(self.log());
        let intake = topic_name(&spec.name, TopicKind::Intake);
        let dlq = topic_name(&spec.name, TopicKind::DeadLetter);
        let key = progress_key(&spec.name, incarnation, partition);
        loop {
            let from = next.load(Ordering::Acquire);
            let batch = match log
                .read(
                    &intake,
                    partition,
                    from,
                    self.config.batch,
                    self.config.wait,
                )
                .await
            {
                Ok(batch) => batch,
                Err(hektor_log::LogError::UnknownTopic(_)) => {
                    tracing::debug!(%intake, "intake: topic is gone; stop following it");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, %intake, partition, "intake: read failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let Some(last) = batch.last() else { continue };
            let until = last.offset + 1;
            let mut good = Vec::with_capacity(batch.len());
            let mut poison = Vec::new();
            for stored in &batch {
                match prepare(&spec, stored, self.writer.region()) {
                    Ok(record) => {
                        let cap = Hlc::new(wall_ms() + MAX_HLC_AHEAD_MS, 0);
                        self.writer.clock().observe(record.hlc().min(cap));
                        good.push(record);
                    }
                    Err(reason) => {
                        tracing::debug!(%reason, %intake, partition, offset = stored.offset, "intake: dead-lettering");
                        poison.push(dead_letter(&intake, partition, stored, reason));
                    }
                }
            }
            // Dead letters first, then the good records, then the progress: a crash at any
            // point repeats this batch and loses nothing.
            let dead = poison.len() as u64;
            if !poison.is_empty() {
                let sent =
                    retry("dead-letter append", || log.append(&dlq, 0, poison.clone())).await;
                if sent.is_none() {
                    return;
                }
            }
            if !good.is_empty() {
                let sent = retry("forward", || self.writer.append_records(&spec, &good)).await;
                if sent.is_none() {
                    return;
                }
            }
            let progress = match progress_record(&key, &spec.name, incarnation, partition, until) {
                Ok(record) => record,
                Err(err) => {
                    tracing::error!(%err, "intake: cannot encode progress");
                    return;
                }
            };
            let committed = retry("progress commit", || {
                log.append(PROGRESS_TOPIC, 0, vec![progress.clone()])
            })
            .await;
            if committed.is_none() {
                return;
            }
            next.store(until, Ordering::Release);
            self.forwarded
                .fetch_add(good.len() as u64, Ordering::Relaxed);
            self.dead_lettered.fetch_add(dead, Ordering::Relaxed);
        }
    }
}

/// Turn one intake record into the record to forward, or the reason it is poison.
///
/// Decodes it, checks it names `spec`'s collection and passes the HTTP write rules, and
/// stamps it: its own `hlc` if it has one (at most [`MAX_HLC_AHEAD_MS`] ahead of the wall
/// clock), else [`intake_hlc`]; `region` as origin if it has none.
pub fn prepare(
    spec: &CollectionSpec,
    stored: &StoredRecord,
    region: &str,
) -> Result<VectorRecord, String> {
    let record: VectorRecord = codec::from_log_record(&stored.record).map_err(|e| e.to_string())?;
    if record.collection() != spec.name {
        return Err(format!(
            "record is for collection `{}`, but was written to the intake topic of `{}`",
            record.collection(),
            spec.name
        ));
    }
    if matches!(record, VectorRecord::Tick(_)) {
        return Err("a tick (closed timestamp) is written by hektor nodes to the vectors topic, never through the intake".into());
    }
    let own = record.hlc();
    if own != Hlc::default() {
        let limit = wall_ms() + MAX_HLC_AHEAD_MS;
        if own.physical_ms() > limit {
            return Err(format!(
                "hlc {} is {} ms ahead of this node's clock; the limit is {MAX_HLC_AHEAD_MS} ms (leave hlc out to stamp records by their Kafka timestamp)",
                own.0,
                own.physical_ms() - wall_ms()
            ));
        }
    }
    let hlc = if own == Hlc::default() {
        intake_hlc(stored)
    } else {
        own
    };
    let stamp = |origin: String| {
        if origin.is_empty() {
            region.to_owned()
        } else {
            origin
        }
    };
    match record {
        VectorRecord::Upsert(u) => {
            let mut batch = WriteBatch {
                upserts: vec![UpsertItem {
                    id: u.id,
                    vector: u.vector,
                    tenant: u.tenant,
                    payload: u.payload,
                }],
                deletes: Vec::new(),
            };
            validate_batch(spec, &batch).map_err(|e| e.to_string())?;
            let item = batch
                .upserts
                .pop()
                .ok_or_else(|| "internal: the validated item is missing".to_owned())?;
            Ok(VectorRecord::Upsert(VectorUpsert {
                collection: u.collection,
                id: item.id,
                tenant: item.tenant,
                vector: item.vector,
                payload: item.payload,
                hlc,
                origin: stamp(u.origin),
            }))
        }
        VectorRecord::Delete(d) => {
            let batch = WriteBatch {
                upserts: Vec::new(),
                deletes: vec![DeleteItem::Keyed {
                    id: d.id.clone(),
                    tenant: d.tenant.clone(),
                }],
            };
            validate_batch(spec, &batch).map_err(|e| e.to_string())?;
            Ok(VectorRecord::Delete(VectorDelete {
                hlc,
                origin: stamp(d.origin),
                ..d
            }))
        }
        VectorRecord::Tick(_) => Err("a tick is not a write".into()),
    }
}

/// The stamp of an intake record that carries no `hlc`: its Kafka timestamp (ms) as the
/// physical part and its offset mod 2^16 as the logical part. It depends on the intake
/// record alone, so forwarding the record again gives it the same stamp.
pub fn intake_hlc(stored: &StoredRecord) -> Hlc {
    Hlc::new(
        stored.timestamp_ms.max(0) as u64,
        (stored.offset & 0xFFFF) as u16,
    )
}

/// The dead-letter record of a poison intake record: its bytes and headers, plus the reason
/// and the source.
fn dead_letter(topic: &str, partition: u32, stored: &StoredRecord, reason: String) -> LogRecord {
    stored
        .record
        .clone()
        .with_header(DLQ_REASON_HEADER, reason)
        .with_header(
            DLQ_SOURCE_HEADER,
            format!("{topic}/{partition}/{}", stored.offset),
        )
}

fn progress_record(
    key: &str,
    collection: &str,
    incarnation: u64,
    partition: u32,
    next: u64,
) -> Result<LogRecord, serde_json::Error> {
    let value = serde_json::to_vec(&Progress {
        collection: collection.to_owned(),
        incarnation,
        partition,
        next,
    })?;
    Ok(LogRecord::new(Some(key.as_bytes().to_vec()), value))
}

/// Run `op` until it succeeds; `None` when the topic is gone (the collection was dropped).
async fn retry<T, E, F, Fut>(what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<IngestError>,
{
    loop {
        match op().await.map_err(Into::into) {
            Ok(value) => return Some(value),
            Err(IngestError::Log(hektor_topics::Error::Log(
                hektor_log::LogError::UnknownTopic(topic),
            ))) => {
                tracing::debug!(%topic, "intake: {what}: topic is gone");
                return None;
            }
            Err(err) => {
                tracing::warn!(%err, "intake: {what} failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Read a whole single-partition topic from its start.
async fn read_all(log: &dyn Log, topic: &str) -> Result<Vec<StoredRecord>, IngestError> {
    let high = log.high_watermark(topic, 0).await?;
    let mut out = Vec::new();
    let mut from = 0;
    while from < high {
        let batch = log
            .read(topic, 0, from, 4096, Duration::from_millis(100))
            .await?;
        let Some(last) = batch.last() else { break };
        from = last.offset + 1;
        out.extend(batch);
    }
    Ok(out)
}

/// The latest committed progress per key.
async fn load_progress(log: &dyn Log) -> Result<HashMap<String, u64>, IngestError> {
    let mut out = HashMap::new();
    for stored in read_all(log, PROGRESS_TOPIC).await? {
        let key = stored
            .record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok());
        match (
            key,
            serde_json::from_slice::<Progress>(&stored.record.value),
        ) {
            (Some(key), Ok(progress)) => {
                out.insert(key.to_owned(), progress.next);
            }
            _ => {
                tracing::warn!(
                    offset = stored.offset,
                    "intake: skipping an unreadable progress record"
                );
            }
        }
    }
    Ok(out)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_topics::record::Distance;
    use serde_json::json;

    fn spec() -> CollectionSpec {
        CollectionSpec {
            name: "c".into(),
            dimension: 3,
            distance: Distance::Cosine,
            partitions: 4,
            replication: 1,
            placement: Default::default(),
            merge: Default::default(),
            write_level: Default::default(),
        }
    }

    fn stored(value: serde_json::Value, offset: u64, timestamp_ms: i64) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms,
            record: LogRecord::new(None, value.to_string().into_bytes()),
        }
    }

    #[test]
    fn a_record_without_hlc_is_stamped_from_the_intake_record_alone() {
        let s = stored(
            json!({"op": "upsert", "collection": "c", "id": "a", "vector": [1.0, 2.0, 3.0], "tenant": "t"}),
            70_000,
            1_700_000_000_000,
        );
        let first = prepare(&spec(), &s, "eu").expect("valid");
        let again = prepare(&spec(), &s, "eu").expect("valid");
        assert_eq!(first, again);
        assert_eq!(
            first.hlc(),
            Hlc::new(1_700_000_000_000, (70_000 % 65_536) as u16)
        );
        let VectorRecord::Upsert(u) = first else {
            panic!("an upsert")
        };
        assert_eq!(u.origin, "eu");
        assert_eq!(u.tenant.as_deref(), Some("t"));
    }

    #[test]
    fn a_record_keeps_its_own_hlc_and_origin_unless_too_far_ahead() {
        let own = Hlc::new(wall_ms() - 5_000, 3);
        let s = stored(
            json!({"op": "delete", "collection": "c", "id": "a", "hlc": own.0, "origin": "us"}),
            1,
            1,
        );
        let record = prepare(&spec(), &s, "eu").expect("valid");
        assert_eq!(record.hlc(), own);
        let VectorRecord::Delete(d) = record else {
            panic!("a delete")
        };
        assert_eq!(d.origin, "us");
        let ahead = Hlc::new(wall_ms() + 10 * MAX_HLC_AHEAD_MS, 0);
        let s = stored(
            json!({"op": "delete", "collection": "c", "id": "a", "hlc": ahead.0}),
            1,
            1,
        );
        let reason = prepare(&spec(), &s, "eu").expect_err("refused");
        assert!(reason.contains("ahead of this node's clock"), "{reason}");
    }

    #[test]
    fn poison_records_are_refused_with_the_http_rules_reasons() {
        let cases = [
            (
                json!({"op": "upsert", "collection": "c", "id": "a", "vector": [1.0]}),
                "vector has 1 dimensions",
            ),
            (
                json!({"op": "upsert", "collection": "other", "id": "a", "vector": [1.0, 2.0, 3.0]}),
                "collection `other`",
            ),
            (
                json!({"op": "upsert", "collection": "c", "id": "", "vector": [1.0, 2.0, 3.0]}),
                "id must be 1 to",
            ),
            (
                json!({"op": "upsert", "collection": "c", "id": "a", "tenant": "", "vector": [1.0, 2.0, 3.0]}),
                "tenant must be",
            ),
            (
                json!({"op": "upsert", "collection": "c", "id": "a", "vector": [1.0, 2.0, 3.0], "payload": [1]}),
                "payload must be a JSON object",
            ),
            (
                json!({"op": "delete", "collection": "c", "id": "x\u{7}"}),
                "control characters",
            ),
            (
                json!({"op": "rename", "collection": "c", "id": "a"}),
                "malformed vector record",
            ),
        ];
        for (value, needle) in cases {
            let Err(reason) = prepare(&spec(), &stored(value.clone(), 0, 0), "eu") else {
                panic!("{value} should be refused");
            };
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        let garbage = StoredRecord {
            offset: 0,
            timestamp_ms: 0,
            record: LogRecord::new(None, b"\x00not json{".to_vec()),
        };
        assert!(prepare(&spec(), &garbage, "eu")
            .expect_err("refused")
            .contains("invalid JSON"));
    }
}
