//! The event sink: every query and write a node serves becomes an [`Event`] on the
//! collection's events topic, the input of hotness tracking (the kinetic-sharding dataflow).
//!
//! Recording never blocks and never slows the request: [`EventSink::record`] appends a
//! small fixed-size entry (the collection as an index into names kept with the buffer,
//! no string copied, nothing allocated once the buffer has grown) to a bounded buffer
//! under a short lock, and wakes nobody; a background task takes the buffer every
//! [`FLUSH_EVERY`] (or as soon as [`FLUSH_BATCH`] events wait) and appends it, one append
//! per partition. When the buffer is full the event is dropped and counted in
//! [`EventSink::dropped`] — losing a metric sample is better than adding latency to a
//! query. When the last handle is dropped, the task appends what is left and ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::codec::{self, Encoding};
use crate::hlc::wall_ms;
use crate::record::{Event, EventKind};
use crate::topic::{topic_name, TopicKind};
use hektor_log::{Log, LogRecord};

/// How often buffered events are appended.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Flush early once this many events are buffered.
pub const FLUSH_BATCH: usize = 8192;
/// Events buffered at most; one more is dropped.
const CHANNEL_CAPACITY: usize = 65_536;

/// One recorded event, before it is encoded: the collection is an index into
/// [`Buffer::names`], the node is the sink's.
#[derive(Debug, Clone, Copy)]
struct Pending {
    name: u32,
    shard: u32,
    ring: u64,
    kind: EventKind,
    latency_us: u32,
    time_ms: u64,
}

/// What waits for the next flush.
#[derive(Default)]
struct Buffer {
    events: Vec<Pending>,
    /// The collections named by `events`, by index (reset by each flush).
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Buffer {
    fn name_index(&mut self, collection: &str) -> u32 {
        if let Some(&i) = self.index.get(collection) {
            return i;
        }
        let i = self.names.len() as u32;
        let name: Arc<str> = collection.into();
        self.names.push(Arc::clone(&name));
        self.index.insert(name, i);
        i
    }
}

/// The buffer and the flush task's signals, shared by every handle and the task.
struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the flush task early (a full batch, or the last handle gone).
    wake: Notify,
    closed: AtomicBool,
}

