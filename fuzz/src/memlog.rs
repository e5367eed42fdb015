//! An in-memory [`Log`] for the harnesses: the real catalog, plan follower and writer run
//! over it, so a fuzzed record reaches them by the same door as a record read from Kafka.
//!
//! This module owns only that stand-in log. It is not a second backend of hektor: no
//! durability, no waiting (a read of nothing returns at once, whatever `wait` says), and
//! each partition keeps at most `retain` records (older ones are dropped, offsets go on),
//! so a harness that runs millions of times in one process stays small.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use hektor_log::{Log, LogError, LogRecord, Result, StoredRecord, TopicSpec};
use parking_lot_shim::Mutex;

/// One partition: the records kept and the offset of the first of them.
#[derive(Default)]
struct Partition {
    first: u64,
    records: VecDeque<StoredRecord>,
}

impl Partition {
    fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

/// Topics by name, each a list of partitions.
pub struct MemLog {
    topics: Mutex<BTreeMap<String, Vec<Partition>>>,
    retain: usize,
}

impl MemLog {
    /// A log keeping at most `retain` records per partition.
    pub fn new(retain: usize) -> MemLog {
        MemLog {
            topics: Mutex::new(BTreeMap::new()),
            retain: retain.max(1),
        }
    }

    /// Append without an async context (to lay out records before the code under test
    /// reads them); topics are made on first use with as many partitions as needed.
    pub fn push(&self, topic: &str, partition: u32, record: LogRecord) -> u64 {
        let mut topics = self.topics.lock();
        let parts = topics.entry(topic.to_owned()).or_default();
        while parts.len() <= partition as usize {
            parts.push(Partition::default());
        }
        let part = &mut parts[partition as usize];
        let offset = part.next();
        part.records.push_back(StoredRecord {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            record,
        });
        while part.records.len() > self.retain {
            part.records.pop_front();
            part.first += 1;
        }
        offset
    }

    /// Every record kept in one partition (empty for an unknown one).
    pub fn records(&self, topic: &str, partition: u32) -> Vec<StoredRecord> {
        self.topics
            .lock()
            .get(topic)
            .and_then(|parts| parts.get(partition as usize))
            .map(|p| p.records.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forget every record of a topic (offsets go on).
    pub fn clear(&self, topic: &str) {
        if let Some(parts) = self.topics.lock().get_mut(topic) {
            for p in parts {
                p.first = p.next();
                p.records.clear();
            }
        }
    }
}

#[async_trait]
impl Log for MemLog {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        let mut topics = self.topics.lock();
        let parts = topics.entry(spec.name.clone()).or_default();
        while parts.len() < spec.partitions as usize {
            parts.push(Partition::default());
        }
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.topics.lock().remove(topic);
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        match self.topics.lock().get(topic) {
            Some(parts) => Ok(parts.len() as u32),
            None => Err(LogError::UnknownTopic(topic.to_owned())),
        }
    }

    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<LogRecord>,
    ) -> Result<Vec<u64>> {
        Ok(records
            .into_iter()
            .map(|r| self.push(topic, partition, r))
            .collect())
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        _wait: Duration,
    ) -> Result<Vec<StoredRecord>> {
        let topics = self.topics.lock();
        let Some(parts) = topics.get(topic) else {
            return Err(LogError::UnknownTopic(topic.to_owned()));
        };
        let Some(part) = parts.get(partition as usize) else {
            return Ok(Vec::new());
        };
        let skip = from.saturating_sub(part.first) as usize;
        Ok(part.records.iter().skip(skip).take(max).cloned().collect())
    }

    async fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self
            .topics
            .lock()
            .get(topic)
            .and_then(|parts| parts.get(partition as usize))
            .map_or(0, Partition::next))
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        let topics = self.topics.lock();
        let Some(part) = topics.get(topic).and_then(|p| p.get(partition as usize)) else {
            return Ok(0);
        };
        Ok(part
            .records
            .iter()
            .find(|r| r.timestamp_ms >= time_ms)
            .map_or(part.next(), |r| r.offset))
    }
}

/// `std::sync::Mutex` with a `lock()` that does not return a `Result` (a panic in a
/// harness aborts the process anyway, so poisoning never matters here).
mod parking_lot_shim {
    pub struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(std::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}
