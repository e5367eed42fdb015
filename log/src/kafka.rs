//! The Apache Kafka backend of [`crate::Log`], through rdkafka (librdkafka).
//!
//! This module owns how hektor talks to Kafka: one idempotent producer (`acks=all`, at
//! most 5 requests in flight, so a partition never reorders or duplicates), an admin client
//! for topics, a metadata client, and a pool of plain consumers, each assigned to one
//! partition at an explicit offset (no consumer groups, nothing committed). It does not
//! decide topic names, partition counts or record encodings; that is `hektor-topics`
//! (its topic layout and codec).
//!
//! Every blocking librdkafka call (metadata, watermarks, consumer polls) runs in
//! [`tokio::task::spawn_blocking`]; producing and admin calls are asynchronous already.
//!
//! Reads are cheap when repeated: a reader that returned records up to offset `n - 1` is
//! kept, still fetching, and the next `read(from = n)` takes it again without a seek. A read
//! from anywhere else re-assigns a pooled consumer at that offset. Kafka-specific read
//! behaviour, within the [`Log`] contract: a read returns what the reader has fetched (it
//! may be fewer than `max` records even when more exist; it keeps filling for up to 2 s
//! while the high watermark says more are there); a read below the first kept offset
//! (retention, `DeleteRecords`) starts at the first kept record; a read past the end waits
//! like a read at the end; a waiting read notices within 2 s that its topic was deleted.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::topic::TopicSpec;
use crate::{Log, LogError, LogRecord, Result, StoredRecord};

/// How long a metadata or watermark request may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `ensure_topic` / `delete_topic` wait for the cluster to show the change.
const TOPIC_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// When records are known to exist (offset below the high watermark), how long a read may
/// wait for the first of them beyond the caller's `wait` (a fresh reader has to connect).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// When more records are known to exist, how long a read keeps filling its batch.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a read waiting for its first record checks that the topic still exists.
const LIVENESS_CHECK: Duration = Duration::from_secs(2);
/// How often a read past the end of a partition checks whether it has grown.
const PAST_END_POLL: Duration = Duration::from_millis(50);
/// Idle readers kept per partition.
const MAX_READERS_PER_PARTITION: usize = 4;
/// A pooled reader unused for this long is closed (it prefetches while idle).
const READER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Compression of produced batches (librdkafka `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Zstd,
    Snappy,
    Gzip,
}

impl Compression {
    /// The librdkafka name of this codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not one of `none`, `lz4`, `zstd`, `snappy`, `gzip`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression `{0}`; use one of none, lz4, zstd, snappy, gzip")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            "snappy" => Ok(Compression::Snappy),
            "gzip" => Ok(Compression::Gzip),
            _ => Err(UnknownCompression(s.chars().take(40).collect())),
        }
    }
}

/// Settings of the Kafka backend. Its `Debug` names the `extra` properties but never
/// prints their values (they carry passwords and keys).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Compression of produced batches. Default `lz4`.
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`). Default 5.
    pub linger_ms: u32,
    /// Largest produced batch in bytes (`batch.size`). Default 1,000,000.
    pub batch_size: u32,
    /// Largest request the producer sends, in bytes (`message.max.bytes`); a record larger
    /// than this is refused. Keep it at or below the broker's `message.max.bytes`.
    /// Default 1,000,000.
    pub message_max_bytes: u32,
    /// Any other librdkafka property, passed as is to every client this backend creates
    /// (producer, consumers, admin), after hektor's own settings, so it can override them:
    /// e.g. `("security.protocol", "ssl")`, `("queue.buffering.max.messages", "500000")`.
    /// See librdkafka's CONFIGURATION.md for the names. A property that does not apply to
    /// one kind of client is ignored by it with a librdkafka warning; an unknown one makes
    /// [`KafkaLog::connect`] fail.
    pub extra: Vec<(String, String)>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|(k, _)| format!("{k}=<redacted>"))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("compression", &self.compression)
            .field("linger_ms", &self.linger_ms)
            .field("batch_size", &self.batch_size)
            .field("message_max_bytes", &self.message_max_bytes)
            .field("extra", &extra)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            compression: Compression::Lz4,
            linger_ms: 5,
            batch_size: 1_000_000,
            message_max_bytes: 1_000_000,
            extra: Vec::new(),
        }
    }
}

