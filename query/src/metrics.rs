//! The Prometheus metrics of a node: request counts and latency, per-shard size and lag.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of one node, registered in its own registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub shard_vectors: IntGaugeVec,
    pub shard_pending: IntGaugeVec,
    pub shard_lag: IntGaugeVec,
    pub shard_dead_lettered: IntGaugeVec,
    pub events_dropped: IntGaugeVec,
    /// Shard searches this node has served (for its own router and for others').
    pub shard_searches: prometheus::IntGauge,
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
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["collection", "shard"]).expect("valid metric")
        };
        let shard_vectors = gauge("shard_vectors", "vectors stored in a shard");
        let shard_pending = gauge("shard_pending", "vectors in a shard's not-yet-indexed tail");
        let shard_lag = gauge("shard_lag", "log records not yet applied by a shard");
        let shard_dead_lettered = gauge(
            "shard_dead_lettered",
            "poison records sent to the dead-letter topic",
        );
        let events_dropped = IntGaugeVec::new(
            Opts::new(
                "events_dropped",
                "hotness events dropped because the buffer was full",
            ),
            &["node"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(shard_vectors.clone()),
            Box::new(shard_pending.clone()),
            Box::new(shard_lag.clone()),
            Box::new(shard_dead_lettered.clone()),
            Box::new(events_dropped.clone()),
        ] {
            registry.register(c).expect("metrics are registered once");
        }
        let shard_searches = prometheus::IntGauge::new(
            "shard_searches",
            "Shard searches served by this node since it started (a counter)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(shard_searches.clone()))
            .expect("unique metric");
        Metrics {
            shard_searches,
            registry,
            requests,
            latency,
            shard_vectors,
            shard_pending,
            shard_lag,
            shard_dead_lettered,
            events_dropped,
        }
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
