//! The embedded log: a durable, partitioned, append-only log on LMDB (heed) for a single
//! machine, with the same semantics as the Kafka backend (see [`crate`]).
//!
//! This module owns the on-disk layout of the embedded log, appends, reads with waiting,
//! compaction of `Cleanup::Compact` topics and trimming of `Cleanup::Retain` topics. It
//! does not know what the records mean (that is `hektor-topics`' codec) nor which topics
//! exist (that is `hektor-topics`' topic layout).
//!
//! # Layout
//! One LMDB environment per directory, with these databases (all keys big-endian so that
//! LMDB's byte order is numeric order):
//! - `topics`: topic name → meta (topic id, partitions, cleanup policy). Topic ids are
//!   never reused, so the records of a deleted topic can be purged lazily and in chunks.
//! - `meta`: `next_topic_id`.
//! - `records`: (topic id u32, partition u32, offset u64) → a **chunk**: the records of
//!   one append from that offset on, up to 128 KiB or 256 records (layout at
//!   [`write_chunk`]; a value written by builds before chunks holds one record). A read
//!   at offset o starts from the greatest key at or before o. LMDB stores a chunk in
//!   contiguous overflow pages, so the vectors topic takes ~1.02x its records' bytes
//!   (one ~1.6 KB record per value took 2.1x: one or two per 4 KiB leaf page).
//! - `heads`: (topic id, partition) → the next offset (the high watermark).
//! - `latest` (compacted topics only): (topic id, partition, key) → offset of the newest
//!   record with that key. Keys longer than [`MAX_INLINE_KEY`] bytes are indexed by their
//!   128-bit xxh3 hash.
//! - `garbage` (compacted topics only): (topic id, partition, offset) of records superseded
//!   by a newer record with the same key; [`EmbeddedLog::compact`] deletes them.
//!
//! A batch whose first key sorts after every stored record (appends to the partition whose
//! keys sort last: the newest topic's last partition, or the only busy one) is written with
//! LMDB's `APPEND` flag (no search, no page split); other batches are ordinary inserts.
//! Compaction deletes a superseded record by rewriting its chunk without it (or deleting
//! the chunk when nothing of it is left); trimming deletes whole chunks, whose records
//! share one append time.
//!
//! # Durability
//! An append is one write transaction, committed with LMDB's default synchronous commit
//! before `append` returns: an acknowledged batch survives `kill -9` and power loss.
//!
//! # Waiting readers
//! Each appended batch updates a `tokio::sync::watch` per (topic, partition); a reader with
//! nothing to read waits on it (and re-checks every [`POLL`] in case another process
//! appended to the same directory).
//!
//! # Opening twice
//! LMDB must not be opened twice in one process; [`EmbeddedLog::open`] on a directory that
//! is already open in this process returns a handle on the same log. The environment is
//! closed when the last handle (and the last blocking task using it) is dropped, after
//! which the directory can be opened again.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, PutFlags, RoTxn, WithoutTls};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::topic::{Cleanup, TopicSpec};
use crate::{Log, LogError, LogRecord, Result, StoredRecord};

/// Virtual size of the memory map (the file only grows as data is written).
const MAP_SIZE: usize = 1 << 40;
/// Concurrent read transactions (one per blocking task).
const MAX_READERS: u32 = 1024;
/// Longest topic name (Kafka's limit).
const MAX_TOPIC_NAME: usize = 249;
/// Keys up to this length are indexed as they are; longer ones by their hash.
pub const MAX_INLINE_KEY: usize = 400;
/// Records deleted per write transaction by compaction, trimming and topic deletion, so a
/// large cleanup never holds the writer for long nor overflows a transaction.
const CHUNK: usize = 10_000;
/// Default number of superseded records after which a compacted topic is compacted in the
/// background.
pub const DEFAULT_COMPACT_AFTER: u64 = 10_000;
/// How often a waiting reader re-checks the log even without a wake-up.
const POLL: Duration = Duration::from_millis(500);
/// Version byte of the stored record layout.
const RECORD_VERSION: u8 = 1;
/// Version byte of the topic meta layout.
const META_VERSION: u8 = 1;
const NEXT_TOPIC_ID: &[u8] = b"next_topic_id";

type Db = Database<'static, Bytes, Bytes>;

/// Logs open in this process, by canonical directory.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A durable log on LMDB. Cheap to clone: clones share one environment.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    env: Env<WithoutTls>,
    path: PathBuf,
    topics: Db,
    meta: Db,
    records: Db,
    heads: Db,
    latest: Db,
    garbage: Db,
    /// Head (next offset) of each (topic, partition) that someone waits on or appends to.
    watchers: Mutex<HashMap<String, HashMap<u32, watch::Sender<u64>>>>,
    /// Per topic id: superseded records since the last compaction, and whether one runs.
    compaction: Mutex<HashMap<u32, CompactState>>,
    compact_after: AtomicU64,
}

#[derive(Default)]
struct CompactState {
    pending: u64,
    running: bool,
}

/// What `topics` stores per topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopicMeta {
    id: u32,
    partitions: u32,
    cleanup: Cleanup,
}

/// The outcome of one appended batch.
struct Appended {
    offsets: Vec<u64>,
    head: u64,
    topic_id: u32,
    superseded: u64,
}

trait StorageContext<T> {
    fn ctx(self, inner: &Inner) -> Result<T>;
}

impl<T> StorageContext<T> for heed::Result<T> {
    fn ctx(self, inner: &Inner) -> Result<T> {
        self.map_err(|source| inner.storage(source))
    }
}