/// Parse one librdkafka property written `KEY=VALUE` (the value may hold `=`; the key is
/// trimmed, the value kept as written). `what` names where it came from, for the error,
/// which never repeats the value.
pub fn parse_property(text: &str, what: &str) -> Result<(String, String)> {
    let bad = |reason: &str| LogError::KafkaProperty {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let (key, value) = text.split_once('=').ok_or_else(|| bad("there is no `=`"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("the key is empty"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("a key has only letters, digits, `.`, `_` and `-`"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Parse a librdkafka properties file, as Kafka's `client.properties`: one `KEY=VALUE`
/// a line, blank lines and lines starting with `#` or `!` ignored, values trimmed of
/// surrounding spaces. `origin` names the file in errors.
pub fn parse_properties(text: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = parse_property(line, &format!("at {origin}:{}", n + 1))?;
        out.push((k, v.trim().to_owned()));
    }
    Ok(out)
}

/// The Kafka log. Cheap to clone; clones share the clients and the reader pool.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Metadata and watermark queries (a consumer, so it never auto-creates topics).
    meta: BaseConsumer,
    /// Known partition counts, filled by metadata and `ensure_topic`.
    partitions: Mutex<HashMap<String, u32>>,
    /// Idle readers per (topic, partition).
    readers: Mutex<HashMap<(String, u32), Vec<Reader>>>,
}

/// A consumer assigned to one partition, and the offset its next message will have.
struct Reader {
    consumer: BaseConsumer,
    /// Where the fetch position is: `Some(n)` when the next message it returns has offset
    /// >= n and no record in between was skipped.
    next: Option<u64>,
    last_used: Instant,
}

fn kafka_error(context: impl fmt::Display, error: impl fmt::Display) -> LogError {
    LogError::Kafka(format!("{context}: {error}"))
}

/// Run a metadata request of `topic` on a blocking thread, again (for up to
/// [`REQUEST_TIMEOUT`]) while a partition's leader moves; an unknown topic is
/// [`LogError::UnknownTopic`], any other failure a Kafka error saying `what` was asked.
fn retry_metadata<T>(
    topic: &str,
    what: impl Fn() -> String,
    mut request: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> Result<T> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        match request() {
            Ok(found) => return Ok(found),
            Err(e) if is_unknown_topic(&e) => {
                return Err(LogError::UnknownTopic(topic.to_string()));
            }
            Err(e) if is_leader_moving(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(kafka_error(what(), e)),
        }
    }
}

fn join_error(context: impl fmt::Display, error: tokio::task::JoinError) -> LogError {
    LogError::Kafka(format!("{context}: the blocking task failed: {error}"))
}

impl KafkaLog {
    /// Create the clients for the brokers (`host:port`, comma-separated). This does not
    /// contact the cluster; librdkafka connects lazily. Call [`KafkaLog::ping`] to check
    /// that the brokers answer. Fails on an invalid configuration.
    pub fn connect(brokers: &str, config: KafkaConfig) -> Result<KafkaLog> {
        let brokers = brokers.trim();
        if brokers.is_empty() {
            return Err(LogError::Kafka("no brokers given".into()));
        }
        let base = |client_id: &str| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", brokers)
                .set("client.id", client_id);
            c
        };
        let with_extra = |mut c: ClientConfig| {
            for (k, v) in &config.extra {
                c.set(k, v);
            }
            c
        };

        let mut p = base("hektor-producer");
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", config.compression.as_str())
            .set("linger.ms", config.linger_ms.to_string())
            .set("batch.size", config.batch_size.to_string())
            .set("message.max.bytes", config.message_max_bytes.to_string())
            .set("message.timeout.ms", "120000")
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer = with_extra(p)
            .create()
            .map_err(|e| kafka_error("creating the producer", e))?;

        let admin: AdminClient<DefaultClientContext> = with_extra(base("hektor-admin"))
            .create()
            .map_err(|e| kafka_error("creating the admin client", e))?;

        let meta: BaseConsumer = with_extra(consumer_config(brokers, "hektor-metadata"))
            .create()
            .map_err(|e| kafka_error("creating the metadata client", e))?;

        Ok(KafkaLog {
            inner: Arc::new(Inner {
                brokers: brokers.to_string(),
                config,
                producer,
                admin,
                meta,
                partitions: Mutex::new(HashMap::new()),
                readers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The brokers this log was created with.
    pub fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    /// Check that the cluster answers a metadata request within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .meta
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| kafka_error(format!("asking {} for metadata", inner.brokers), e))
        })
        .await
        .map_err(|e| join_error("pinging the cluster", e))?
    }
}

impl Drop for KafkaLog {
    /// Closing librdkafka clients blocks (it joins their threads and flushes for up to
    /// 0.5 s): when the last handle goes inside a tokio runtime, close them on a blocking
    /// thread instead of stalling the runtime.
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let inner = self.inner.clone();
                runtime.spawn_blocking(move || drop(inner));
            }
        }
    }
}

/// Settings shared by the metadata client and the readers.
fn consumer_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        // librdkafka refuses `assign` without a group; nothing is ever committed to it.
        .set("group.id", "hektor-log-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("fetch.error.backoff.ms", "50")
        .set("fetch.queue.backoff.ms", "20")
        .set("queued.max.messages.kbytes", "32768");
    c
}

/// What metadata says about one topic.
enum TopicState {
    Missing,
    /// Partition count, and whether every partition has a leader.
    Present {
        partitions: u32,
        ready: bool,
    },
}

impl Inner {
    /// Blocking: ask the cluster about one topic.
    fn topic_state(&self, topic: &str) -> Result<TopicState> {
        let md = self
            .meta
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| kafka_error(format!("fetching metadata of topic `{topic}`"), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(TopicState::Missing);
        };
        if let Some(err) = t.error() {
            return match RDKafkaErrorCode::from(err) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    Ok(TopicState::Missing)
                }
                RDKafkaErrorCode::LeaderNotAvailable => Ok(TopicState::Present {
                    partitions: t.partitions().len() as u32,
                    ready: false,
                }),
                code => Err(kafka_error(
                    format!("fetching metadata of topic `{topic}`"),
                    code,
                )),
            };
        }
        if t.partitions().is_empty() {
            return Ok(TopicState::Missing);
        }
        let ready = t
            .partitions()
            .iter()
            .all(|p| p.error().is_none() && p.leader() >= 0);
        Ok(TopicState::Present {
            partitions: t.partitions().len() as u32,
            ready,
        })
    }

    /// Blocking: (low, high) watermarks of a partition.
    ///
    /// A partition whose leadership is moving (just created, or its broker restarting)
    /// answers "not leader" for a moment: that is retried, within [`REQUEST_TIMEOUT`].
    fn watermarks(&self, client: &BaseConsumer, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let (low, high) = retry_metadata(
            topic,
            || format!("fetching the watermarks of {topic}/{partition}"),
            || client.fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT),
        )?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    /// The first offset at or after `time_ms` (see [`Log::offset_for_time`]): the broker's
    /// `ListOffsets` by timestamp; a partition with nothing that new answers its end.
    fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition as i32, Offset::Offset(time_ms.max(0)))
            .map_err(|e| kafka_error(format!("asking the offset of {topic}/{partition}"), e))?;
        let found = retry_metadata(
            topic,
            || format!("asking the offset of {topic}/{partition} at {time_ms} ms"),
            || self.meta.offsets_for_times(list.clone(), REQUEST_TIMEOUT),
        )?;
        let offset = found
            .find_partition(topic, partition as i32)
            .map(|p| p.offset());
        match offset {
            Some(Offset::Offset(o)) if o >= 0 => Ok(o as u64),
            // No record that new: the end of the partition.
            _ => Ok(self.watermarks(&self.meta, topic, partition)?.1),
        }
    }

    /// Drop what is cached about a topic. Call from async code: the readers are closed on
    /// a blocking thread (closing a librdkafka client joins its threads).
    fn forget_topic(&self, topic: &str) {
        self.partitions.lock().remove(topic);
        let mut closed = Vec::new();
        self.readers.lock().retain(|(t, _), pool| {
            if t == topic {
                closed.append(pool);
            }
            t != topic
        });
        if !closed.is_empty() {
            tokio::task::spawn_blocking(move || drop(closed));
        }
    }

    /// Take a reader for (topic, partition), preferring one positioned at `from`, and
    /// closing readers that have been idle too long.
    fn take_reader(&self, topic: &str, partition: u32, from: u64) -> Option<Reader> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut readers = self.readers.lock();
        readers.retain(|_, pool| {
            let (keep, old): (Vec<Reader>, Vec<Reader>) = pool
                .drain(..)
                .partition(|r| now.duration_since(r.last_used) < READER_IDLE_TIMEOUT);
            *pool = keep;
            expired.extend(old);
            !pool.is_empty()
        });
        // Pools are ordered from least to most recently used: when none is positioned at
        // `from`, re-position the least recently used one, so a partition's followers do not
        // steal each other's readers.
        let taken = readers
            .get_mut(&(topic.to_string(), partition))
            .map(|pool| {
                let index = pool.iter().position(|r| r.next == Some(from)).unwrap_or(0);
                pool.remove(index)
            });
        drop(readers);
        drop(expired);
        taken
    }

    fn put_reader(&self, topic: &str, partition: u32, mut reader: Reader) {
        reader.last_used = Instant::now();
        let mut readers = self.readers.lock();
        let pool = readers.entry((topic.to_string(), partition)).or_default();
        pool.push(reader);
        let evicted = if pool.len() > MAX_READERS_PER_PARTITION {
            Some(pool.remove(0))
        } else {
            None
        };
        drop(readers);
        drop(evicted);
    }

    fn new_reader(&self) -> Result<Reader> {
        let mut c = consumer_config(&self.brokers, "hektor-reader");
        for (k, v) in &self.config.extra {
            c.set(k, v);
        }
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| kafka_error("creating a reader", e))?;
        Ok(Reader {
            consumer,
            next: None,
            last_used: Instant::now(),
        })
    }

    /// Blocking: the whole of `Log::read`.
    fn read_blocking(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>> {
        let mut reader = match self.take_reader(topic, partition, from) {
            Some(r) => r,
            None => self.new_reader()?,
        };
        let result = self.fill(&mut reader, topic, partition, from, max, wait);
        if result.is_ok() {
            self.put_reader(topic, partition, reader);
        }
        result
    }

    fn assign(&self, reader: &mut Reader, topic: &str, partition: u32, at: u64) -> Result<()> {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(at as i64))
            .map_err(|e| kafka_error(format!("reading {topic}/{partition} from {at}"), e))?;
        reader
            .consumer
            .assign(&tpl)
            .map_err(|e| kafka_error(format!("assigning {topic}/{partition} at {at}"), e))?;
        reader.next = Some(at);
        Ok(())
    }

    fn fill(
        &self,
        reader: &mut Reader,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>> {
        if reader.next != Some(from) {
            self.assign(reader, topic, partition, from)?;
        }
        let mut out: Vec<StoredRecord> = Vec::with_capacity(max.min(4096));
        if max == 0 {
            return Ok(out);
        }
        let started = Instant::now();
        // Watermarks are asked on the metadata client, never on the reader's own: the
        // reader keeps a fetch parked at the broker (up to `fetch.wait.max.ms`, 500 ms),
        // and a broker answers one connection's requests in order, so a `ListOffsets` on
        // that connection waited for the next record or the fetch's timeout (reads came
        // back up to 500 ms after their records, issue #17).
        // Phase 1 waits for the first record; phase 2 fills the batch.
        let mut deadline = started + wait;
        // The high watermark, once asked: records below it exist and are worth waiting for.
        let mut known_high: Option<u64> = None;
        let mut last_error: Option<KafkaError> = None;
        let mut next = from;
        while out.len() < max {
            let now = Instant::now();
            let timeout = if out.is_empty() {
                // Wait in slices, checking between them that the topic still exists.
                deadline.saturating_duration_since(now).min(LIVENESS_CHECK)
            } else if known_high.is_some_and(|h| next < h) {
                deadline.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match reader.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    let offset = message.offset();
                    if offset < 0 || (offset as u64) < next {
                        continue; // left over from before a re-assign
                    }
                    out.push(stored(&message));
                    next = offset as u64 + 1;
                    reader.next = Some(next);
                    if out.len() == 1 {
                        deadline = Instant::now() + DRAIN_TIMEOUT;
                    }
                    if known_high.is_some_and(|h| next >= h) {
                        break;
                    }
                }
                Some(Err(e)) if is_offset_out_of_range(&e) => {
                    tracing::debug!(topic, partition, offset = next, error = %e, "Kafka offset out of range");
                    let (low, high) = self.watermarks(&self.meta, topic, partition)?;
                    if !out.is_empty() {
                        break;
                    }
                    if next > high {
                        // Past the end: like any read at the end, wait (until the deadline)
                        // for the partition to grow up to `next`.
                        reader.next = None;
                        loop {
                            let now = Instant::now();
                            if now >= deadline {
                                return Ok(out);
                            }
                            std::thread::sleep(PAST_END_POLL.min(deadline - now));
                            let (_, high) = self.watermarks(&self.meta, topic, partition)?;
                            if high >= next {
                                break;
                            }
                        }
                        self.assign(reader, topic, partition, next)?;
                        continue;
                    }
                    // Below the low watermark (retention or compaction removed it): the
                    // first record at or after `from` is the first one kept.
                    next = next.max(low);
                    self.assign(reader, topic, partition, next)?;
                    known_high = Some(high);
                    deadline = deadline.max(Instant::now() + CATCH_UP_TIMEOUT);
                }
                Some(Err(e)) if is_unknown_topic(&e) => {
                    // Deleted under us, or too new for this broker's metadata: ask.
                    if let TopicState::Missing = self.topic_state(topic)? {
                        return Err(LogError::UnknownTopic(topic.to_string()));
                    }
                    last_error = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Most consumer errors are transient (a broker restarting, a leader
                    // moving); librdkafka retries by itself. Keep the last one to report.
                    tracing::debug!(topic, partition, error = %e, "Kafka read error");
                    last_error = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                None if out.is_empty() && Instant::now() < deadline => {
                    // A slice of the wait ran out: a deleted topic gives no consumer
                    // error, so ask.
                    if let TopicState::Missing = self.topic_state(topic)? {
                        return Err(LogError::UnknownTopic(topic.to_string()));
                    }
                }
                None => {
                    if known_high.is_none() {
                        let (_, high) = self.watermarks(&self.meta, topic, partition)?;
                        known_high = Some(high);
                        if next < high {
                            let extra = if out.is_empty() {
                                CATCH_UP_TIMEOUT
                            } else {
                                DRAIN_TIMEOUT
                            };
                            deadline = deadline.max(Instant::now() + extra);
                            continue;
                        }
                    }
                    break;
                }
            }
        }
        if out.is_empty() {
            if let Some(e) = last_error {
                if known_high.is_some_and(|h| next < h) {
                    return Err(kafka_error(
                        format!("reading {topic}/{partition} from {from}"),
                        e,
                    ));
                }
                tracing::warn!(topic, partition, error = %e, "Kafka read returned nothing after an error");
            }
        }
        Ok(out)
    }
}

fn is_offset_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

fn is_unknown_topic(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Errors that mean a partition's leadership is changing hands, not that anything is wrong.
fn is_leader_moving(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotCoordinator
        )
    )
}

