//! The log conformance suite: the behaviour every [`Log`] backend must show, written once
//! and run against each backend (`conformance_embedded.rs`, `conformance_kafka.rs`).
//!
//! This module owns the cases; it does not own any backend, and it knows nothing about how
//! a backend is set up: a [`Backend`] hands out log handles. Every case creates its own
//! uniquely named topics (the Kafka broker is shared and persistent) and deletes them at the
//! end. Reads go through [`read_exactly`], which tolerates a backend returning fewer
//! records per call than asked for (Kafka does).
//!
//! Usage from a test file:
//! ```ignore
//! mod conformance;
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn order_and_dense_offsets() {
//!     conformance::order_and_dense_offsets(&MyBackend::new(), "hektor-test").await;
//! }
//! ```

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hektor_log::LogError;
use hektor_log::{Cleanup, TopicSpec};
use hektor_log::{Log, LogRecord, StoredRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a test gets log handles.
#[async_trait]
pub trait Backend: Send + Sync {
    /// "embedded", "kafka", ... (used in messages).
    fn name(&self) -> &str;

    /// A new handle on the same underlying log. After every earlier handle is dropped, this
    /// is what a restarted process sees.
    async fn open(&self) -> Arc<dyn Log>;
}

/// How long one read waits for records that should already be there.
pub const PRESENT_WAIT: Duration = Duration::from_secs(10);

/// A topic name no other test (in this or any other run) uses:
/// `<prefix>.<case>.<time>-<pid>-<counter>`.
pub fn unique_topic(prefix: &str, case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}.{case}.{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn spec(name: &str, partitions: u32, cleanup: Cleanup) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        cleanup,
        replication: 1,
    }
}

/// A time-retained topic (no compaction, so offsets stay dense).
pub fn retained(name: &str, partitions: u32) -> TopicSpec {
    spec(name, partitions, Cleanup::Retain { ms: 3_600_000 })
}

pub fn record(key: Option<&str>, value: impl Into<Vec<u8>>) -> LogRecord {
    LogRecord::new(key.map(|k| k.as_bytes().to_vec()), value.into())
}

/// Read records from `from` until `n` have arrived (panics if a read comes back empty
/// after waiting [`PRESENT_WAIT`] first).
pub async fn read_exactly(
    log: &dyn Log,
    topic: &str,
    partition: u32,
    from: u64,
    n: usize,
) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::with_capacity(n);
    let mut next = from;
    while out.len() < n {
        let batch = log
            .read(topic, partition, next, n - out.len(), PRESENT_WAIT)
            .await
            .unwrap_or_else(|e| panic!("read {topic}/{partition} from {next}: {e}"));
        assert!(
            !batch.is_empty(),
            "{topic}/{partition}: only {} of {n} records from offset {from} arrived",
            out.len()
        );
        assert!(
            batch.len() <= n - out.len(),
            "read returned {} records, more than the {} asked for",
            batch.len(),
            n - out.len()
        );
        for stored in &batch {
            assert!(
                stored.offset >= next,
                "offset {} went backwards (expected >= {next})",
                stored.offset
            );
            next = stored.offset + 1;
        }
        out.extend(batch);
    }
    out
}

/// Assert nothing is readable at or after `from` (with a short wait).
pub async fn assert_nothing_after(log: &dyn Log, topic: &str, partition: u32, from: u64) {
    let rest = log
        .read(topic, partition, from, 100, Duration::from_millis(300))
        .await
        .unwrap_or_else(|e| panic!("read {topic}/{partition} from {from}: {e}"));
    assert!(
        rest.is_empty(),
        "{topic}/{partition}: unexpected records after offset {from}: offsets {:?}",
        rest.iter().map(|r| r.offset).collect::<Vec<_>>()
    );
}

fn assert_same_records(got: &[StoredRecord], expected: &[(u64, LogRecord)]) {
    assert_eq!(got.len(), expected.len(), "record count");
    for (stored, (offset, record)) in got.iter().zip(expected) {
        assert_eq!(stored.offset, *offset, "offset");
        assert_eq!(&stored.record, record, "record at offset {offset}");
    }
}