impl EmbeddedLog {
    /// Open (creating if needed) the log in `dir`. If this process already has the log in
    /// `dir` open, returns a handle on it. May block briefly while a previous instance of
    /// the same directory finishes closing.
    pub fn open(dir: &Path) -> Result<EmbeddedLog> {
        let io_err = |source| LogError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.canonicalize().map_err(io_err)?;
        let mut open = OPEN.lock();
        if let Some(inner) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(EmbeddedLog { inner });
        }
        let inner = Arc::new(Inner::open(path.clone())?);
        inner.purge_orphans()?;
        open.retain(|_, weak| weak.strong_count() > 0);
        open.insert(path, Arc::downgrade(&inner));
        Ok(EmbeddedLog { inner })
    }

    /// The directory of this log.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Compact after this many superseded records of a topic have piled up (default
    /// [`DEFAULT_COMPACT_AFTER`]); applies to every handle on this log.
    pub fn set_compact_after(&self, superseded: u64) {
        self.inner
            .compact_after
            .store(superseded.max(1), Ordering::Relaxed);
    }

    /// Delete the records of a compacted topic that a newer record with the same key has
    /// superseded; returns how many were removed. Offsets never change and the newest record
    /// of every key (and every record without a key) is kept. A no-op for other topics.
    pub async fn compact(&self, topic: &str) -> Result<usize> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let rtxn = inner.env.read_txn().ctx(inner)?;
            let meta = inner.meta_of(&rtxn, &topic)?;
            match meta.cleanup {
                Cleanup::Compact => inner.compact_topic(meta.id),
                Cleanup::Retain { .. } | Cleanup::Keep => Ok(0),
            }
        })
        .await
    }

    /// Delete the records of a time-retained topic older than its retention, from the start
    /// of each partition; returns how many were removed. A no-op for compacted topics.
    pub async fn trim_expired(&self, topic: &str) -> Result<usize> {
        let topic = topic.to_string();
        self.blocking(move |inner| inner.trim_expired(&topic, now_ms()))
            .await
    }

    /// Trim every time-retained topic (see [`EmbeddedLog::trim_expired`]); returns the
    /// records removed. Topics that vanish meanwhile are skipped.
    pub async fn trim_all_expired(&self) -> Result<usize> {
        let topics = self
            .blocking(|inner| {
                let rtxn = inner.env.read_txn().ctx(inner)?;
                let mut names = Vec::new();
                for item in inner.topics.iter(&rtxn).ctx(inner)? {
                    let (name, meta) = item.ctx(inner)?;
                    if matches!(decode_meta(meta)?.cleanup, Cleanup::Retain { .. }) {
                        names.push(String::from_utf8_lossy(name).into_owned());
                    }
                }
                Ok(names)
            })
            .await?;
        let mut removed = 0;
        for topic in topics {
            match self.trim_expired(&topic).await {
                Ok(n) => removed += n,
                Err(LogError::UnknownTopic(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(removed)
    }

    /// Enforce the retention of time-retained topics from now on: a task that trims them
    /// every `every` (Kafka's brokers do this themselves; the embedded log has no broker).
    /// Stops when the last handle on the log is dropped.
    pub fn enforce_retention(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let log = EmbeddedLog { inner };
                match log.trim_all_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "embedded log: expired records removed"),
                    Err(err) => {
                        tracing::warn!(%err, "embedded log: trimming expired records failed")
                    }
                }
            }
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(LogError::Closed),
        }
    }

    fn after_append(&self, topic: &str, partition: u32, appended: &Appended) {
        if let Some(tx) = self
            .inner
            .watchers
            .lock()
            .get(topic)
            .and_then(|parts| parts.get(&partition))
        {
            tx.send_replace(appended.head);
        }
        if appended.superseded == 0 {
            return;
        }
        let threshold = self.inner.compact_after.load(Ordering::Relaxed);
        let start = {
            let mut states = self.inner.compaction.lock();
            let state = states.entry(appended.topic_id).or_default();
            state.pending += appended.superseded;
            if !state.running && state.pending >= threshold {
                state.running = true;
                state.pending = 0;
                true
            } else {
                false
            }
        };
        if start {
            let inner = self.inner.clone();
            let topic_id = appended.topic_id;
            tokio::task::spawn_blocking(move || {
                match inner.compact_topic(topic_id) {
                    Ok(removed) => {
                        tracing::debug!(topic_id, removed, "compacted embedded log topic")
                    }
                    Err(e) => tracing::warn!(topic_id, error = %e, "compaction failed"),
                }
                if let Some(state) = inner.compaction.lock().get_mut(&topic_id) {
                    state.running = false;
                }
            });
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        let spec = spec.clone();
        self.blocking(move |inner| inner.ensure_topic(&spec)).await
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let name = topic.to_string();
        let deleted = self
            .blocking(move |inner| inner.unlink_topic(&name))
            .await?;
        // Waiting readers wake up (their channel closes) and find the topic gone.
        self.inner.watchers.lock().remove(topic);
        if let Some(topic_id) = deleted {
            self.inner.compaction.lock().remove(&topic_id);
            self.blocking(move |inner| inner.purge_topic_id(topic_id))
                .await?;
        }
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let rtxn = inner.env.read_txn().ctx(inner)?;
            Ok(inner.meta_of(&rtxn, &topic)?.partitions)
        })
        .await
    }

    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<Vec<u64>> {
        let name = topic.to_string();
        let appended = self
            .blocking(move |inner| inner.append(&name, partition, &records))
            .await?;
        self.after_append(topic, partition, &appended);
        Ok(appended.offsets)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>> {
        let deadline = Instant::now() + wait;
        let mut changes = self.inner.subscribe(topic, partition);
        loop {
            let name = topic.to_string();
            let records = self
                .blocking(move |inner| inner.read(&name, partition, from, max))
                .await?;
            let now = Instant::now();
            if !records.is_empty() || max == 0 || now >= deadline {
                return Ok(records);
            }
            let slice = (deadline - now).min(POLL);
            if let Ok(Err(_closed)) = tokio::time::timeout(slice, changes.changed()).await {
                // The topic was deleted (and maybe created again): follow the new channel.
                changes = self.inner.subscribe(topic, partition);
            }
        }
    }

    async fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let rtxn = inner.env.read_txn().ctx(inner)?;
            let meta = inner.meta_of(&rtxn, &topic)?;
            check_partition(&topic, &meta, partition)?;
            inner.head(&rtxn, meta.id, partition)
        })
        .await
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        let topic = topic.to_string();
        self.blocking(move |inner| inner.offset_for_time(&topic, partition, time_ms))
            .await
    }
}

