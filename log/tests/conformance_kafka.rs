//! The log conformance suite run against a real Kafka broker, plus Kafka-specific checks.
//!
//! This file owns only the wiring to Kafka (where the broker is, what to do when there is
//! none) and the checks that only make sense on Kafka; the cases themselves live in the
//! backend-agnostic suite (`tests/conformance/mod.rs`).
//!
//! The broker comes from `HEKTOR_KAFKA_BROKERS` (e.g. `127.0.0.1:9092`, started with
//! `scripts/kafka.sh start`). Without a reachable broker the tests fail under `CI=true`
//! and are skipped, loudly, elsewhere.
//!
//! Run: `HEKTOR_KAFKA_BROKERS=127.0.0.1:9092 cargo test --release -p hektor-log --test conformance_kafka`

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::{read_exactly, record, retained, unique_topic, Backend, PRESENT_WAIT};
use hektor_log::kafka::{Compression, KafkaConfig, KafkaLog};
use hektor_log::{Log, LogRecord};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};

/// Topic prefix of every test topic, so they are easy to find and clean up on the broker.
const PREFIX: &str = "hektor-test";

/// The connected log, or `None` (after a loud warning) when no broker is configured or
/// reachable outside CI. Under `CI=true` a missing broker fails the test.
async fn kafka() -> Option<Kafka> {
    let brokers = std::env::var("HEKTOR_KAFKA_BROKERS").unwrap_or_default();
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let problem = if brokers.trim().is_empty() {
        "HEKTOR_KAFKA_BROKERS is not set".to_string()
    } else {
        match KafkaLog::connect(&brokers, KafkaConfig::default()) {
            Ok(log) => match log.ping(Duration::from_secs(5)).await {
                Ok(()) => {
                    return Some(Kafka {
                        brokers: brokers.trim().to_string(),
                        config: KafkaConfig::default(),
                    })
                }
                Err(e) => format!("the broker at {brokers} does not answer: {e}"),
            },
            Err(e) => format!("cannot create a Kafka client for {brokers}: {e}"),
        }
    };
    if in_ci {
        panic!(
            "CI=true but no Kafka broker at {brokers:?} ({problem}); \
             start one with scripts/kafka.sh start and set HEKTOR_KAFKA_BROKERS=127.0.0.1:9092"
        );
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         WARNING: the Kafka conformance suite did NOT run: {problem}.\n\
         Start a broker with `scripts/kafka.sh start` and set HEKTOR_KAFKA_BROKERS=127.0.0.1:9092.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

/// Kafka handles: each `open` connects a new client, as a restarted process would.
struct Kafka {
    brokers: String,
    config: KafkaConfig,
}

impl Kafka {
    fn connect(&self) -> KafkaLog {
        KafkaLog::connect(&self.brokers, self.config.clone())
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.brokers))
    }
}

#[async_trait]
impl Backend for Kafka {
    fn name(&self) -> &str {
        "kafka"
    }

    async fn open(&self) -> Arc<dyn Log> {
        Arc::new(self.connect())
    }
}

macro_rules! conformance_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some(backend) = kafka().await else { return };
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

/// Headers (including binary and empty values) written by `KafkaLog` come back as they
/// were, next to keys and values of every shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_survive_a_round_trip() {
    let Some(backend) = kafka().await else { return };
    let log = backend.open().await;
    let topic = unique_topic(PREFIX, "headers");
    log.ensure_topic(&retained(&topic, 2)).await.unwrap();
    let records = vec![
        record(Some("k1"), "v1")
            .with_header("reason", "bad dimension")
            .with_header("bin", vec![0u8, 255, 7])
            .with_header("reason", "repeated name"),
        record(None, "no key, no headers"),
        record(Some("k3"), vec![42; 3000]).with_header("empty", Vec::new()),
    ];
    let offsets = log.append(&topic, 1, records.clone()).await.unwrap();
    assert_eq!(offsets, vec![0, 1, 2]);
    let read = read_exactly(&*log, &topic, 1, 0, records.len()).await;
    for (stored, sent) in read.iter().zip(&records) {
        assert_eq!(&stored.record, sent, "record at offset {}", stored.offset);
    }
    assert_eq!(read[0].record.header("reason"), Some(&b"bad dimension"[..]));
    assert_eq!(
        read[0].record.headers.len(),
        3,
        "repeated header names are kept"
    );
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), 0);
    log.delete_topic(&topic).await.unwrap();
}

/// Every compression codec the config offers is built in and round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_works() {
    let Some(backend) = kafka().await else { return };
    let topic = unique_topic(PREFIX, "codecs");
    backend
        .connect()
        .ensure_topic(&retained(&topic, 1))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for compression in [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
        Compression::Gzip,
    ] {
        let log = KafkaLog::connect(
            &backend.brokers,
            KafkaConfig {
                compression,
                ..KafkaConfig::default()
            },
        )
        .unwrap();
        let batch: Vec<LogRecord> = (0..50)
            .map(|i| record(Some(&format!("{compression}-{i}")), vec![i as u8; 1500]))
            .collect();
        let offsets = log.append(&topic, 0, batch.clone()).await.unwrap();
        assert_eq!(
            offsets.first().copied(),
            Some(expected.len() as u64),
            "{compression}"
        );
        expected.extend(batch);
    }
    let log = backend.connect();
    let got = read_exactly(&log, &topic, 0, 0, expected.len()).await;
    for (stored, sent) in got.iter().zip(&expected) {
        assert_eq!(&stored.record, sent, "record at offset {}", stored.offset);
    }
    log.delete_topic(&topic).await.unwrap();
}