/// Copy a consumed message out of librdkafka's memory.
fn stored(message: &BorrowedMessage<'_>) -> StoredRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    StoredRecord {
        offset: message.offset().max(0) as u64,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        record: LogRecord {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        },
    }
}

fn delivered(
    topic: &str,
    partition: u32,
    result: <DeliveryFuture as std::future::Future>::Output,
) -> Result<u64> {
    match result {
        Ok(Ok(delivery)) if delivery.offset >= 0 => Ok(delivery.offset as u64),
        Ok(Ok(delivery)) => Err(LogError::Kafka(format!(
            "appending to {topic}/{partition}: the broker returned no offset ({})",
            delivery.offset
        ))),
        Ok(Err((e, _))) => Err(if is_unknown_topic(&e) {
            LogError::UnknownTopic(topic.to_string())
        } else {
            kafka_error(format!("appending to {topic}/{partition}"), e)
        }),
        Err(_) => Err(LogError::Closed),
    }
}

impl KafkaLog {
    /// The partition count of a topic, from the cache or the cluster.
    async fn known_partitions(&self, topic: &str) -> Result<u32> {
        if let Some(&n) = self.inner.partitions.lock().get(topic) {
            return Ok(n);
        }
        let inner = self.inner.clone();
        let name = topic.to_string();
        let state = tokio::task::spawn_blocking(move || inner.topic_state(&name))
            .await
            .map_err(|e| join_error(format!("looking up topic `{topic}`"), e))??;
        match state {
            TopicState::Missing => Err(LogError::UnknownTopic(topic.to_string())),
            TopicState::Present { partitions, .. } => {
                self.inner
                    .partitions
                    .lock()
                    .insert(topic.to_string(), partitions);
                Ok(partitions)
            }
        }
    }