impl Inner {
    fn open(path: PathBuf) -> Result<Inner> {
        let storage = |source| LogError::Storage {
            path: path.display().to_string(),
            source,
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(MAP_SIZE)
            .max_dbs(8)
            .max_readers(MAX_READERS);
        let mut waited = false;
        let env = loop {
            // SAFETY: the environment is only opened through `EmbeddedLog::open`, which keeps
            // one instance per directory in this process (LMDB's lock file coordinates other
            // processes), with no unsafe flags, and the files are only modified through LMDB.
            match unsafe { options.open(&path) } {
                Err(heed::Error::EnvAlreadyOpened) if !waited => {
                    // A previous instance is still being dropped (its last blocking task is
                    // finishing): wait for it to close, once.
                    waited = true;
                    if let Some(closing) = heed::env_closing_event(&path) {
                        closing.wait_timeout(Duration::from_secs(30));
                    }
                }
                other => break other.map_err(storage)?,
            }
        };
        let wtxn = env.write_txn().map_err(storage)?;
        let (topics, meta, records, heads, latest, garbage) = env
            .create_databases_and_commit(wtxn, |dbs, wtxn| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("topics"))?,
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?,
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("records"))?,
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("heads"))?,
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("latest"))?,
                    dbs.create_database::<Bytes, Bytes>(wtxn, Some("garbage"))?,
                )))
            })
            .map_err(storage)?
            .unwrap_commit();
        Ok(Inner {
            env,
            path,
            topics,
            meta,
            records,
            heads,
            latest,
            garbage,
            watchers: Mutex::new(HashMap::new()),
            compaction: Mutex::new(HashMap::new()),
            compact_after: AtomicU64::new(DEFAULT_COMPACT_AFTER),
        })
    }

    fn storage(&self, source: heed::Error) -> LogError {
        LogError::Storage {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn subscribe(&self, topic: &str, partition: u32) -> watch::Receiver<u64> {
        let mut watchers = self.watchers.lock();
        if !watchers.contains_key(topic) {
            watchers.insert(topic.to_string(), HashMap::new());
        }
        watchers
            .get_mut(topic)
            .map(|parts| {
                parts
                    .entry(partition)
                    .or_insert_with(|| watch::channel(0).0)
                    .subscribe()
            })
            .unwrap_or_else(|| watch::channel(0).1)
    }

    fn meta_of(&self, txn: &RoTxn, topic: &str) -> Result<TopicMeta> {
        match self.topics.get(txn, topic.as_bytes()).ctx(self)? {
            Some(bytes) => decode_meta(bytes),
            None => Err(LogError::UnknownTopic(topic.to_string())),
        }
    }

    fn head(&self, txn: &RoTxn, topic_id: u32, partition: u32) -> Result<u64> {
        match self
            .heads
            .get(txn, &head_key(topic_id, partition))
            .ctx(self)?
        {
            Some(bytes) => be_u64(bytes, "head"),
            None => Ok(0),
        }
    }

    fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        validate_topic_name(&spec.name)?;
        crate::topic::validate_partitions(spec.partitions)?;
        let mut wtxn = self.env.write_txn().ctx(self)?;
        if let Some(existing) = self.topics.get(&wtxn, spec.name.as_bytes()).ctx(self)? {
            let existing = decode_meta(existing)?;
            if existing.partitions != spec.partitions {
                return Err(LogError::TopicMismatch {
                    topic: spec.name.clone(),
                    existing: existing.partitions,
                    wanted: spec.partitions,
                });
            }
            return Ok(());
        }
        let id = match self.meta.get(&wtxn, NEXT_TOPIC_ID).ctx(self)? {
            Some(bytes) => {
                u32::from_be_bytes(bytes.try_into().map_err(|_| LogError::Malformed {
                    kind: "embedded log meta",
                    reason: format!("next topic id has {} bytes instead of 4", bytes.len()),
                })?)
            }
            None => 1,
        };
        let next = id.checked_add(1).ok_or_else(|| LogError::Malformed {
            kind: "embedded log meta",
            reason: "all 2^32 topic ids are used up".into(),
        })?;
        self.meta
            .put(&mut wtxn, NEXT_TOPIC_ID, &next.to_be_bytes())
            .ctx(self)?;
        let meta = TopicMeta {
            id,
            partitions: spec.partitions,
            cleanup: spec.cleanup,
        };
        self.topics
            .put(&mut wtxn, spec.name.as_bytes(), &encode_meta(&meta))
            .ctx(self)?;
        wtxn.commit().ctx(self)
    }

    /// Remove a topic from `topics` and `heads` (atomically: from now on it is unknown);
    /// returns its id so its records can be purged.
    fn unlink_topic(&self, topic: &str) -> Result<Option<u32>> {
        let mut wtxn = self.env.write_txn().ctx(self)?;
        let meta = match self.meta_of(&wtxn, topic) {
            Ok(meta) => meta,
            Err(LogError::UnknownTopic(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.topics.delete(&mut wtxn, topic.as_bytes()).ctx(self)?;
        for partition in 0..meta.partitions {
            self.heads
                .delete(&mut wtxn, &head_key(meta.id, partition))
                .ctx(self)?;
        }
        wtxn.commit().ctx(self)?;
        Ok(Some(meta.id))
    }

    /// Delete everything stored under a topic id, in chunks.
    fn purge_topic_id(&self, topic_id: u32) -> Result<()> {
        let prefix = topic_id.to_be_bytes();
        for db in [&self.records, &self.latest, &self.garbage, &self.heads] {
            loop {
                let mut wtxn = self.env.write_txn().ctx(self)?;
                let keys = collect_keys(db, &wtxn, &prefix, CHUNK).ctx(self)?;
                if keys.is_empty() {
                    break;
                }
                for key in &keys {
                    db.delete(&mut wtxn, key).ctx(self)?;
                }
                wtxn.commit().ctx(self)?;
            }
        }
        Ok(())
    }

    /// Purge what a deletion interrupted by a crash left behind: data under topic ids that
    /// `topics` no longer names.
    fn purge_orphans(&self) -> Result<()> {
        let orphans = {
            let rtxn = self.env.read_txn().ctx(self)?;
            let mut live = HashSet::new();
            for item in self.topics.iter(&rtxn).ctx(self)? {
                let (_, meta) = item.ctx(self)?;
                live.insert(decode_meta(meta)?.id);
            }
            let mut orphans = HashSet::new();
            for db in [&self.records, &self.latest, &self.garbage, &self.heads] {
                let mut start = [0u8; 4];
                while let Some((key, _)) =
                    db.get_greater_than_or_equal_to(&rtxn, &start).ctx(self)?
                {
                    let Some(id) = key.get(..4).map(|b| [b[0], b[1], b[2], b[3]]) else {
                        break;
                    };
                    let id = u32::from_be_bytes(id);
                    if !live.contains(&id) {
                        orphans.insert(id);
                    }
                    match id.checked_add(1) {
                        Some(next) => start = next.to_be_bytes(),
                        None => break,
                    }
                }
            }
            orphans
        };
        for id in orphans {
            tracing::info!(topic_id = id, path = %self.path.display(), "purging records of a deleted topic");
            self.purge_topic_id(id)?;
        }
        Ok(())
    }

    fn append(&self, topic: &str, partition: u32, records: &[LogRecord]) -> Result<Appended> {
        for record in records {
            check_lengths(record)?;
        }
        if records.is_empty() {
            let rtxn = self.env.read_txn().ctx(self)?;
            let meta = self.meta_of(&rtxn, topic)?;
            check_partition(topic, &meta, partition)?;
            let head = self.head(&rtxn, meta.id, partition)?;
            return Ok(Appended {
                offsets: Vec::new(),
                head,
                topic_id: meta.id,
                superseded: 0,
            });
        }
        let mut wtxn = self.env.write_txn().ctx(self)?;
        let meta = self.meta_of(&wtxn, topic)?;
        check_partition(topic, &meta, partition)?;
        let first = self.head(&wtxn, meta.id, partition)?;
        let timestamp_ms = now_ms();
        let compacted = meta.cleanup == Cleanup::Compact;
        let mut offsets = Vec::with_capacity(records.len());
        let mut superseded = 0;
        let mut index_key = Vec::with_capacity(64);
        // When this partition is the last one in `records` (always so with one busy
        // partition, and for the newest topic), the batch's keys sort after every stored key
        // and can be appended: LMDB then skips the search and fills each leaf page before
        // starting the next instead of splitting it in half.
        let first_key = record_key(meta.id, partition, first);
        let append = match self.records.last(&wtxn).ctx(self)? {
            Some((last, _)) => last < &first_key[..],
            None => true,
        };
        let mut start = 0;
        while start < records.len() {
            let end = chunk_end(records, start);
            let chunk = &records[start..end];
            let chunk_first = first + start as u64;
            let key = record_key(meta.id, partition, chunk_first);
            let size = chunk_len(chunk);
            if append {
                // Keys grow within the batch and the first sorts after the last stored key,
                // so LMDB accepts every append (it never finds an existing key).
                let existing = self
                    .records
                    .get_or_put_reserved_with_flags(
                        &mut wtxn,
                        PutFlags::APPEND,
                        &key,
                        size,
                        |space| write_chunk(space, timestamp_ms, chunk),
                    )
                    .ctx(self)?;
                if existing.is_some() {
                    return Err(LogError::Malformed {
                        kind: "embedded log",
                        reason: format!("record offset {chunk_first} is already stored"),
                    });
                }
            } else {
                self.records
                    .put_reserved(&mut wtxn, &key, size, |space| {
                        write_chunk(space, timestamp_ms, chunk)
                    })
                    .ctx(self)?;
            }
            start = end;
        }
        for (offset, record) in (first..).zip(records) {
            if compacted {
                if let Some(record_key_bytes) = &record.key {
                    latest_key(&mut index_key, meta.id, partition, record_key_bytes);
                    let offset_bytes = offset.to_be_bytes();
                    let previous = self
                        .latest
                        .get_or_put(&mut wtxn, &index_key, &offset_bytes)
                        .ctx(self)?
                        .map(|old| be_u64(old, "latest offset"))
                        .transpose()?;
                    if let Some(previous) = previous {
                        self.latest
                            .put(&mut wtxn, &index_key, &offset_bytes)
                            .ctx(self)?;
                        self.garbage
                            .put(&mut wtxn, &record_key(meta.id, partition, previous), &[])
                            .ctx(self)?;
                        superseded += 1;
                    }
                }
            }
            offsets.push(offset);
        }
        let head = first + records.len() as u64;
        self.heads
            .put(
                &mut wtxn,
                &head_key(meta.id, partition),
                &head.to_be_bytes(),
            )
            .ctx(self)?;
        wtxn.commit().ctx(self)?;
        Ok(Appended {
            offsets,
            head,
            topic_id: meta.id,
            superseded,
        })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let rtxn = self.env.read_txn().ctx(self)?;
        let meta = self.meta_of(&rtxn, topic)?;
        check_partition(topic, &meta, partition)?;
        let mut out = Vec::with_capacity(max.min(4096));
        if max == 0 {
            return Ok(out);
        }
        let wanted = record_key(meta.id, partition, from);
        // The chunk holding `from` starts at or before it.
        let low = match self
            .records
            .get_lower_than_or_equal_to(&rtxn, &wanted)
            .ctx(self)?
        {
            Some((key, _)) if key.get(..8) == Some(&wanted[..8]) => <[u8; 16]>::try_from(key)
                .map_err(|_| LogError::Malformed {
                    kind: "embedded log",
                    reason: format!("a record key has {} bytes instead of 16", key.len()),
                })?,
            _ => wanted,
        };
        let high = record_key(meta.id, partition, u64::MAX);
        for item in self
            .records
            .range(
                &rtxn,
                &(Bound::Included(&low[..]), Bound::Included(&high[..])),
            )
            .ctx(self)?
        {
            let (key, value) = item.ctx(self)?;
            let mut records = decode_chunk(key, value)?.peekable();
            while let Some(record) = records.next() {
                let record = record?;
                if record.offset < from {
                    continue;
                }
                out.push(record);
                if out.len() >= max {
                    if records.peek().is_none() {
                        release_pages(value);
                    }
                    return Ok(out);
                }
            }
            release_pages(value);
        }
        Ok(out)
    }

    /// A binary search over the partition's chunks by their append time (see
    /// [`Log::offset_for_time`]): O(log n) lookups, each reading one chunk's header.
    fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        let rtxn = self.env.read_txn().ctx(self)?;
        let meta = self.meta_of(&rtxn, topic)?;
        check_partition(topic, &meta, partition)?;
        let head = self.head(&rtxn, meta.id, partition)?;
        let prefix = head_key(meta.id, partition);
        let offset_of = |key: &[u8]| be_u64(key.get(8..).unwrap_or_default(), "record key");
        let mut lo = match self
            .records
            .get_greater_than_or_equal_to(&rtxn, &record_key(meta.id, partition, 0))
            .ctx(self)?
        {
            Some((key, _)) if key.starts_with(&prefix) => offset_of(key)?,
            _ => return Ok(head),
        };
        // Every record before `lo` is older than `time_ms`; `lo` is a chunk's key.
        let mut hi = head;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some((key, value)) = self
                .records
                .get_lower_than_or_equal_to(&rtxn, &record_key(meta.id, partition, mid))
                .ctx(self)?
            else {
                break;
            };
            if !key.starts_with(&prefix) {
                break;
            }
            let base = offset_of(key)?;
            if chunk_timestamp(value)? < time_ms {
                // The whole chunk is older: the answer is past it.
                lo = match self.records.get_greater_than(&rtxn, key).ctx(self)? {
                    Some((next, _)) if next.starts_with(&prefix) => offset_of(next)?,
                    _ => head,
                };
            } else {
                hi = base;
            }
        }
        Ok(lo)
    }

    fn compact_topic(&self, topic_id: u32) -> Result<usize> {
        let prefix = topic_id.to_be_bytes();
        let mut removed = 0;
        loop {
            let mut wtxn = self.env.write_txn().ctx(self)?;
            let keys = collect_keys(&self.garbage, &wtxn, &prefix, CHUNK).ctx(self)?;
            if keys.is_empty() {
                return Ok(removed);
            }
            // Superseded offsets by the chunk holding them (the chunk's key is the greatest
            // record key at or before the offset's, in the same partition).
            let mut by_chunk: std::collections::BTreeMap<Vec<u8>, HashSet<u64>> =
                std::collections::BTreeMap::new();
            for key in &keys {
                let offset = be_u64(key.get(8..).unwrap_or_default(), "garbage offset")?;
                if let Some((chunk, _)) = self
                    .records
                    .get_lower_than_or_equal_to(&wtxn, key)
                    .ctx(self)?
                {
                    if chunk.get(..8) == key.get(..8) {
                        by_chunk.entry(chunk.to_vec()).or_default().insert(offset);
                    }
                }
                self.garbage.delete(&mut wtxn, key).ctx(self)?;
            }
            for (chunk_key, gone) in by_chunk {
                let Some(value) = self.records.get(&wtxn, &chunk_key).ctx(self)? else {
                    continue;
                };
                let timestamp_ms = chunk_timestamp(value)?;
                let mut kept = Vec::new();
                for record in decode_chunk(&chunk_key, value)? {
                    let record = record?;
                    if gone.contains(&record.offset) {
                        removed += 1;
                    } else {
                        kept.push(record);
                    }
                }
                if kept.is_empty() {
                    self.records.delete(&mut wtxn, &chunk_key).ctx(self)?;
                } else {
                    let base = be_u64(&chunk_key[8..], "record key offset")?;
                    let mut bytes = Vec::new();
                    encode_stored_chunk(&mut bytes, base, timestamp_ms, &kept)?;
                    self.records.put(&mut wtxn, &chunk_key, &bytes).ctx(self)?;
                }
            }
            wtxn.commit().ctx(self)?;
        }
    }

    fn trim_expired(&self, topic: &str, now_ms: i64) -> Result<usize> {
        let meta = {
            let rtxn = self.env.read_txn().ctx(self)?;
            self.meta_of(&rtxn, topic)?
        };
        let Cleanup::Retain { ms } = meta.cleanup else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(ms);
        let mut removed = 0;
        for partition in 0..meta.partitions {
            loop {
                let mut wtxn = self.env.write_txn().ctx(self)?;
                let prefix = head_key(meta.id, partition);
                // Whole chunks go: a chunk's records were appended together, at one time.
                let mut expired = Vec::new();
                let mut count = 0;
                for item in self.records.prefix_iter(&wtxn, &prefix).ctx(self)? {
                    let (key, value) = item.ctx(self)?;
                    if count >= CHUNK || chunk_timestamp(value)? >= cutoff {
                        break;
                    }
                    count += chunk_count(value)?;
                    expired.push(key.to_vec());
                }
                if expired.is_empty() {
                    break;
                }
                for key in &expired {
                    self.records.delete(&mut wtxn, key).ctx(self)?;
                }
                removed += count;
                wtxn.commit().ctx(self)?;
            }
        }
        Ok(removed)
    }
}

/// Values at least this long are in overflow pages of their own (LMDB moves a value to
/// overflow pages when it does not fit half a page).
const RELEASE_MIN: usize = 8 << 10;

/// Let go of the map pages under a chunk a read has copied out: readers copy records, so
/// the pages are not needed by this process afterwards, yet a consumer that read a whole
/// vectors topic kept all of it in its resident set (at 100k vectors, most of the 314 MiB
/// log). `MADV_DONTNEED` on LMDB's read-only shared map only drops this process's page
/// table entries: the bytes stay in the page cache and on disk, and a later read of the
/// same value faults them back in. Only values of [`RELEASE_MIN`] bytes or more, whose
/// overflow pages hold nothing else. Best effort, Linux only.
fn release_pages(value: &[u8]) {
    #[cfg(target_os = "linux")]
    if value.len() >= RELEASE_MIN {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = value.as_ptr() as usize & !(page - 1);
        let end = (value.as_ptr() as usize + value.len() + page - 1) & !(page - 1);
        // SAFETY: [start, end) lies within LMDB's map of the data file (the value's own
        // overflow pages, page-aligned). MADV_DONTNEED on a shared file mapping does not
        // change its contents: they are read again from the page cache on the next access,
        // so the slice (and any other reader's) stays valid.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn collect_keys(db: &Db, txn: &RoTxn, prefix: &[u8], limit: usize) -> heed::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for item in db.prefix_iter(txn, prefix)? {
        let (key, _) = item?;
        keys.push(key.to_vec());
        if keys.len() >= limit {
            break;
        }
    }
    Ok(keys)
}

fn validate_topic_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME {
        return Err(LogError::InvalidName {
            name: name.chars().take(80).collect(),
            reason: format!("a topic name is 1 to {MAX_TOPIC_NAME} bytes long"),
        });
    }
    Ok(())
}

