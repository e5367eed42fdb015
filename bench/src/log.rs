//! A throughput benchmark of any [`Log`] backend: appends real vector upsert records and
//! reads them back, and reports records/s and MB/s for each direction.
//!
//! This module owns the measurement only; the command line (`hektor-bench log`) and the
//! choice of backend are in this crate's `lib.rs`.
//!
//! What it does: it creates a fresh topic `hektor.bench.<unique>` with **one partition**
//! and `Cleanup::Compact` (like a collection's vectors topic, so the embedded log maintains
//! its key index as it would in production), appends `records` vector upserts
//! ([`VectorRecord::Upsert`], binary codec, `dimension` random components, key = the vector
//! id, all ids distinct) in batches of `batch`, each append awaited before the next (one
//! producer, so the numbers are per-partition), then reads them all back from offset 0 in
//! pages of `batch`, and deletes the topic. Only the time inside `append` and `read`
//! counts; building the records does not. MB are 10^6 bytes of key + value.
//! [`bench_log_partitioned`] does the same on several partitions with one concurrent
//! producer each (what group commit and the storage layout see with many producers).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use hektor_log::{Cleanup, Log, LogError, LogRecord, TopicSpec};
use hektor_topics::codec::{to_log_record, Encoding};
use hektor_topics::record::{VectorRecord, VectorUpsert};
use hektor_topics::{Error, Result};

/// How long one read of the benchmark may wait for records that are already appended.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The result of [`bench_log`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogBenchReport {
    /// "embedded" or "kafka".
    pub backend: String,
    pub records: usize,
    pub append_records_per_s: f64,
    pub append_mb_per_s: f64,
    pub read_records_per_s: f64,
    pub read_mb_per_s: f64,
}

/// Append `records` vector upserts of `dimension` components to a fresh one-partition topic
/// in batches of `batch`, read them back, delete the topic, and report the throughput.
pub async fn bench_log(
    log: Arc<dyn Log>,
    records: usize,
    dimension: usize,
    batch: usize,
) -> Result<LogBenchReport> {
    bench_log_partitioned(log, records, dimension, batch, 1).await
}

/// Like [`bench_log`] with a topic of `partitions` partitions and one concurrent producer
/// per partition (each appends its share of the records, one awaited batch at a time), so
/// the numbers are for the whole topic. The records of all partitions are built before the
/// clock starts; the reads go partition after partition.
pub async fn bench_log_partitioned(
    log: Arc<dyn Log>,
    records: usize,
    dimension: usize,
    batch: usize,
    partitions: u32,
) -> Result<LogBenchReport> {
    let batch = batch.max(1);
    let partitions = partitions.max(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let topic = format!("hektor.bench.{nanos}-{}", std::process::id());
    log.ensure_topic(&TopicSpec {
        name: topic.clone(),
        partitions,
        cleanup: Cleanup::Compact,
        replication: 1,
    })
    .await?;
    let result = run(&log, &topic, records, dimension, batch, partitions).await;
    let deleted = log.delete_topic(&topic).await;
    let (append, read) = result?;
    deleted?;
    let rate = |count: f64, elapsed: Duration| count / elapsed.as_secs_f64().max(1e-9);
    Ok(LogBenchReport {
        backend: log.backend().to_string(),
        records,
        append_records_per_s: rate(records as f64, append.elapsed),
        append_mb_per_s: rate(append.bytes as f64 / 1e6, append.elapsed),
        read_records_per_s: rate(records as f64, read.elapsed),
        read_mb_per_s: rate(read.bytes as f64 / 1e6, read.elapsed),
    })
}

#[derive(Default)]
struct Timed {
    elapsed: Duration,
    bytes: usize,
}

async fn run(
    log: &Arc<dyn Log>,
    topic: &str,
    records: usize,
    dimension: usize,
    batch: usize,
    partitions: u32,
) -> Result<(Timed, Timed)> {
    let mut append = Timed::default();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    // Partition p gets the ids p, p + partitions, p + 2 * partitions, ... in batches.
    let mut work: Vec<Vec<Vec<LogRecord>>> = vec![Vec::new(); partitions as usize];
    for (p, batches) in work.iter_mut().enumerate() {
        let ids = (p..records)
            .step_by(partitions as usize)
            .collect::<Vec<_>>();
        for chunk in ids.chunks(batch) {
            let batch = chunk
                .iter()
                .map(|&i| upsert(i, dimension, &mut rng))
                .collect::<Result<Vec<LogRecord>>>()?;
            append.bytes += batch.iter().map(record_bytes).sum::<usize>();
            batches.push(batch);
        }
    }
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for (partition, batches) in (0u32..).zip(work) {
        let log = log.clone();
        let topic = topic.to_string();
        producers.spawn(async move {
            for batch in batches {
                let len = batch.len();
                let offsets = log.append(&topic, partition, batch).await?;
                if offsets.len() != len {
                    return Err(Error::Malformed {
                        kind: "benchmark append",
                        reason: format!("{} offsets for {len} records", offsets.len()),
                    });
                }
            }
            Ok(())
        });
    }
    while let Some(done) = producers.join_next().await {
        match done {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(LogError::Closed.into()),
        }
    }
    append.elapsed = started.elapsed();

    let mut read = Timed::default();
    let started = Instant::now();
    let mut count = 0;
    for partition in 0..partitions {
        let mut from = 0;
        let expected = (partition as usize..records)
            .step_by(partitions as usize)
            .count();
        let mut got = 0;
        while got < expected {
            let page = log.read(topic, partition, from, batch, READ_WAIT).await?;
            let Some(last) = page.last() else {
                return Err(LogError::Timeout(READ_WAIT).into());
            };
            from = last.offset + 1;
            got += page.len();
            read.bytes += page.iter().map(|r| record_bytes(&r.record)).sum::<usize>();
        }
        count += got;
    }
    read.elapsed = started.elapsed();
    if count != records {
        return Err(Error::Malformed {
            kind: "benchmark read",
            reason: format!("{count} records read back of {records}"),
        });
    }
    Ok((append, read))
}

fn record_bytes(record: &LogRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len) + record.value.len()
}

