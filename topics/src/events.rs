//! The event sink: every query and write a node serves becomes an [`Event`] on the
//! collection's events topic, the input of hotness tracking (the kinetic-sharding dataflow).
//!
//! Recording never blocks and never slows the request: [`EventSink::record`] is a
//! `try_send` into a bounded channel; a background task batches events every
//! [`FLUSH_EVERY`] (or [`FLUSH_BATCH`] events) into one append per partition. When the
//! channel is full the event is dropped and counted in [`EventSink::dropped`] — losing a
//! metric sample is better than adding latency to a query.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::codec::{self, Encoding};
use crate::hlc::wall_ms;
use crate::log::{Log, LogRecord};
use crate::record::{Event, EventKind};
use crate::topic::{topic_name, TopicKind};

/// How often buffered events are appended.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Flush early once this many events are buffered.
pub const FLUSH_BATCH: usize = 8192;
const CHANNEL_CAPACITY: usize = 65_536;

/// A cheap, cloneable handle that records events off the hot path.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Event>>,
    node: Arc<str>,
    dropped: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink that appends to the events topics of `log`, stamped with this node's id.
    pub fn spawn(log: Arc<dyn Log>, node: impl Into<String>) -> EventSink {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let sink = EventSink {
            tx: Some(tx),
            node: node.into().into(),
            dropped: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(flush_loop(log, rx, Arc::clone(&sink.sent)));
        sink
    }

    /// A sink that records nothing (tests, tools).
    pub fn disabled() -> EventSink {
        EventSink {
            tx: None,
            node: "".into(),
            dropped: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Record one served query or write. Never blocks.
    pub fn record(
        &self,
        collection: &str,
        shard: u32,
        ring: u64,
        kind: EventKind,
        latency_us: u32,
    ) {
        let Some(tx) = &self.tx else { return };
        let event = Event {
            collection: collection.to_owned(),
            shard,
            ring,
            kind,
            latency_us,
            time_ms: wall_ms(),
            node: self.node.to_string(),
        };
        if tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
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

async fn flush_loop(log: Arc<dyn Log>, mut rx: mpsc::Receiver<Event>, sent: Arc<AtomicU64>) {
    let mut buffer: Vec<Event> = Vec::with_capacity(FLUSH_BATCH);
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        let closed = loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Some(event) => {
                        buffer.push(event);
                        if buffer.len() >= FLUSH_BATCH { break false; }
                    }
                    None => break true,
                },
                _ = &mut deadline => break false,
            }
        };
        if !buffer.is_empty() {
            let n = buffer.len() as u64;
            flush(&*log, std::mem::take(&mut buffer)).await;
            sent.fetch_add(n, Ordering::Relaxed);
        }
        if closed {
            return;
        }
    }
}

async fn flush(log: &dyn Log, events: Vec<Event>) {
    let mut by_topic: BTreeMap<(String, u32), Vec<LogRecord>> = BTreeMap::new();
    for event in events {
        match codec::to_log_record(None, &event, Encoding::Binary) {
            Ok(record) => by_topic
                .entry((
                    topic_name(&event.collection, TopicKind::Events),
                    event.shard,
                ))
                .or_default()
                .push(record),
            Err(err) => tracing::warn!(%err, "could not encode an event"),
        }
    }
    for ((topic, shard), records) in by_topic {
        // The events topic has as many partitions as the vectors topic; fold larger shard
        // numbers (after splits) onto it.
        let partitions = match log.partitions(&topic).await {
            Ok(p) => p.max(1),
            Err(err) => {
                tracing::debug!(%err, %topic, "events topic gone; dropping events");
                continue;
            }
        };
        if let Err(err) = log.append(&topic, shard % partitions, records).await {
            tracing::warn!(%err, %topic, "could not append events");
        }
    }
}