    /// A topic found missing is forgotten, so the next call asks the cluster again.
    fn forget_if_gone<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(LogError::UnknownTopic(topic)) = &result {
            self.inner.forget_topic(topic);
        }
        result
    }

    async fn check_partition(&self, topic: &str, partition: u32) -> Result<()> {
        let mut partitions = self.known_partitions(topic).await?;
        if partition >= partitions {
            // Partitions may have been added since the count was cached.
            partitions = Log::partitions(self, topic).await?;
        }
        if partition >= partitions {
            return Err(LogError::PartitionOutOfRange {
                topic: topic.to_string(),
                partition,
                partitions,
            });
        }
        Ok(())
    }

    async fn topic_state(&self, topic: &str) -> Result<TopicState> {
        let inner = self.inner.clone();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || inner.topic_state(&name))
            .await
            .map_err(|e| join_error(format!("looking up topic `{topic}`"), e))?
    }

    /// Wait until metadata shows the topic with all its partitions led.
    async fn wait_ready(&self, spec: &TopicSpec, deadline: Instant) -> Result<u32> {
        loop {
            match self.topic_state(&spec.name).await? {
                TopicState::Present {
                    partitions,
                    ready: true,
                } if partitions >= spec.partitions => return Ok(partitions),
                _ if Instant::now() >= deadline => {
                    return Err(LogError::Timeout(TOPIC_CHANGE_TIMEOUT));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

#[async_trait]
impl Log for KafkaLog {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        if spec.partitions == 0 {
            return Err(LogError::Kafka(format!(
                "topic `{}` needs at least one partition",
                spec.name
            )));
        }
        let configs: Vec<(&'static str, String)> = spec.kafka_configs();
        let deadline = Instant::now() + TOPIC_CHANGE_TIMEOUT;
        let options = AdminOptions::new().operation_timeout(Some(TOPIC_CHANGE_TIMEOUT));
        loop {
            let mut new_topic = NewTopic::new(
                &spec.name,
                spec.partitions as i32,
                TopicReplication::Fixed(i32::from(spec.replication.max(1))),
            );
            for (k, v) in &configs {
                new_topic = new_topic.set(k, v);
            }
            let results = self
                .inner
                .admin
                .create_topics([&new_topic], &options)
                .await
                .map_err(|e| kafka_error(format!("creating topic `{}`", spec.name), e))?;
            let outcome = results.into_iter().next().unwrap_or(Ok(spec.name.clone()));
            match outcome {
                Ok(_) => break,
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    match self.topic_state(&spec.name).await? {
                        TopicState::Present { partitions, .. } if partitions != spec.partitions => {
                            return Err(LogError::TopicMismatch {
                                topic: spec.name.clone(),
                                existing: partitions,
                                wanted: spec.partitions,
                            });
                        }
                        TopicState::Present { .. } => break,
                        // Still being deleted: try again.
                        TopicState::Missing if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        TopicState::Missing => return Err(LogError::Timeout(TOPIC_CHANGE_TIMEOUT)),
                    }
                }
                Err((_, code)) => {
                    return Err(LogError::Kafka(format!(
                        "creating topic `{}` ({} partitions, replication {}): {code}",
                        spec.name, spec.partitions, spec.replication
                    )));
                }
            }
        }
        let partitions = self.wait_ready(spec, deadline).await?;
        if partitions != spec.partitions {
            return Err(LogError::TopicMismatch {
                topic: spec.name.clone(),
                existing: partitions,
                wanted: spec.partitions,
            });
        }
        self.inner
            .partitions
            .lock()
            .insert(spec.name.clone(), partitions);
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.forget_topic(topic);
        let options = AdminOptions::new().operation_timeout(Some(TOPIC_CHANGE_TIMEOUT));
        let results = self
            .inner
            .admin
            .delete_topics(&[topic], &options)
            .await
            .map_err(|e| kafka_error(format!("deleting topic `{topic}`"), e))?;
        match results.into_iter().next() {
            None | Some(Ok(_)) => {}
            Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => return Ok(()),
            Some(Err((_, code))) => {
                return Err(LogError::Kafka(format!("deleting topic `{topic}`: {code}")));
            }
        }
        let deadline = Instant::now() + TOPIC_CHANGE_TIMEOUT;
        loop {
            if let TopicState::Missing = self.topic_state(topic).await? {
                break;
            }
            if Instant::now() >= deadline {
                return Err(LogError::Timeout(TOPIC_CHANGE_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.forget_topic(topic);
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        // Always ask the cluster: partitions may have been added or the topic removed.
        match self.topic_state(topic).await? {
            TopicState::Missing => {
                self.inner.forget_topic(topic);
                Err(LogError::UnknownTopic(topic.to_string()))
            }
            TopicState::Present { partitions, .. } => {
                self.inner
                    .partitions
                    .lock()
                    .insert(topic.to_string(), partitions);
                Ok(partitions)
            }
        }
    }

    /// Every record goes to `partition` explicitly. All are handed to the producer first
    /// (waiting for room when its queue is full), then their deliveries are awaited in
    /// order. On an error the records before it may have been appended (the idempotent
    /// producer never reorders or duplicates them); the error says which partition failed.
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<Vec<u64>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.check_partition(topic, partition).await?;
        let producer = &self.inner.producer;
        let mut pending = VecDeque::with_capacity(records.len());
        let mut offsets = Vec::with_capacity(records.len());
        for record in &records {
            let mut message = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(partition as i32)
                .payload(record.value.as_slice());
            if let Some(key) = &record.key {
                message = message.key(key.as_slice());
            }
            if !record.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
                for (name, value) in &record.headers {
                    headers = headers.insert(Header {
                        key: name.as_str(),
                        value: Some(value.as_slice()),
                    });
                }
                message = message.headers(headers);
            }
            loop {
                match producer.send_result(message) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        // The producer queue is full: wait for our oldest record to be
                        // delivered (or, if we have none in flight, for others' to be).
                        message = back;
                        match pending.pop_front() {
                            Some(oldest) => {
                                offsets.push(delivered(topic, partition, oldest.await)?)
                            }
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => {
                        return Err(kafka_error(format!("appending to {topic}/{partition}"), e));
                    }
                }
            }
        }
        for delivery in pending {
            let offset = self.forget_if_gone(delivered(topic, partition, delivery.await))?;
            offsets.push(offset);
        }
        Ok(offsets)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredRecord>> {
        self.check_partition(topic, partition).await?;
        let inner = self.inner.clone();
        let name = topic.to_string();
        let result = tokio::task::spawn_blocking(move || {
            inner.read_blocking(&name, partition, from, max, wait)
        })
        .await
        .map_err(|e| join_error(format!("reading {topic}/{partition}"), e))?;
        self.forget_if_gone(result)
    }

    async fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64> {
        self.check_partition(topic, partition).await?;
        let inner = self.inner.clone();
        let name = topic.to_string();
        let result =
            tokio::task::spawn_blocking(move || inner.watermarks(&inner.meta, &name, partition))
                .await
                .map_err(|e| {
                    join_error(
                        format!("asking the high watermark of {topic}/{partition}"),
                        e,
                    )
                })?;
        let (_, high) = self.forget_if_gone(result)?;
        Ok(high)
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        self.check_partition(topic, partition).await?;
        let inner = self.inner.clone();
        let name = topic.to_string();
        let result =
            tokio::task::spawn_blocking(move || inner.offset_for_time(&name, partition, time_ms))
                .await
                .map_err(|e| {
                    join_error(
                        format!("asking the offset of {topic}/{partition} at {time_ms} ms"),
                        e,
                    )
                })?;
        self.forget_if_gone(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_round_trip() {
        for c in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
        ] {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
        }
        assert_eq!(" ZSTD ".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("brotli".parse::<Compression>().is_err());
        assert_eq!(KafkaConfig::default().compression, Compression::Lz4);
    }

    #[test]
    fn properties_parse_and_secrets_stay_out_of_debug_and_errors() {
        let text = "# SASL over TLS\nsecurity.protocol = SASL_SSL\n\n! also a comment\nsasl.password=s3cr=t \n";
        let props = parse_properties(text, "client.properties").unwrap();
        assert_eq!(
            props,
            [
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "s3cr=t".to_owned()),
            ]
        );
        let config = KafkaConfig {
            extra: props,
            ..KafkaConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("sasl.password=<redacted>"), "{shown}");
        assert!(!shown.contains("s3cr=t"), "{shown}");
        let err = parse_properties("ok=1\nsasl.password s3cret\n", "f").unwrap_err();
        assert!(err.to_string().contains("at f:2"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(parse_property("=x", "flag").is_err());
        assert!(parse_property("a b=x", "flag").is_err());
    }

    #[test]
    fn connect_rejects_bad_settings_without_a_broker() {
        assert!(KafkaLog::connect("  ", KafkaConfig::default()).is_err());
        let config = KafkaConfig {
            extra: vec![("no.such.property".into(), "1".into())],
            ..KafkaConfig::default()
        };
        assert!(matches!(
            KafkaLog::connect("127.0.0.1:1", config),
            Err(LogError::Kafka(_))
        ));
        assert!(KafkaLog::connect("127.0.0.1:1", KafkaConfig::default()).is_ok());
    }
}