fn check_partition(topic: &str, meta: &TopicMeta, partition: u32) -> Result<()> {
    if partition >= meta.partitions {
        return Err(LogError::PartitionOutOfRange {
            topic: topic.to_string(),
            partition,
            partitions: meta.partitions,
        });
    }
    Ok(())
}

fn check_lengths(record: &LogRecord) -> Result<()> {
    let too_long = |what: &str, len: usize| LogError::Malformed {
        kind: "log record",
        reason: format!("{what} is {len} bytes long; the embedded log takes at most 4 GiB"),
    };
    if let Some(key) = &record.key {
        if u32::try_from(key.len()).is_err() {
            return Err(too_long("the key", key.len()));
        }
    }
    if u32::try_from(record.headers.len()).is_err() {
        return Err(too_long("the header list", record.headers.len()));
    }
    for (name, value) in &record.headers {
        if u32::try_from(name.len()).is_err() {
            return Err(too_long("a header name", name.len()));
        }
        if u32::try_from(value.len()).is_err() {
            return Err(too_long("a header value", value.len()));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn record_key(topic_id: u32, partition: u32, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn head_key(topic_id: u32, partition: u32) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..].copy_from_slice(&partition.to_be_bytes());
    key
}

/// (topic id, partition, tag, key): tag 0 and the key itself, or tag 1 and its xxh3-128
/// hash for keys longer than [`MAX_INLINE_KEY`] (LMDB keys are at most 511 bytes).
fn latest_key(out: &mut Vec<u8>, topic_id: u32, partition: u32, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&head_key(topic_id, partition));
    if key.len() <= MAX_INLINE_KEY {
        out.push(0);
        out.extend_from_slice(key);
    } else {
        out.push(1);
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(key).to_be_bytes());
    }
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| LogError::Malformed {
        kind: "embedded log index",
        reason: format!("{what} has {} bytes instead of 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn encode_meta(meta: &TopicMeta) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[0] = META_VERSION;
    out[1..5].copy_from_slice(&meta.id.to_be_bytes());
    out[5..9].copy_from_slice(&meta.partitions.to_be_bytes());
    match meta.cleanup {
        Cleanup::Compact => out[9] = 0,
        Cleanup::Retain { ms } => {
            out[9] = 1;
            out[10..18].copy_from_slice(&ms.to_be_bytes());
        }
        Cleanup::Keep => out[9] = 2,
    }
    out
}

fn decode_meta(bytes: &[u8]) -> Result<TopicMeta> {
    let malformed = |reason: String| LogError::Malformed {
        kind: "embedded log topic",
        reason,
    };
    if bytes.first() != Some(&META_VERSION) {
        return Err(LogError::UnknownVersion {
            kind: "embedded log topic",
            found: bytes.first().copied().unwrap_or(0),
            supported: META_VERSION,
        });
    }
    let bytes: &[u8; 18] = bytes
        .try_into()
        .map_err(|_| malformed(format!("{} bytes instead of 18", bytes.len())))?;
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let partitions = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let cleanup = match bytes[9] {
        0 => Cleanup::Compact,
        1 => {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&bytes[10..18]);
            Cleanup::Retain {
                ms: i64::from_be_bytes(ms),
            }
        }
        2 => Cleanup::Keep,
        other => return Err(malformed(format!("unknown cleanup policy {other}"))),
    };
    Ok(TopicMeta {
        id,
        partitions,
        cleanup,
    })
}

// Stored record layout (little-endian lengths):
//   version u8 | flags u8 (bit 0: has key) | timestamp_ms i64
//   | key_len u32 | key | header_count u32 | (name_len u32 | name | value_len u32 | value)*
//   | value (the rest)
const HAS_KEY: u8 = 1;
#[cfg(test)]
const FIXED_LEN: usize = 1 + 1 + 8 + 4 + 4;

#[cfg(test)]
fn encoded_len(record: &LogRecord) -> usize {
    FIXED_LEN
        + record.key.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
        + record.value.len()
}

/// Write one record in the version-1 layout (earlier builds' values; tests read them).
#[cfg(test)]
fn encode_record(
    out: &mut impl Write,
    timestamp_ms: i64,
    record: &LogRecord,
) -> std::io::Result<()> {
    let flags = if record.key.is_some() { HAS_KEY } else { 0 };
    out.write_all(&[RECORD_VERSION, flags])?;
    out.write_all(&timestamp_ms.to_le_bytes())?;
    encode_key_headers_value(out, record)
}

// Stored chunk layout (little-endian), what appends write since format 2: one LMDB value
// holds consecutive records of one partition appended together, keyed by the offset of
// the first record the chunk was written with (`base`):
//   version u8 (2) | timestamp_ms i64 | count u32
//   | count × (offset − base u32 | body_len u32 | body)
//   body: flags u8 (bit 0: has key) | key_len u32 | key | header_count u32
//         | (name_len u32 | name | value_len u32 | value)* | value (the rest)
// A value of version 1 is one record in the layout above (`encode_record`), written by
// earlier builds; it reads as a chunk of one.
//
// Why chunks: LMDB keeps a ~1.6 KB value in a leaf page, two at best per 4 KiB page and
// one when a page split in the middle of the tree halves it (appends to any partition but
// the last), so the vectors topic took 2.1x the raw vectors on disk. A chunk of up to
// `CHUNK_BYTES` goes to contiguous overflow pages, wasting only the tail of its last page.
const CHUNK_VERSION: u8 = 2;
/// Largest chunk an append writes (a single larger record makes a chunk of its own).
const CHUNK_BYTES: usize = 128 << 10;
/// Most records in one chunk, so that compaction rewrites little for one superseded record.
const CHUNK_RECORDS: usize = 256;
const CHUNK_HEADER: usize = 1 + 8 + 4;

fn body_len(record: &LogRecord) -> usize {
    1 + 4
        + record.key.as_ref().map_or(0, Vec::len)
        + 4
        + record
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
        + record.value.len()
}

/// The end of the chunk that starts at `records[start]`.
fn chunk_end(records: &[LogRecord], start: usize) -> usize {
    let mut bytes = CHUNK_HEADER;
    let mut end = start;
    while end < records.len() && end - start < CHUNK_RECORDS {
        let next = 8 + body_len(&records[end]);
        if end > start && bytes + next > CHUNK_BYTES {
            break;
        }
        bytes += next;
        end += 1;
    }
    end
}

fn chunk_len(records: &[LogRecord]) -> usize {
    CHUNK_HEADER + records.iter().map(|r| 8 + body_len(r)).sum::<usize>()
}

fn encode_body(out: &mut impl Write, record: &LogRecord) -> std::io::Result<()> {
    let flags = if record.key.is_some() { HAS_KEY } else { 0 };
    out.write_all(&[flags])?;
    encode_key_headers_value(out, record)
}

/// What both layouts write after the flags (and, in version 1, the timestamp).
fn encode_key_headers_value(out: &mut impl Write, record: &LogRecord) -> std::io::Result<()> {
    let key = record.key.as_deref().unwrap_or_default();
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&(record.headers.len() as u32).to_le_bytes())?;
    for (name, value) in &record.headers {
        out.write_all(&(name.len() as u32).to_le_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&(value.len() as u32).to_le_bytes())?;
        out.write_all(value)?;
    }
    out.write_all(&record.value)
}