async fn delete(log: &dyn Log, topic: &str) {
    log.delete_topic(topic)
        .await
        .unwrap_or_else(|e| panic!("delete {topic}: {e}"));
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 1. `ensure_topic` is idempotent, a partition mismatch is an error, `partitions` reports
///    the count, unknown topics are `UnknownTopic`, deleting twice is fine.
pub async fn topic_lifecycle(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "lifecycle");
    log.ensure_topic(&retained(&topic, 3)).await.unwrap();
    log.ensure_topic(&retained(&topic, 3))
        .await
        .expect("ensure_topic twice with the same spec must succeed");
    assert_eq!(log.partitions(&topic).await.unwrap(), 3);

    match log.ensure_topic(&retained(&topic, 4)).await {
        Err(LogError::TopicMismatch {
            topic: t,
            existing,
            wanted,
        }) => {
            assert_eq!((t.as_str(), existing, wanted), (topic.as_str(), 3, 4));
        }
        other => panic!("ensure_topic with another partition count gave {other:?}"),
    }
    assert_eq!(
        log.partitions(&topic).await.unwrap(),
        3,
        "mismatch changed the topic"
    );

    let missing = unique_topic(prefix, "missing");
    assert!(
        matches!(log.partitions(&missing).await, Err(LogError::UnknownTopic(t)) if t == missing)
    );
    assert!(matches!(
        log.high_watermark(&missing, 0).await,
        Err(LogError::UnknownTopic(t)) if t == missing
    ));
    assert!(matches!(
        log.append(&missing, 0, vec![record(None, "x")]).await,
        Err(LogError::UnknownTopic(t)) if t == missing
    ));

    delete(&*log, &topic).await;
    delete(&*log, &topic).await;
    delete(&*log, &missing).await;
    // Deletion may take a moment to be visible (Kafka's metadata).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match log.partitions(&topic).await {
            Err(LogError::UnknownTopic(_)) => break,
            other if Instant::now() >= deadline => {
                panic!("{topic} still there after delete: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// 2. Order per partition and dense offsets across several batches and partitions; read
///    from 0 returns exactly those records (key, value, headers) in order.
pub async fn order_and_dense_offsets(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "order");
    log.ensure_topic(&retained(&topic, 3)).await.unwrap();
    let before = now_ms();
    let mut expected: Vec<Vec<(u64, LogRecord)>> = vec![Vec::new(); 3];
    for (round, size) in [5usize, 1, 7].into_iter().enumerate() {
        for partition in [2u32, 0, 1] {
            let batch: Vec<LogRecord> = (0..size)
                .map(|i| {
                    let seq = expected[partition as usize].len() + i;
                    record(
                        Some(&format!("p{partition}-k{seq}")),
                        format!("value {partition}/{seq} round {round}"),
                    )
                    .with_header("seq", seq.to_string())
                    .with_header("partition", vec![partition as u8])
                })
                .collect();
            let offsets = log.append(&topic, partition, batch.clone()).await.unwrap();
            let start = expected[partition as usize].len() as u64;
            assert_eq!(
                offsets,
                (start..start + size as u64).collect::<Vec<_>>(),
                "offsets of round {round} in partition {partition}"
            );
            expected[partition as usize].extend(offsets.into_iter().zip(batch));
        }
    }
    let after = now_ms();
    for partition in 0..3u32 {
        let want = &expected[partition as usize];
        let got = read_exactly(&*log, &topic, partition, 0, want.len()).await;
        assert_same_records(&got, want);
        for stored in &got {
            assert!(
                stored.timestamp_ms >= before - 60_000 && stored.timestamp_ms <= after + 60_000,
                "timestamp {} is not the append time (between {before} and {after})",
                stored.timestamp_ms
            );
        }
        assert_nothing_after(&*log, &topic, partition, want.len() as u64).await;
    }
    delete(&*log, &topic).await;
}

/// 3. Replay from 0 and from the middle, paging with `max`, waiting past the end, and a
///    waiting reader woken promptly by an append.
pub async fn replay_paging_and_waiting(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "replay");
    log.ensure_topic(&retained(&topic, 1)).await.unwrap();
    let records: Vec<LogRecord> = (0..25)
        .map(|i| record(Some(&format!("k{i}")), format!("v{i}")))
        .collect();
    log.append(&topic, 0, records.clone()).await.unwrap();
    let expected: Vec<(u64, LogRecord)> = (0..).zip(records.iter().cloned()).collect();

    // Replay from 0, twice: reading does not consume.
    for _ in 0..2 {
        let all = read_exactly(&*log, &topic, 0, 0, 25).await;
        assert_same_records(&all, &expected);
    }
    // From the middle.
    let tail = read_exactly(&*log, &topic, 0, 10, 15).await;
    assert_same_records(&tail, &expected[10..]);

    // Paging with max = 4.
    let mut pages = Vec::new();
    let mut next = 0;
    while next < 25 {
        let page = log.read(&topic, 0, next, 4, PRESENT_WAIT).await.unwrap();
        assert!(!page.is_empty(), "page from {next} came back empty");
        assert!(page.len() <= 4, "page of {} records with max 4", page.len());
        assert_eq!(page[0].offset, next, "page starts at the offset asked for");
        next = page.last().map_or(next, |r| r.offset + 1);
        pages.extend(page);
    }
    assert_same_records(&pages, &expected);

    // Reading past the end waits about `wait`, then returns nothing.
    let wait = Duration::from_millis(600);
    for from in [25, 1_000] {
        let started = Instant::now();
        let empty = log.read(&topic, 0, from, 10, wait).await.unwrap();
        let waited = started.elapsed();
        assert!(empty.is_empty(), "records past the end from {from}");
        assert!(
            waited >= wait.mul_f32(0.8),
            "read from {from} returned after {waited:?}, before the wait of {wait:?}"
        );
        assert!(
            waited <= wait + Duration::from_secs(5),
            "read from {from} took {waited:?} with a wait of {wait:?}"
        );
    }

    // A waiting reader is woken promptly by an append.
    let reader = {
        let log = log.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let got = log
                .read(&topic, 0, 25, 10, Duration::from_secs(30))
                .await
                .unwrap();
            (got, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "reader returned before anything was appended"
    );
    let appended_at = Instant::now();
    let late = record(Some("late"), "late value");
    assert_eq!(
        log.append(&topic, 0, vec![late.clone()]).await.unwrap(),
        vec![25]
    );
    let (got, woke_at) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the waiting reader was not woken by the append")
        .unwrap();
    assert_same_records(&got, &[(25, late)]);
    let latency = woke_at.saturating_duration_since(appended_at);
    assert!(
        latency < Duration::from_secs(3),
        "reader woke {latency:?} after the append"
    );
    delete(&*log, &topic).await;
}

/// 4. The high watermark is the number of records appended per partition, 0 when empty.
pub async fn high_watermark_counts(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "watermark");
    log.ensure_topic(&retained(&topic, 2)).await.unwrap();
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), 0);
    assert_eq!(log.high_watermark(&topic, 1).await.unwrap(), 0);
    let batch = |n: usize| {
        (0..n)
            .map(|i| record(None, format!("{i}")))
            .collect::<Vec<_>>()
    };
    log.append(&topic, 0, batch(7)).await.unwrap();
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), 7);
    assert_eq!(log.high_watermark(&topic, 1).await.unwrap(), 0);
    log.append(&topic, 0, batch(3)).await.unwrap();
    log.append(&topic, 1, batch(2)).await.unwrap();
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), 10);
    assert_eq!(log.high_watermark(&topic, 1).await.unwrap(), 2);
    delete(&*log, &topic).await;
}

