//! The Prometheus metrics of a node (prefix `hektor_`): request counts and latency, kept
//! here, and the node's shards and counts kept by their owners (the shard host, the
//! router, the event sink), read at every scrape by [`NodeCollector`].
//!
//! Conventions: a count that only grows is a counter named `..._total`; sizes and lags are
//! gauges. Per-shard series exist only for the shards this node serves at the scrape: a
//! shard that moved away, was split or merged away, or whose collection was dropped has
//! no series any more.

use std::sync::{Arc, OnceLock};

use hektor_indexers::host::ShardHost;
use hektor_topics::record::RingRange;
use hektor_topics::ring;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// All metrics of one node, registered in its own registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// Set once the node's collector is registered ([`Metrics::observe`]).
    observed: OnceLock<()>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("hektor".into()), None).expect("a constant prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests served, by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("request_seconds", "HTTP request latency, by route").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(latency.clone()),
        ] {
            registry.register(c).expect("metrics are registered once");
        }
        Metrics {
            registry,
            requests,
            latency,
            observed: OnceLock::new(),
        }
    }

    /// Expose the node's shards and counts from `source` (registered once: later calls
    /// are no-ops).
    pub fn observe(&self, source: impl FnOnce() -> NodeSource) {
        self.observed.get_or_init(|| {
            self.registry
                .register(Box::new(NodeCollector::new(source())))
                .expect("the node collector's metrics are unique");
        });
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A count kept elsewhere, read at each scrape.
pub type Count = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the node's collector reads its values.
pub struct NodeSource {
    /// The shards this node serves (sizes, lag, dead-lettered records).
    pub host: Arc<ShardHost>,
    /// Shard searches this node has served since it started.
    pub shard_searches: Count,
    /// Hotness events dropped since the node started because the buffer was full.
    pub events_dropped: Count,
}

/// The node's metrics whose values are kept by their owners: built afresh from the
/// [`NodeSource`] at every scrape, so they are never stale and a shard no longer served
/// has no series.
///
/// Counters here mirror counts that start at 0 when their owner starts (the process, or
/// a shard opened on this node): a restart or a shard coming back is a counter reset,
/// which `rate()` and `increase()` handle.
pub struct NodeCollector {
    source: NodeSource,
    descs: Vec<Desc>,
}

/// The node collector's metrics, filled for one scrape.
struct NodeFamilies {
    shard_vectors: IntGaugeVec,
    shard_pending: IntGaugeVec,
    shard_lag: IntGaugeVec,
    shard_dead_lettered: IntCounterVec,
    shard_searches: IntCounter,
    events_dropped: IntCounter,
    shard_conflicts: IntCounterVec,
    shard_mirror_lag: IntGaugeVec,
    shard_region_staleness: GaugeVec,
    shard_disk_bytes: IntGaugeVec,
    build_candidate_rows: IntCounterVec,
    build_candidate_gpu_failures: IntCounter,
}

impl NodeFamilies {
    fn new() -> NodeFamilies {
        let labels = ["collection", "shard"];
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid metric")
        };
        NodeFamilies {
            shard_vectors: gauge("shard_vectors", "Vectors stored in a shard"),
            shard_pending: gauge(
                "shard_pending",
                "Vectors in a shard's not-yet-indexed tail",
            ),
            shard_lag: gauge("shard_lag", "Log records not yet applied by a shard"),
            shard_dead_lettered: IntCounterVec::new(
                Opts::new(
                    "shard_dead_lettered_total",
                    "Poison records a shard sent to the dead-letter topic since it opened on this node",
                ),
                &labels,
            )
            .expect("valid metric"),
            shard_searches: IntCounter::new(
                "shard_searches_total",
                "Shard searches served by this node (for its own router and for others')",
            )
            .expect("valid metric"),
            events_dropped: IntCounter::new(
                "events_dropped_total",
                "Hotness events dropped because the event buffer was full",
            )
            .expect("valid metric"),
            shard_conflicts: IntCounterVec::new(
                Opts::new(
                    "shard_conflicts_total",
                    "Concurrent writes of different regions a shard met since it opened on this node",
                ),
                &labels,
            )
            .expect("valid metric"),
            shard_mirror_lag: IntGaugeVec::new(
                Opts::new(
                    "shard_mirror_lag",
                    "Records of another region's mirrored partition a shard has not merged yet",
                ),
                &["collection", "shard", "region"],
            )
            .expect("valid metric"),
            shard_region_staleness: GaugeVec::new(
                Opts::new(
                    "shard_region_staleness_seconds",
                    "How old the newest write of another region a shard may be missing is, at most: now minus that region's floor merged here (its ticks keep it current while nobody writes)",
                ),
                &["collection", "shard", "region"],
            )
            .expect("valid metric"),
            shard_disk_bytes: IntGaugeVec::new(
                Opts::new(
                    "shard_disk_bytes",
                    "Bytes a shard takes on disk, by part: each LMDB database's pages (vectors, records, ids, ring, index, ...), `free` (pages no database holds: LMDB's free list), and the files beside it (hnsw.graph)",
                ),
                &["collection", "shard", "part"],
            )
            .expect("valid metric"),
            build_candidate_rows: IntCounterVec::new(
                Opts::new(
                    "build_candidate_rows_total",
                    "Rows of hot builds whose candidate neighbour lists the batch worker computed, by device (hektor serve --build-candidates)",
                ),
                &["device"],
            )
            .expect("valid metric"),
            build_candidate_gpu_failures: IntCounter::new(
                "build_candidate_gpu_failures_total",
                "Build rounds whose candidate lists failed on the GPU and were computed on the CPU",
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 12] {
        [
            &self.build_candidate_rows,
            &self.build_candidate_gpu_failures,
            &self.shard_disk_bytes,
            &self.shard_conflicts,
            &self.shard_mirror_lag,
            &self.shard_region_staleness,
            &self.shard_vectors,
            &self.shard_pending,
            &self.shard_lag,
            &self.shard_dead_lettered,
            &self.shard_searches,
            &self.events_dropped,
        ]
    }
}

impl NodeCollector {
    pub fn new(source: NodeSource) -> NodeCollector {
        let descs = NodeFamilies::new()
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        NodeCollector { source, descs }
    }
}

/// The `shard` label: the partition for a shard holding its whole partition, else
/// `partition@start` (hex) for a part of one (after splits).
pub fn shard_label(partition: u32, partitions: u32, range: RingRange) -> String {
    if ring::partition_range(partition, partitions) == range {
        partition.to_string()
    } else {
        format!("{partition}@{:016x}", range.start)
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = NodeFamilies::new();
        let now_ms = hektor_topics::hlc::wall_ms();
        for hosted in self.source.host.collections() {
            for s in hosted.serving() {
                let label = shard_label(s.partition, hosted.spec.partitions, s.range);
                let labels = [hosted.spec.name.as_str(), label.as_str()];
                f.shard_vectors
                    .with_label_values(&labels)
                    .set(clamp(s.shard.len()));
                f.shard_pending
                    .with_label_values(&labels)
                    .set(clamp(s.shard.pending()));
                f.shard_lag.with_label_values(&labels).set(clamp(s.lag()));
                f.shard_dead_lettered
                    .with_label_values(&labels)
                    .inc_by(s.dead_lettered());
                f.shard_conflicts
                    .with_label_values(&labels)
                    .inc_by(s.conflicts());
                if let Ok(footprint) = s.shard.footprint() {
                    let set = |part: &str, bytes: u64| {
                        f.shard_disk_bytes
                            .with_label_values(&[labels[0], labels[1], part])
                            .set(clamp(bytes));
                    };
                    for (name, db) in &footprint.store.databases {
                        if db.bytes > 0 {
                            set(name, db.bytes);
                        }
                    }
                    set("free", footprint.store.other_bytes);
                    for (name, bytes) in &footprint.files {
                        set(name, *bytes);
                    }
                }
                for (region, p) in s.mirrored() {
                    let labels = [labels[0], labels[1], region.as_str()];
                    f.shard_mirror_lag
                        .with_label_values(&labels)
                        .set(clamp(p.high_watermark.saturating_sub(p.next_offset)));
                    if p.floor > 0 {
                        let at = hektor_topics::hlc::Hlc(p.floor).physical_ms();
                        let behind = now_ms.saturating_sub(at) as f64 / 1000.0;
                        f.shard_region_staleness
                            .with_label_values(&labels)
                            .set(behind);
                    }
                }
            }
        }
        let built = hektor_indexers::candidate_stats();
        f.build_candidate_rows
            .with_label_values(&["cpu"])
            .inc_by(built.cpu_rows);
        f.build_candidate_rows
            .with_label_values(&["gpu"])
            .inc_by(built.gpu_rows);
        f.build_candidate_gpu_failures.inc_by(built.gpu_failures);
        f.shard_searches.inc_by((self.source.shard_searches)());
        f.events_dropped.inc_by((self.source.events_dropped)());
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_labelled_by_its_partition_or_the_part_of_it() {
        let whole = ring::partition_range(1, 4);
        assert_eq!(shard_label(1, 4, whole), "1");
        let upper = RingRange {
            start: 3 << 62,
            end: whole.end,
        };
        assert_eq!(shard_label(1, 4, upper), "1@c000000000000000");
        assert_eq!(shard_label(0, 1, RingRange::FULL), "0");
    }

    #[test]
    fn the_nodes_own_counters_end_in_total() {
        let m = Metrics::new();
        m.requests.with_label_values(&["GET /health", "200"]).inc();
        let text = m.render();
        assert!(
            text.contains("# TYPE hektor_requests_total counter"),
            "{text}"
        );
        for family in NodeFamilies::new().collectors() {
            for desc in family.desc() {
                let counter = family
                    .collect()
                    .iter()
                    .any(|mf| mf.get_field_type() == prometheus::proto::MetricType::COUNTER);
                assert_eq!(
                    counter,
                    desc.fq_name.ends_with("_total"),
                    "{}",
                    desc.fq_name
                );
            }
        }
    }
}