/// Write `records` (consecutive offsets from the chunk's base) as one chunk; lengths
/// were checked by [`check_lengths`].
fn write_chunk(
    out: &mut impl Write,
    timestamp_ms: i64,
    records: &[LogRecord],
) -> std::io::Result<()> {
    out.write_all(&[CHUNK_VERSION])?;
    out.write_all(&timestamp_ms.to_le_bytes())?;
    out.write_all(&(records.len() as u32).to_le_bytes())?;
    for (delta, record) in records.iter().enumerate() {
        out.write_all(&(delta as u32).to_le_bytes())?;
        out.write_all(&(body_len(record) as u32).to_le_bytes())?;
        encode_body(out, record)?;
    }
    Ok(())
}

/// Write what compaction keeps of a chunk keyed `base`: `records` in offset order, each
/// at most 2^32 − 1 past the base (they were appended in one chunk).
fn encode_stored_chunk(
    out: &mut Vec<u8>,
    base: u64,
    timestamp_ms: i64,
    records: &[StoredRecord],
) -> Result<()> {
    let malformed = |reason: String| LogError::Malformed {
        kind: "embedded log chunk",
        reason,
    };
    out.push(CHUNK_VERSION);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for record in records {
        let delta = record
            .offset
            .checked_sub(base)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "record {} does not belong to the chunk at {base}",
                    record.offset
                ))
            })?;
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&(body_len(&record.record) as u32).to_le_bytes());
        encode_body(out, &record.record).map_err(|e| malformed(e.to_string()))?;
    }
    Ok(())
}