/// 4b. `offset_for_time`: the first record appended at or after a time, the high watermark
///     when none is that new, 0 on an empty partition.
pub async fn offsets_for_time(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "for-time");
    log.ensure_topic(&retained(&topic, 2)).await.unwrap();
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now_ms();
    // Older records in several appends (several chunks), then a gap, then newer ones.
    for i in 0..3 {
        log.append(&topic, 0, vec![record(None, format!("old {i}"))])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let newer: Vec<_> = (0..300).map(|i| record(None, format!("new {i}"))).collect();
    log.append(&topic, 0, newer).await.unwrap();
    log.append(&topic, 0, vec![record(None, "newest")])
        .await
        .unwrap();
    assert_eq!(
        log.offset_for_time(&topic, 0, before - 1_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(log.offset_for_time(&topic, 0, between).await.unwrap(), 3);
    assert_eq!(
        log.offset_for_time(&topic, 0, now_ms() + 60_000)
            .await
            .unwrap(),
        304
    );
    assert_eq!(log.offset_for_time(&topic, 1, between).await.unwrap(), 0);
    let from = log.offset_for_time(&topic, 0, between).await.unwrap();
    let read = read_exactly(&*log, &topic, 0, from, 1).await;
    assert_eq!(read[0].record.value, b"new 0".to_vec());
    delete(&*log, &topic).await;
}

/// 5. Four concurrent producers, 2,000 records each in batches, to one partition: every
///    record exactly once, offsets dense, each producer's records in its order.
pub async fn concurrent_producers(backend: &dyn Backend, prefix: &str) {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 2_000;
    const BATCH: usize = 100;
    let log = backend.open().await;
    let topic = unique_topic(prefix, "concurrent");
    log.ensure_topic(&retained(&topic, 1)).await.unwrap();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let log = log.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(PER_PRODUCER);
                for start in (0..PER_PRODUCER).step_by(BATCH) {
                    let batch: Vec<LogRecord> = (start..start + BATCH)
                        .map(|seq| {
                            record(
                                Some(&format!("producer-{producer}")),
                                format!("{producer}:{seq}"),
                            )
                        })
                        .collect();
                    let offsets = log.append(&topic, 0, batch).await.unwrap();
                    assert_eq!(offsets.len(), BATCH);
                    acked.extend(offsets.into_iter().zip(start..start + BATCH));
                }
                acked
            })
        })
        .collect();
    let mut by_offset = vec![None; PRODUCERS * PER_PRODUCER];
    for (producer, task) in tasks.into_iter().enumerate() {
        for (offset, seq) in task.await.unwrap() {
            let slot = by_offset.get_mut(offset as usize).unwrap_or_else(|| {
                panic!(
                    "offset {offset} is past the {} records",
                    PRODUCERS * PER_PRODUCER
                )
            });
            assert!(slot.is_none(), "offset {offset} was handed out twice");
            *slot = Some((producer, seq));
        }
    }
    assert!(
        by_offset.iter().all(Option::is_some),
        "offsets are not dense"
    );

    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), total as u64);
    let got = read_exactly(&*log, &topic, 0, 0, total).await;
    let mut seen = HashSet::new();
    let mut last_seq = [None; PRODUCERS];
    for (i, stored) in got.iter().enumerate() {
        assert_eq!(stored.offset, i as u64, "offsets are not dense");
        let text = String::from_utf8(stored.record.value.clone()).unwrap();
        let (producer, seq) = text.split_once(':').unwrap();
        let (producer, seq): (usize, usize) = (producer.parse().unwrap(), seq.parse().unwrap());
        assert_eq!(
            by_offset[i],
            Some((producer, seq)),
            "record at offset {i} is not the acknowledged one"
        );
        assert!(
            seen.insert((producer, seq)),
            "{producer}:{seq} appears twice"
        );
        if let Some(previous) = last_seq[producer] {
            assert!(
                seq > previous,
                "producer {producer}: {seq} after {previous}"
            );
        }
        last_seq[producer] = Some(seq);
    }
    assert_eq!(seen.len(), total);
    assert_nothing_after(&*log, &topic, 0, total as u64).await;
    delete(&*log, &topic).await;
}

