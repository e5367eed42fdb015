//! Runs the log conformance suite (`conformance/mod.rs`) on the embedded LMDB log, plus
//! what only the embedded log has: compaction, trimming, and durability across `kill -9`.
//!
//! This file owns the embedded backend's test wiring; the cases themselves live in the
//! suite and are shared with the Kafka backend.

mod conformance;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{read_exactly, record, retained, spec, Backend};
use hektor_log::embedded::EmbeddedLog;
use hektor_log::Cleanup;
use hektor_log::{Log, LogRecord};

const PREFIX: &str = "hektor-test";

/// Handles on the embedded log in one directory.
struct Embedded {
    dir: PathBuf,
}

#[async_trait]
impl Backend for Embedded {
    fn name(&self) -> &str {
        "embedded"
    }

    async fn open(&self) -> Arc<dyn Log> {
        Arc::new(open(&self.dir))
    }
}

fn open(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

macro_rules! conformance_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let dir = tempfile::tempdir().unwrap();
            let backend = Embedded { dir: dir.path().to_path_buf() };
            conformance::$case(&backend, PREFIX).await;
        }
    )*};
}

conformance_cases!(
    topic_lifecycle,
    order_and_dense_offsets,
    replay_paging_and_waiting,
    high_watermark_counts,
    offsets_for_time,
    concurrent_producers,
    big_batch,
    restart_durability,
    bad_inputs,
);

async fn values(log: &EmbeddedLog, topic: &str) -> Vec<(u64, String)> {
    log.read(topic, 0, 0, 100_000, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.record.value).unwrap()))
        .collect()
}