fn upsert(i: usize, dimension: usize, rng: &mut XorShift) -> Result<LogRecord> {
    let id = format!("bench-{i:010}");
    let record = VectorRecord::Upsert(VectorUpsert {
        collection: "bench".into(),
        id: id.clone(),
        tenant: None,
        vector: (0..dimension).map(|_| rng.next_f32()).collect(),
        payload: None,
        hlc: Default::default(),
        origin: String::new(),
    });
    to_log_record(Some(id.into_bytes()), &record, Encoding::Binary)
}

/// A tiny deterministic generator: vectors need not be good random numbers, only finite
/// and different.
struct XorShift(u64);

impl XorShift {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hektor_log::embedded::EmbeddedLog;
    use hektor_log::kafka::{KafkaConfig, KafkaLog};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_benchmark_reads_back_what_it_wrote_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let report = bench_log(Arc::new(log), 2_500, 384, 1_000).await.unwrap();
        assert_eq!(report.backend, "embedded");
        assert_eq!(report.records, 2_500);
        for rate in [
            report.append_records_per_s,
            report.read_records_per_s,
            report.append_mb_per_s,
            report.read_mb_per_s,
        ] {
            assert!(rate.is_finite() && rate > 0.0, "{report:?}");
        }
        // ~1.5 KB per record: MB/s and records/s agree on the record size.
        let size = report.append_mb_per_s * 1e6 / report.append_records_per_s;
        assert!(
            (1_500.0..1_700.0).contains(&size),
            "{size} bytes per record"
        );
        let read_size = report.read_mb_per_s * 1e6 / report.read_records_per_s;
        assert!(
            (read_size - size).abs() < 1.0,
            "read {read_size} vs appended {size}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_partitioned_benchmark_spreads_every_record_over_the_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        // 2_501 records do not divide evenly among 3 partitions; all must be read back.
        let report = bench_log_partitioned(Arc::new(log), 2_501, 16, 400, 3)
            .await
            .unwrap();
        assert_eq!(report.records, 2_501);
        let size = report.append_mb_per_s * 1e6 / report.append_records_per_s;
        let read_size = report.read_mb_per_s * 1e6 / report.read_records_per_s;
        assert!(
            (read_size - size).abs() < 1.0,
            "read {read_size} vs appended {size}"
        );
    }

    /// The measurement: `HEKTOR_BENCH_RECORDS=200000 HEKTOR_BENCH_PARTITIONS=1 cargo test --release -p hektor-bench
    /// --lib embedded_log_throughput -- --ignored --nocapture` (the log lives in
    /// `HEKTOR_BENCH_DIR`, default a temporary directory).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn embedded_log_throughput() {
        let records = std::env::var("HEKTOR_BENCH_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("HEKTOR_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| tmp.path().to_path_buf());
        let partitions = std::env::var("HEKTOR_BENCH_PARTITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let log = EmbeddedLog::open(&dir).unwrap();
        let report = bench_log_partitioned(Arc::new(log), records, 384, 10_000, partitions)
            .await
            .unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
    }

    /// The measurement on Kafka: `HEKTOR_KAFKA_BROKERS=127.0.0.1:9092
    /// HEKTOR_BENCH_RECORDS=200000 cargo test --release -p hektor-bench --lib
    /// kafka_log_throughput -- --ignored --nocapture` (`HEKTOR_BENCH_BATCH`, default 1000, is
    /// the records per append and per read; vectors have 384 dimensions, ~1.5 KB per record;
    /// without `HEKTOR_KAFKA_BROKERS` it says so and measures nothing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn kafka_log_throughput() {
        let Ok(brokers) = std::env::var("HEKTOR_KAFKA_BROKERS") else {
            eprintln!("HEKTOR_KAFKA_BROKERS is not set: no Kafka broker to measure");
            return;
        };
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let records = env("HEKTOR_BENCH_RECORDS", 200_000);
        let batch = env("HEKTOR_BENCH_BATCH", 1_000);
        // Tuning knobs: HEKTOR_BENCH_COMPRESSION (none|lz4|zstd|snappy|gzip) and
        // HEKTOR_BENCH_KAFKA_EXTRA (`key=value,key=value` librdkafka properties).
        let mut config = KafkaConfig::default();
        if let Ok(c) = std::env::var("HEKTOR_BENCH_COMPRESSION") {
            config.compression = c.parse().unwrap();
        }
        if let Ok(extra) = std::env::var("HEKTOR_BENCH_KAFKA_EXTRA") {
            for pair in extra.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("key=value");
                config.extra.push((k.to_string(), v.to_string()));
            }
        }
        eprintln!("records {records}, batch {batch}, {config:?}");
        let log = KafkaLog::connect(&brokers, config).unwrap();
        let report = bench_log(Arc::new(log), records, 384, batch).await.unwrap();
        eprintln!("{report:?}");
        assert_eq!(report.records, records);
    }
}