/// Held by every clone of a live sink; when the last one goes, the flush task appends
/// what is left and ends.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// A cheap, cloneable handle that records events off the hot path.
#[derive(Clone)]
pub struct EventSink {
    open: Option<Arc<Open>>,
    dropped: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink that appends to the events topics of `log`, stamped with this node's id.
    pub fn spawn(log: Arc<dyn Log>, node: impl Into<String>) -> EventSink {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let sink = EventSink {
            open: Some(Arc::new(Open(Arc::clone(&shared)))),
            dropped: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(flush_loop(log, shared, node.into(), Arc::clone(&sink.sent)));
        sink
    }

    /// A sink that records nothing (tests, tools).
    pub fn disabled() -> EventSink {
        EventSink {
            open: None,
            dropped: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Record one served query or write. Never blocks (a short lock, no allocation once
    /// the buffer has grown) and wakes nobody, except once per [`FLUSH_BATCH`] events.
    pub fn record(
        &self,
        collection: &str,
        shard: u32,
        ring: u64,
        kind: EventKind,
        latency_us: u32,
    ) {
        let Some(open) = &self.open else { return };
        let shared = &open.0;
        let time_ms = wall_ms();
        let full_batch = {
            let mut buffer = shared.buffer.lock();
            if buffer.events.len() >= CHANNEL_CAPACITY {
                drop(buffer);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let name = buffer.name_index(collection);
            buffer.events.push(Pending {
                name,
                shard,
                ring,
                kind,
                latency_us,
                time_ms,
            });
            buffer.events.len() == FLUSH_BATCH
        };
        if full_batch {
            shared.wake.notify_one();
        }
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events appended to the log so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

async fn flush_loop(log: Arc<dyn Log>, shared: Arc<Shared>, node: String, sent: Arc<AtomicU64>) {
    // The buffers swapped in for the next round: grown once, reused.
    let mut spare: Vec<Pending> = Vec::with_capacity(FLUSH_BATCH);
    loop {
        // `notified` is armed before the flag is read, so a close or a full batch that
        // lands in between is not missed.
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut closed = shared.closed.load(Ordering::Acquire);
        if !closed && shared.buffer.lock().events.len() < FLUSH_BATCH {
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            closed = shared.closed.load(Ordering::Acquire);
        }
        let (events, names) = {
            let mut buffer = shared.buffer.lock();
            let events = std::mem::replace(&mut buffer.events, std::mem::take(&mut spare));
            buffer.index.clear();
            (events, std::mem::take(&mut buffer.names))
        };
        if !events.is_empty() {
            let n = events.len() as u64;
            flush(&*log, &names, &node, &events).await;
            sent.fetch_add(n, Ordering::Relaxed);
        }
        spare = events;
        spare.clear();
        if closed {
            return;
        }
    }
}

/// Encode and append `events` (collections named by index into `names`), one append per
/// events-topic partition.
async fn flush(log: &dyn Log, names: &[Arc<str>], node: &str, events: &[Pending]) {
    // One `Event` per collection, refilled per event: no string copied per event.
    let mut templates: Vec<Event> = names
        .iter()
        .map(|name| Event {
            collection: name.to_string(),
            shard: 0,
            ring: 0,
            kind: EventKind::Query,
            latency_us: 0,
            time_ms: 0,
            node: node.to_owned(),
        })
        .collect();
    let topics: Vec<String> = names
        .iter()
        .map(|name| topic_name(name, TopicKind::Events))
        .collect();
    let mut by_topic: BTreeMap<(&str, u32), Vec<LogRecord>> = BTreeMap::new();
    for p in events {
        let Some(event) = templates.get_mut(p.name as usize) else {
            continue;
        };
        event.shard = p.shard;
        event.ring = p.ring;
        event.kind = p.kind;
        event.latency_us = p.latency_us;
        event.time_ms = p.time_ms;
        match codec::to_log_record(None, &*event, Encoding::Binary) {
            Ok(record) => by_topic
                .entry((topics[p.name as usize].as_str(), p.shard))
                .or_default()
                .push(record),
            Err(err) => tracing::warn!(%err, "could not encode an event"),
        }
    }
    for ((topic, shard), records) in by_topic {
        // The events topic has as many partitions as the vectors topic; fold larger shard
        // numbers (after splits) onto it.
        let partitions = match log.partitions(topic).await {
            Ok(p) => p.max(1),
            Err(err) => {
                tracing::debug!(%err, %topic, "events topic gone; dropping events");
                continue;
            }
        };
        if let Err(err) = log.append(topic, shard % partitions, records).await {
            tracing::warn!(%err, %topic, "could not append events");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::collection_topic;
    use hektor_log::embedded::EmbeddedLog;

    /// Every recorded event reaches its collection's events topic, in order per partition,
    /// with every field as recorded and the sink's node; the last events are appended
    /// when the sink is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_reach_their_topics_with_every_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path()).expect("log"));
        for c in ["a", "bb"] {
            log.ensure_topic(&collection_topic(
                c,
                TopicKind::Events,
                2,
                1,
                Default::default(),
            ))
            .await
            .expect("events topic");
        }
        let sink = EventSink::spawn(Arc::clone(&log), "node-1");
        let copy = sink.clone();
        let mut expected: Vec<(String, u32, u64, EventKind, u32)> = Vec::new();
        for i in 0..300u32 {
            let (c, shard) = if i % 3 == 0 { ("bb", 1) } else { ("a", i % 2) };
            let kind = [EventKind::Query, EventKind::Upsert, EventKind::Delete][i as usize % 3];
            let h = if i % 2 == 0 { &sink } else { &copy };
            h.record(c, shard, u64::from(i) << 40, kind, i * 7);
            expected.push((c.to_owned(), shard, u64::from(i) << 40, kind, i * 7));
        }
        drop(copy);
        let sent = Arc::clone(&sink.sent);
        drop(sink);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sent.load(Ordering::Relaxed) < 300 {
            assert!(std::time::Instant::now() < deadline, "events not flushed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut got = Vec::new();
        for c in ["a", "bb"] {
            let topic = topic_name(c, TopicKind::Events);
            for partition in 0..2 {
                let records = log
                    .read(&topic, partition, 0, 1000, Duration::ZERO)
                    .await
                    .expect("read");
                for r in records {
                    let e: Event = codec::from_log_record(&r.record).expect("an event");
                    assert_eq!(e.node, "node-1");
                    assert_eq!(e.shard % 2, partition);
                    assert!(e.time_ms > 0);
                    got.push((e.collection, e.shard, e.ring, e.kind, e.latency_us));
                }
            }
        }
        let key = |e: &(String, u32, u64, EventKind, u32)| e.2;
        got.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(got, expected);
    }

    #[test]
    fn a_disabled_sink_records_nothing() {
        let sink = EventSink::disabled();
        sink.record("a", 0, 0, EventKind::Query, 1);
        assert_eq!((sink.dropped(), sink.sent()), (0, 0));
    }
}
