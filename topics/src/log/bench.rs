//! A throughput benchmark of any [`Log`] backend: appends real vector upsert records and
//! reads them back, and reports records/s and MB/s for each direction.
//!
//! This module owns the measurement only; the command line (`hektor bench log`) and the
//! choice of backend belong to the binary.
//!
//! What it does: it creates a fresh topic `hektor.bench.<unique>` with **one partition**
//! and `Cleanup::Compact` (like a collection's vectors topic, so the embedded log maintains
//! its key index as it would in production), appends `records` vector upserts
//! ([`VectorRecord::Upsert`], binary codec, `dimension` random components, key = the vector
//! id, all ids distinct) in batches of `batch`, each append awaited before the next (one
//! producer, so the numbers are per-partition), then reads them all back from offset 0 in
//! pages of `batch`, and deletes the topic. Only the time inside `append` and `read`
//! counts; building the records does not. MB are 10^6 bytes of key + value.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::codec::{to_log_record, Encoding};
use crate::log::{Log, LogRecord};
use crate::record::{VectorRecord, VectorUpsert};
use crate::topic::{Cleanup, TopicSpec};
use crate::{Error, Result};

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
    let batch = batch.max(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let topic = format!("hektor.bench.{nanos}-{}", std::process::id());
    log.ensure_topic(&TopicSpec {
        name: topic.clone(),
        partitions: 1,
        cleanup: Cleanup::Compact,
        replication: 1,
    })
    .await?;
    let result = run(&*log, &topic, records, dimension, batch).await;
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
    log: &dyn Log,
    topic: &str,
    records: usize,
    dimension: usize,
    batch: usize,
) -> Result<(Timed, Timed)> {
    let mut append = Timed::default();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut next_id = 0;
    while next_id < records {
        let end = (next_id + batch).min(records);
        let records = (next_id..end)
            .map(|i| upsert(i, dimension, &mut rng))
            .collect::<Result<Vec<LogRecord>>>()?;
        append.bytes += records.iter().map(record_bytes).sum::<usize>();
        let started = Instant::now();
        let offsets = log.append(topic, 0, records).await?;
        append.elapsed += started.elapsed();
        if offsets.len() != end - next_id {
            return Err(Error::Malformed {
                kind: "benchmark append",
                reason: format!("{} offsets for {} records", offsets.len(), end - next_id),
            });
        }
        next_id = end;
    }

    let mut read = Timed::default();
    let mut count = 0;
    let mut from = 0;
    let started = Instant::now();
    while count < records {
        let page = log.read(topic, 0, from, batch, READ_WAIT).await?;
        let Some(last) = page.last() else {
            return Err(Error::Timeout(READ_WAIT));
        };
        from = last.offset + 1;
        count += page.len();
        read.bytes += page.iter().map(|r| record_bytes(&r.record)).sum::<usize>();
    }
    read.elapsed = started.elapsed();
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
    use crate::log::embedded::EmbeddedLog;

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

    /// The measurement: `HEKTOR_BENCH_RECORDS=200000 cargo test --release -p hektor-topics
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
        let log = EmbeddedLog::open(&dir).unwrap();
        let report = bench_log(Arc::new(log), records, 384, 10_000)
            .await
            .unwrap();
        println!("{}", serde_json::to_string(&report).unwrap());
    }
}