/// After Kafka deletes the start of a partition (retention, or DeleteRecords as here), a
/// read from an offset that is gone starts at the first record kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_below_the_log_start_begins_at_the_first_kept_record() {
    let Some(backend) = kafka().await else { return };
    let log = backend.connect();
    let topic = unique_topic(PREFIX, "logstart");
    log.ensure_topic(&retained(&topic, 1)).await.unwrap();
    let records: Vec<LogRecord> = (0..20).map(|i| record(None, format!("{i}"))).collect();
    log.append(&topic, 0, records).await.unwrap();
    // Read once first, so a pooled reader sits at offset 3 when the records go.
    assert_eq!(read_exactly(&log, &topic, 0, 0, 3).await.len(), 3);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &backend.brokers)
        .create()
        .unwrap();
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(&topic, 0, Offset::Offset(12))
        .unwrap();
    let result = admin
        .delete_records(&before, &AdminOptions::new())
        .await
        .unwrap();
    for element in result.elements() {
        element.error().unwrap();
    }

    for from in [0, 3, 11] {
        let got = log.read(&topic, 0, from, 5, PRESENT_WAIT).await.unwrap();
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![12, 13, 14, 15, 16], "read from {from}");
        assert_eq!(got[0].record.value, b"12");
    }
    assert_eq!(log.high_watermark(&topic, 0).await.unwrap(), 20);
    log.delete_topic(&topic).await.unwrap();
}

/// A reader waiting at the end of a partition whose topic is deleted (here by another
/// client) gets `UnknownTopic` promptly instead of waiting out its whole wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_on_a_deleted_topic_gets_an_error() {
    let Some(backend) = kafka().await else { return };
    let log = backend.open().await;
    let topic = unique_topic(PREFIX, "deleted");
    log.ensure_topic(&retained(&topic, 1)).await.unwrap();
    log.append(&topic, 0, vec![record(None, "x")])
        .await
        .unwrap();
    let reader = {
        let log = log.clone();
        let topic = topic.clone();
        tokio::spawn(async move { log.read(&topic, 0, 1, 10, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    backend.open().await.delete_topic(&topic).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reader kept waiting on a deleted topic")
        .unwrap();
    assert!(
        matches!(&result, Err(hektor_log::LogError::UnknownTopic(t)) if *t == topic),
        "{result:?}"
    );
    assert!(matches!(
        log.high_watermark(&topic, 0).await,
        Err(hektor_log::LogError::UnknownTopic(_))
    ));
}

/// Aggregate append throughput with one appender per partition, each awaiting its
/// batches of 1,000 records (384 dimensions, ~1.5 KB) in turn, as ingest does:
/// `HEKTOR_KAFKA_BROKERS=127.0.0.1:9092 HEKTOR_BENCH_PARTITIONS=4 cargo test --release
/// -p hektor-log --test conformance_kafka kafka_parallel_append_throughput -- --ignored
/// --nocapture` (`HEKTOR_BENCH_RECORDS`, default 200,000; `HEKTOR_BENCH_COMPRESSION`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn kafka_parallel_append_throughput() {
    let Some(backend) = kafka().await else { return };
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let partitions = env("HEKTOR_BENCH_PARTITIONS", 4).max(1);
    let per_partition = env("HEKTOR_BENCH_RECORDS", 200_000) / partitions / 1000 * 1000;
    let mut config = KafkaConfig::default();
    if let Ok(c) = std::env::var("HEKTOR_BENCH_COMPRESSION") {
        config.compression = c.parse().unwrap();
    }
    let log: Arc<dyn Log> = Arc::new(KafkaLog::connect(&backend.brokers, config).unwrap());
    let topic = unique_topic(PREFIX, "parallel");
    log.ensure_topic(&retained(&topic, partitions as u32))
        .await
        .unwrap();
    let batches: Vec<Vec<Vec<LogRecord>>> = (0..partitions)
        .map(|p| {
            (0..per_partition / 1000)
                .map(|b| {
                    (0..1000)
                        .map(|i| {
                            let seq = (b * 1000 + i) as u64;
                            record(
                                Some(&format!("{p}-{seq}")),
                                conformance::vector_bytes(seq, 384),
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .enumerate()
        .map(|(partition, batches)| {
            let log = log.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for batch in batches {
                    log.append(&topic, partition as u32, batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = per_partition * partitions;
    eprintln!(
        "{partitions} partitions: {total} records appended in {elapsed:?}: {:.0} records/s",
        total as f64 / elapsed.as_secs_f64()
    );
    for partition in 0..partitions as u32 {
        assert_eq!(
            log.high_watermark(&topic, partition).await.unwrap(),
            per_partition as u64
        );
    }
    log.delete_topic(&topic).await.unwrap();
}