fn pairs(items: &[(u64, &str)]) -> Vec<(u64, String)> {
    items.iter().map(|(o, v)| (*o, v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "hektor.compacted.vectors";
    {
        let log = open(dir.path());
        log.set_compact_after(u64::MAX);
        log.ensure_topic(&spec(topic, 1, Cleanup::Compact))
            .await
            .unwrap();
        let first = vec![
            record(Some("a"), "a1"),
            record(Some("b"), "b1"),
            record(Some("a"), "a2"),
        ];
        let second = vec![
            record(Some("c"), "c1"),
            record(None, "no key"),
            record(Some("b"), "b2"),
            record(Some("a"), "a3"),
        ];
        assert_eq!(log.append(topic, 0, first).await.unwrap(), vec![0, 1, 2]);
        assert_eq!(
            log.append(topic, 0, second).await.unwrap(),
            vec![3, 4, 5, 6]
        );
        assert_eq!(
            values(&log, topic).await.len(),
            7,
            "compaction ran before it was asked to"
        );

        assert_eq!(log.compact(topic).await.unwrap(), 3);
        let survivors = pairs(&[(3, "c1"), (4, "no key"), (5, "b2"), (6, "a3")]);
        assert_eq!(values(&log, topic).await, survivors);
        // Reading from a removed offset starts at the next retained one.
        let from_one = log.read(topic, 0, 1, 10, Duration::ZERO).await.unwrap();
        assert_eq!(from_one.first().map(|r| r.offset), Some(3));
        assert_eq!(log.high_watermark(topic, 0).await.unwrap(), 7);
        assert_eq!(
            log.compact(topic).await.unwrap(),
            0,
            "compaction is idempotent"
        );

        assert_eq!(
            log.append(topic, 0, vec![record(Some("a"), "a4")])
                .await
                .unwrap(),
            vec![7]
        );
        assert_eq!(log.compact(topic).await.unwrap(), 1);
        // Compacting a time-retained topic removes nothing.
        let retain = "hektor.compacted.events";
        log.ensure_topic(&retained(retain, 1)).await.unwrap();
        log.append(
            retain,
            0,
            vec![record(Some("a"), "1"), record(Some("a"), "2")],
        )
        .await
        .unwrap();
        assert_eq!(log.compact(retain).await.unwrap(), 0);
    }
    let log = open(dir.path());
    let survivors = pairs(&[(3, "c1"), (4, "no key"), (5, "b2"), (7, "a4")]);
    assert_eq!(
        values(&log, topic).await,
        survivors,
        "compaction survives a restart"
    );
    assert_eq!(log.high_watermark(topic, 0).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_by_itself_once_enough_records_are_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.set_compact_after(100);
    let topic = "hektor.lazy.vectors";
    log.ensure_topic(&spec(topic, 1, Cleanup::Compact))
        .await
        .unwrap();
    for round in 0..10 {
        let batch = (0..50)
            .map(|i| record(Some(&format!("key{}", i % 5)), format!("{round}/{i}")))
            .collect();
        log.append(topic, 0, batch).await.unwrap();
    }
    // 500 records over 5 keys: at most 100 superseded ones may wait for the next round.
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = loop {
        let left = values(&log, topic).await;
        if left.len() <= 5 + 100 || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        left.len() <= 105,
        "{} records left after background compaction",
        left.len()
    );
    let newest: Vec<(u64, String)> = (45..50).map(|i| (450 + i, format!("9/{i}"))).collect();
    assert_eq!(
        left[left.len() - 5..],
        newest[..],
        "the newest record of each key is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_removes_only_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let short = "hektor.trim.short";
    let long = "hektor.trim.long";
    log.ensure_topic(&spec(short, 1, Cleanup::Retain { ms: 1 }))
        .await
        .unwrap();
    log.ensure_topic(&retained(long, 1)).await.unwrap();
    for topic in [short, long] {
        log.append(topic, 0, vec![record(None, "1"), record(None, "2")])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(log.trim_expired(short).await.unwrap(), 2);
    assert_eq!(log.trim_expired(long).await.unwrap(), 0);
    assert!(values(&log, short).await.is_empty());
    assert_eq!(values(&log, long).await.len(), 2);
    assert_eq!(
        log.high_watermark(short, 0).await.unwrap(),
        2,
        "trimming moved the head"
    );
    assert_eq!(
        log.append(short, 0, vec![record(None, "3")]).await.unwrap(),
        vec![2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_comes_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = "hektor.recreated.vectors";
    log.ensure_topic(&spec(topic, 2, Cleanup::Compact))
        .await
        .unwrap();
    log.append(topic, 1, vec![record(Some("k"), "old")])
        .await
        .unwrap();
    log.delete_topic(topic).await.unwrap();
    log.ensure_topic(&spec(topic, 3, Cleanup::Compact))
        .await
        .unwrap();
    assert_eq!(log.partitions(topic).await.unwrap(), 3);
    assert_eq!(log.high_watermark(topic, 1).await.unwrap(), 0);
    assert!(log
        .read(topic, 1, 0, 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        log.append(topic, 1, vec![record(Some("k"), "new")])
            .await
            .unwrap(),
        vec![0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_on_a_deleted_topic_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = "hektor.deleted.events";
    log.ensure_topic(&retained(topic, 1)).await.unwrap();
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.read(topic, 0, 0, 10, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.delete_topic(topic).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the reader kept waiting on a deleted topic")
        .unwrap();
    assert!(
        matches!(result, Err(hektor_log::LogError::UnknownTopic(_))),
        "{result:?}"
    );
}

/// The suite allows seconds of wake-up latency (Kafka); the embedded log wakes readers on
/// the append itself, well below its 500 ms fallback poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_wakes_within_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = "hektor.wake.events";
    log.ensure_topic(&retained(topic, 2)).await.unwrap();
    for round in 0..5u64 {
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                let got = log.read(topic, 1, round, 10, Duration::from_secs(30)).await;
                (got, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // An append to another partition does not satisfy the reader.
        log.append(topic, 0, vec![record(None, "elsewhere")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished(), "woken by another partition's append");
        let appended_at = Instant::now();
        log.append(topic, 1, vec![record(None, "here")])
            .await
            .unwrap();
        let (got, woke_at) = reader.await.unwrap();
        assert_eq!(got.unwrap().len(), 1);
        let latency = woke_at.saturating_duration_since(appended_at);
        assert!(
            latency < Duration::from_millis(250),
            "woke {latency:?} after the append"
        );
    }
}

const CHILD_ENV: &str = "HEKTOR_EMBEDDED_CHILD";
const KILL_TOPIC: &str = "hektor.kill9.vectors";
const KILL_AFTER_ACKS: usize = 400;

/// The child: append batches forever, printing `ack <offset> <seq>` once each is durable.
fn append_forever(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = open(dir);
        log.ensure_topic(&retained(KILL_TOPIC, 1)).await.unwrap();
        let mut seq = 0u64;
        loop {
            let batch: Vec<LogRecord> = (seq..seq + 10)
                .map(|s| record(Some(&format!("seq-{s}")), conformance::vector_bytes(s, 384)))
                .collect();
            let offsets = log.append(KILL_TOPIC, 0, batch).await.unwrap();
            for (offset, s) in offsets.into_iter().zip(seq..) {
                println!("ack {offset} {s}");
            }
            seq += 10;
        }
    });
}

/// Acknowledged records survive `kill -9` of the process that appended them: a child
/// process (this test binary again) appends in a loop and reports each durable offset; the
/// parent kills it mid-stream, reopens the log and finds every acknowledged record, exactly
/// once, at its offset, with dense offsets.
#[test]
fn kill_9_durability() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        append_forever(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_durability",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Some(rest) = line.strip_prefix("ack ") else {
            continue;
        };
        let (offset, seq) = rest.split_once(' ').unwrap();
        acked.push((offset.parse().unwrap(), seq.parse().unwrap()));
        if acked.len() >= KILL_AFTER_ACKS {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        acked.len(),
        KILL_AFTER_ACKS,
        "the child stopped early ({status})"
    );
    assert!(!status.success(), "the child was not killed");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = open(dir.path());
        let head = log.high_watermark(KILL_TOPIC, 0).await.unwrap();
        let last_acked = acked.last().map(|(o, _)| *o).unwrap();
        assert!(
            head > last_acked,
            "head {head} lost acknowledged offset {last_acked}"
        );
        let records = read_exactly(&log, KILL_TOPIC, 0, 0, head as usize).await;
        let mut keys = std::collections::HashSet::new();
        for (i, stored) in records.iter().enumerate() {
            assert_eq!(stored.offset, i as u64, "offsets are not dense");
            assert!(
                keys.insert(stored.record.key.clone()),
                "a record appears twice"
            );
        }
        for (offset, seq) in &acked {
            let stored = &records[*offset as usize];
            assert_eq!(
                stored.record.key.as_deref(),
                Some(format!("seq-{seq}").as_bytes())
            );
            assert_eq!(stored.record.value, conformance::vector_bytes(*seq, 384));
        }
        let more = log
            .append(KILL_TOPIC, 0, vec![record(None, "after")])
            .await
            .unwrap();
        assert_eq!(more, vec![head], "appends continue after the crash");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_enforced_in_the_background_on_every_retained_topic() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let (a, b, kept, compacted) = (
        "hektor.ret.a",
        "hektor.ret.b",
        "hektor.ret.kept",
        "hektor.ret.compacted",
    );
    for topic in [a, b] {
        log.ensure_topic(&spec(topic, 2, Cleanup::Retain { ms: 1 }))
            .await
            .unwrap();
    }
    log.ensure_topic(&retained(kept, 1)).await.unwrap();
    log.ensure_topic(&spec(compacted, 1, Cleanup::Compact))
        .await
        .unwrap();
    for (topic, partition) in [(a, 0), (a, 1), (b, 1), (kept, 0), (compacted, 0)] {
        log.append(topic, partition, vec![record(None, "1"), record(None, "2")])
            .await
            .unwrap();
    }
    let left = |topic: &'static str, partition: u32| {
        let log = log.clone();
        async move {
            log.read(topic, partition, 0, 100, Duration::ZERO)
                .await
                .unwrap()
                .len()
        }
    };
    let task = log.enforce_retention(Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(10);
    while left(a, 0).await + left(a, 1).await + left(b, 1).await > 0 {
        assert!(
            Instant::now() < deadline,
            "expired records were never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(values(&log, kept).await.len(), 2, "unexpired records stay");
    assert_eq!(
        values(&log, compacted).await.len(),
        2,
        "compacted topics are not trimmed"
    );
    assert_eq!(
        log.high_watermark(a, 1).await.unwrap(),
        2,
        "offsets never move back"
    );
    // The task ends with the last handle on the log.
    drop(log);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the retention task outlived the log")
        .unwrap();
}