/// The append time of a chunk's records (of a version-1 value: its record's).
fn chunk_timestamp(value: &[u8]) -> Result<i64> {
    if value.first() == Some(&CHUNK_VERSION) {
        let mut cursor = Cursor { bytes: value };
        let _ = cursor.take(1)?;
        let ts = cursor.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(ts);
        return Ok(i64::from_le_bytes(array));
    }
    record_timestamp(value)
}

/// How many records a chunk holds.
fn chunk_count(value: &[u8]) -> Result<usize> {
    if value.first() == Some(&CHUNK_VERSION) {
        let mut cursor = Cursor { bytes: value };
        let _ = cursor.take(9)?;
        return cursor.u32();
    }
    Ok(1)
}

/// The records of the chunk stored under `key`, in offset order, each decoded only when
/// the iterator reaches it (a read skips the records before its offset by their length).
fn decode_chunk<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<impl Iterator<Item = Result<StoredRecord>> + 'a> {
    let base = be_u64(key.get(8..).unwrap_or_default(), "record key offset")?;
    enum Entries<'a> {
        One(Option<(u64, &'a [u8])>),
        Many {
            cursor: Cursor<'a>,
            base: u64,
            timestamp_ms: i64,
            left: usize,
            last: Option<u64>,
        },
    }
    let mut entries = match value.first() {
        Some(&CHUNK_VERSION) => {
            let timestamp_ms = chunk_timestamp(value)?;
            let left = chunk_count(value)?;
            let mut cursor = Cursor { bytes: value };
            let _ = cursor.take(CHUNK_HEADER)?;
            Entries::Many {
                cursor,
                base,
                timestamp_ms,
                left,
                last: None,
            }
        }
        _ => Entries::One(Some((base, value))),
    };
    Ok(std::iter::from_fn(move || match &mut entries {
        Entries::One(one) => one
            .take()
            .map(|(offset, value)| decode_record_at(offset, value)),
        Entries::Many {
            cursor,
            base,
            timestamp_ms,
            left,
            last,
        } => {
            if *left == 0 {
                return None;
            }
            *left -= 1;
            let entry = (|| {
                let delta = cursor.u32()? as u64;
                let len = cursor.u32()?;
                let body = cursor.take(len)?;
                let offset = *base + delta;
                if last.is_some_and(|last| offset <= last) {
                    return Err(LogError::Malformed {
                        kind: "embedded log chunk",
                        reason: format!("offset {offset} does not follow {last:?}"),
                    });
                }
                *last = Some(offset);
                decode_body(offset, *timestamp_ms, body)
            })();
            if entry.is_err() {
                *left = 0;
            }
            Some(entry)
        }
    }))
}