/// A ~1.5 KB value: `dimension` f32s drawn from a `StdRng` seeded by `seed`.
pub fn vector_bytes(seed: u64, dimension: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(dimension * 4);
    for _ in 0..dimension {
        let x: f32 = rng.random_range(-0.5..0.5);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// 6. One batch of 10,000 records of ~1.5 KB.
pub async fn big_batch(backend: &dyn Backend, prefix: &str) {
    const N: usize = 10_000;
    let log = backend.open().await;
    let topic = unique_topic(prefix, "bigbatch");
    log.ensure_topic(&retained(&topic, 1)).await.unwrap();
    let records: Vec<LogRecord> = (0..N as u64)
        .map(|i| record(Some(&format!("vec-{i}")), vector_bytes(i, 384)))
        .collect();
    let offsets = log.append(&topic, 0, records.clone()).await.unwrap();
    assert_eq!(offsets, (0..N as u64).collect::<Vec<_>>());
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), N as u64);
    let got = read_exactly(&*log, &topic, 0, 0, N).await;
    let expected: Vec<(u64, LogRecord)> = (0..).zip(records).collect();
    assert_same_records(&got, &expected);
    delete(&*log, &topic).await;
}

/// 7. Restart: records survive dropping every handle and opening again, and appends
///    continue at the right offsets.
pub async fn restart_durability(backend: &dyn Backend, prefix: &str) {
    let topic = unique_topic(prefix, "restart");
    let mut expected: Vec<Vec<(u64, LogRecord)>> = vec![Vec::new(); 2];
    {
        let log = backend.open().await;
        log.ensure_topic(&retained(&topic, 2)).await.unwrap();
        for partition in 0..2u32 {
            let batch: Vec<LogRecord> = (0..(10 + partition as usize))
                .map(|i| {
                    record(Some(&format!("k{i}")), format!("before {partition}/{i}"))
                        .with_header("h", vec![i as u8])
                })
                .collect();
            let offsets = log.append(&topic, partition, batch.clone()).await.unwrap();
            expected[partition as usize].extend(offsets.into_iter().zip(batch));
        }
        // Every handle is dropped here.
    }
    let log = backend.open().await;
    assert_eq!(log.partitions(&topic).await.unwrap(), 2);
    for partition in 0..2u32 {
        let want = &expected[partition as usize];
        assert_eq!(
            log.high_watermark(&topic, partition).await.unwrap(),
            want.len() as u64
        );
        let got = read_exactly(&*log, &topic, partition, 0, want.len()).await;
        assert_same_records(&got, want);
        let more = vec![record(Some("after"), format!("after {partition}"))];
        let offsets = log.append(&topic, partition, more.clone()).await.unwrap();
        assert_eq!(
            offsets,
            vec![want.len() as u64],
            "appends continue after the restart"
        );
        let got = read_exactly(&*log, &topic, partition, want.len() as u64, 1).await;
        assert_same_records(&got, &[(want.len() as u64, more[0].clone())]);
    }
    delete(&*log, &topic).await;
}