fn decode_body(offset: u64, timestamp_ms: i64, body: &[u8]) -> Result<StoredRecord> {
    let mut cursor = Cursor { bytes: body };
    let flags = cursor.take(1)?[0];
    let key_len = cursor.u32()?;
    let key_bytes = cursor.take(key_len)?;
    let key = (flags & HAS_KEY != 0).then(|| key_bytes.to_vec());
    let headers = decode_headers(&mut cursor)?;
    Ok(StoredRecord {
        offset,
        timestamp_ms,
        record: LogRecord {
            key,
            value: cursor.bytes.to_vec(),
            headers,
        },
    })
}

fn decode_headers(cursor: &mut Cursor) -> Result<Vec<(String, Vec<u8>)>> {
    let header_count = cursor.u32()?;
    let mut headers = Vec::with_capacity(header_count.min(64));
    for _ in 0..header_count {
        let name_len = cursor.u32()?;
        let name = cursor.take(name_len)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| LogError::Malformed {
            kind: "embedded log record",
            reason: "a header name is not UTF-8".into(),
        })?;
        let value_len = cursor.u32()?;
        headers.push((name, cursor.take(value_len)?.to_vec()));
    }
    Ok(headers)
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(LogError::Malformed {
                kind: "embedded log record",
                reason: format!("truncated: {n} bytes wanted, {} left", self.bytes.len()),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

fn record_timestamp(value: &[u8]) -> Result<i64> {
    let mut cursor = Cursor { bytes: value };
    let _ = cursor.take(2)?;
    let ts = cursor.take(8)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(ts);
    Ok(i64::from_le_bytes(array))
}

/// A version-1 value: one record (see [`decode_chunk`]).
#[cfg(test)]
fn decode_record(key: &[u8], value: &[u8]) -> Result<StoredRecord> {
    let offset = be_u64(key.get(8..).unwrap_or_default(), "record key offset")?;
    decode_record_at(offset, value)
}

fn decode_record_at(offset: u64, value: &[u8]) -> Result<StoredRecord> {
    let mut cursor = Cursor { bytes: value };
    let head = cursor.take(2)?;
    if head[0] != RECORD_VERSION {
        return Err(LogError::UnknownVersion {
            kind: "embedded log record",
            found: head[0],
            supported: RECORD_VERSION,
        });
    }
    let timestamp_ms = record_timestamp(value)?;
    let _ = cursor.take(8)?;
    let key_len = cursor.u32()?;
    let key_bytes = cursor.take(key_len)?;
    let key = (head[1] & HAS_KEY != 0).then(|| key_bytes.to_vec());
    let headers = decode_headers(&mut cursor)?;
    Ok(StoredRecord {
        offset,
        timestamp_ms,
        record: LogRecord {
            key,
            value: cursor.bytes.to_vec(),
            headers,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_stored_layout() {
        let records = [
            LogRecord::new(None, Vec::new()),
            LogRecord::new(Some(Vec::new()), b"v".to_vec()),
            LogRecord::new(Some(b"key".to_vec()), vec![7; 1500])
                .with_header("reason", b"bad".to_vec())
                .with_header("", Vec::new()),
        ];
        for (i, record) in records.iter().enumerate() {
            let mut bytes = Vec::new();
            encode_record(&mut bytes, -5 + i as i64, record).unwrap();
            assert_eq!(bytes.len(), encoded_len(record));
            let stored = decode_record(&record_key(1, 2, 42 + i as u64), &bytes).unwrap();
            assert_eq!(stored.offset, 42 + i as u64);
            assert_eq!(stored.timestamp_ms, -5 + i as i64);
            assert_eq!(&stored.record, record);
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let record = LogRecord::new(Some(b"key".to_vec()), b"value".to_vec())
            .with_header("h", b"x".to_vec());
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 1, &record).unwrap();
        let value_start = bytes.len() - record.value.len();
        for cut in 0..value_start {
            assert!(
                decode_record(&record_key(1, 0, 0), &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    fn vector_like(i: u32) -> LogRecord {
        LogRecord::new(
            Some(format!("id-{i}").into_bytes()),
            (0..1_600u32).map(|b| (b ^ i) as u8).collect(),
        )
        .with_header("hektor-encoding", b"bin.v1".to_vec())
    }

    async fn topic(log: &EmbeddedLog, name: &str, partitions: u32, cleanup: Cleanup) {
        log.ensure_topic(&TopicSpec {
            name: name.into(),
            partitions,
            cleanup,
            replication: 1,
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_read_from_inside_a_chunk_starts_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        topic(&log, "t", 1, Cleanup::Compact).await;
        // 700 records of ~1.6 KB: several chunks (at most CHUNK_RECORDS and CHUNK_BYTES).
        let batch: Vec<_> = (0..700).map(vector_like).collect();
        log.append("t", 0, batch.clone()).await.unwrap();
        for from in [0u64, 1, 79, 80, 81, 255, 256, 257, 500, 699] {
            let got = log.read("t", 0, from, 3, Duration::ZERO).await.unwrap();
            let want: Vec<_> = (from..700.min(from + 3)).collect();
            assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), want);
            for r in &got {
                assert_eq!(r.record, batch[r.offset as usize], "offset {}", r.offset);
            }
        }
        let all = log.read("t", 0, 0, 10_000, Duration::ZERO).await.unwrap();
        assert_eq!(all.len(), 700);
        assert!(log
            .read("t", 0, 700, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn compaction_rewrites_chunks_and_keeps_the_latest_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        topic(&log, "t", 1, Cleanup::Compact).await;
        let rec = |key: &str, value: &str| {
            LogRecord::new(Some(key.as_bytes().to_vec()), value.as_bytes().to_vec())
        };
        // One chunk with a, b, c, a; a second chunk with b, d.
        log.append(
            "t",
            0,
            vec![rec("a", "1"), rec("b", "2"), rec("c", "3"), rec("a", "4")],
        )
        .await
        .unwrap();
        log.append("t", 0, vec![rec("b", "5"), rec("d", "6")])
            .await
            .unwrap();
        assert_eq!(log.compact("t").await.unwrap(), 2);
        let got = log.read("t", 0, 0, 100, Duration::ZERO).await.unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|r| (r.offset, String::from_utf8(r.record.value.clone()).unwrap()))
            .collect();
        let want = [(2, "3"), (3, "4"), (4, "5"), (5, "6")];
        assert_eq!(got, want.map(|(o, v)| (o, v.to_string())));
        // Reads from removed offsets start at the next kept one.
        let from1 = log.read("t", 0, 1, 1, Duration::ZERO).await.unwrap();
        assert_eq!(from1[0].offset, 2);
        // Superseding every record of a chunk removes the chunk.
        log.append("t", 0, vec![rec("c", "7"), rec("a", "8")])
            .await
            .unwrap();
        assert_eq!(log.compact("t").await.unwrap(), 2);
        let got = log.read("t", 0, 0, 100, Duration::ZERO).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
    }

    #[tokio::test]
    async fn records_of_earlier_builds_read_beside_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        topic(&log, "t", 2, Cleanup::Compact).await;
        // Offsets 0 and 1 of partition 1 as an earlier build stored them: one record per
        // value (version 1), then appends after them.
        let old = [vector_like(0), vector_like(1)];
        {
            let inner = &log.inner;
            let mut wtxn = inner.env.write_txn().unwrap();
            let meta = inner.meta_of(&wtxn, "t").unwrap();
            for (offset, record) in old.iter().enumerate() {
                let mut bytes = Vec::new();
                encode_record(&mut bytes, 7, record).unwrap();
                let key = record_key(meta.id, 1, offset as u64);
                inner.records.put(&mut wtxn, &key, &bytes).unwrap();
            }
            inner
                .heads
                .put(&mut wtxn, &head_key(meta.id, 1), &2u64.to_be_bytes())
                .unwrap();
            wtxn.commit().unwrap();
        }
        log.append("t", 1, vec![vector_like(2), vector_like(3)])
            .await
            .unwrap();
        let got = log.read("t", 1, 1, 10, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(got[0].record, old[1]);
        assert_eq!(got[0].timestamp_ms, 7);
        assert_eq!(got[2].record, vector_like(3));
    }

    #[test]
    fn truncated_chunks_are_errors_not_panics() {
        let records = [vector_like(1), LogRecord::new(None, b"x".to_vec())];
        let mut bytes = Vec::new();
        write_chunk(&mut bytes, 5, &records).unwrap();
        let key = record_key(1, 0, 10);
        let all: Vec<_> = decode_chunk(&key, &bytes)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(all.iter().map(|r| r.offset).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(all[1].record, records[1]);
        for cut in 0..bytes.len() {
            let decoded = decode_chunk(&key, &bytes[..cut])
                .and_then(|records| records.collect::<Result<Vec<_>>>());
            assert!(decoded.is_err(), "cut {cut}");
        }
    }

    /// What users rely on for the footprint goal: vectors take little more than their
    /// bytes, even with partitions appended in turn (inserts in the middle of the tree).
    #[tokio::test]
    async fn interleaved_partitions_take_little_more_than_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        topic(&log, "v", 4, Cleanup::Compact).await;
        let mut bytes = 0;
        for round in 0..20u32 {
            for partition in 0..4u32 {
                let batch: Vec<_> = (0..100)
                    .map(|i| vector_like(round * 1_000 + partition * 100 + i))
                    .collect();
                bytes += batch.iter().map(chunk_len_of_one).sum::<usize>();
                log.append("v", partition, batch).await.unwrap();
            }
        }
        let rtxn = log.inner.env.read_txn().unwrap();
        let stat = log.inner.records.stat(&rtxn).unwrap();
        let stored =
            (stat.leaf_pages + stat.branch_pages + stat.overflow_pages) * stat.page_size as usize;
        let ratio = stored as f64 / bytes as f64;
        assert!(ratio < 1.1, "records take {ratio:.2}x their bytes");
    }

    fn chunk_len_of_one(record: &LogRecord) -> usize {
        8 + body_len(record)
    }

    #[test]
    fn topic_meta_round_trips() {
        for cleanup in [
            Cleanup::Compact,
            Cleanup::Retain { ms: 123_456 },
            Cleanup::Keep,
        ] {
            let meta = TopicMeta {
                id: 9,
                partitions: 16,
                cleanup,
            };
            assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaved_partitions_and_topics_keep_their_own_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        for name in ["a", "b"] {
            log.ensure_topic(&TopicSpec {
                name: name.into(),
                partitions: 3,
                cleanup: Cleanup::Compact,
                replication: 1,
            })
            .await
            .unwrap();
        }
        let value = |topic: &str, partition: u32, round: u32| {
            format!("{topic}/{partition}/{round}").into_bytes()
        };
        // Appends go to the last partition of the key space (appended at the end of
        // `records`) and to earlier ones (inserted before stored keys), in both orders.
        let order = [
            ("b", 2),
            ("a", 0),
            ("b", 0),
            ("a", 2),
            ("b", 2),
            ("a", 1),
            ("a", 0),
        ];
        let mut expected: HashMap<(&str, u32), Vec<Vec<u8>>> = HashMap::new();
        for (round, (topic, partition)) in order.into_iter().enumerate() {
            let batch = (0..3)
                .map(|i| LogRecord::new(None, value(topic, partition, round as u32 * 10 + i)))
                .collect::<Vec<_>>();
            let before = expected.get(&(topic, partition)).map_or(0, Vec::len) as u64;
            let offsets = log.append(topic, partition, batch.clone()).await.unwrap();
            assert_eq!(offsets, (before..before + 3).collect::<Vec<_>>());
            expected
                .entry((topic, partition))
                .or_default()
                .extend(batch.into_iter().map(|r| r.value));
        }
        for ((topic, partition), values) in expected {
            let stored = log
                .read(topic, partition, 0, 100, Duration::ZERO)
                .await
                .unwrap();
            let got = stored
                .into_iter()
                .map(|r| r.record.value)
                .collect::<Vec<_>>();
            assert_eq!(got, values, "{topic}/{partition}");
        }
    }

    #[test]
    fn long_keys_are_indexed_by_hash() {
        let mut short = Vec::new();
        latest_key(&mut short, 1, 0, b"abc");
        assert_eq!(short.len(), 8 + 1 + 3);
        let mut long = Vec::new();
        latest_key(&mut long, 1, 0, &[1; 5000]);
        assert_eq!(long.len(), 8 + 1 + 16);
        let mut other = Vec::new();
        latest_key(&mut other, 1, 0, &[2; 5000]);
        assert_ne!(long, other);
    }
}