/// 8. Bad inputs: partitions out of range, empty batches, empty keys and values, unknown
///    topics.
pub async fn bad_inputs(backend: &dyn Backend, prefix: &str) {
    let log = backend.open().await;
    let topic = unique_topic(prefix, "inputs");
    log.ensure_topic(&retained(&topic, 2)).await.unwrap();

    match log.append(&topic, 2, vec![record(None, "x")]).await {
        Err(LogError::PartitionOutOfRange {
            topic: t,
            partition,
            partitions,
        }) => assert_eq!((t.as_str(), partition, partitions), (topic.as_str(), 2, 2)),
        other => panic!("append to partition 2 of 2 gave {other:?}"),
    }
    assert!(matches!(
        log.read(&topic, 7, 0, 10, Duration::ZERO).await,
        Err(LogError::PartitionOutOfRange { partition: 7, .. })
    ));
    assert!(matches!(
        log.high_watermark(&topic, 2).await,
        Err(LogError::PartitionOutOfRange { partition: 2, .. })
    ));

    assert_eq!(
        log.append(&topic, 0, Vec::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(
        log.high_watermark(&topic, 0).await.unwrap(),
        0,
        "an empty batch appended something"
    );

    let odd = vec![
        LogRecord::new(None, Vec::new()),
        LogRecord::new(Some(Vec::new()), Vec::new()),
        LogRecord::new(Some(Vec::new()), b"value, empty key".to_vec()),
        LogRecord::new(Some(b"key, empty value".to_vec()), Vec::new())
            .with_header("empty", Vec::new()),
    ];
    let offsets = log.append(&topic, 0, odd.clone()).await.unwrap();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let got = read_exactly(&*log, &topic, 0, 0, odd.len()).await;
    let expected: Vec<(u64, LogRecord)> = (0..).zip(odd).collect();
    assert_same_records(&got, &expected);

    let missing = unique_topic(prefix, "missing");
    assert!(matches!(
        log.read(&missing, 0, 0, 10, Duration::ZERO).await,
        Err(LogError::UnknownTopic(t)) if t == missing
    ));
    assert!(matches!(
        log.append(&missing, 0, vec![record(None, "x")]).await,
        Err(LogError::UnknownTopic(t)) if t == missing
    ));
    delete(&*log, &topic).await;
}
