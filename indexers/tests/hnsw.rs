//! The hnsw engine through the `Shard` API on real data and real LMDB: recall@10 at the
//! default `ef_search` on the full data set (a subset when it is absent, except under
//! `CI=true`), the tenant filter inside the graph search, incremental updates with
//! concurrent searches (no duplicate or lost items while builds commit), and the search
//! effort knob. The shard behaviours shared with the other engines (upsert, delete,
//! replace, restart, tenant ranges) run in `tests/shard.rs`.
//!
//! `HEKTOR_HNSW_EF` (comma list) sweeps `ef_search` in the recall test and prints recall,
//! QPS, p50 and p99 per value (run with `--nocapture`); `hnsw_streaming_updates_bench`
//! (ignored) prints the cost of applying upserts to a hot shard and query latency while
//! updates stream in.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hektor_indexers::dataset::Dataset;
use hektor_indexers::{EngineKind, HnswParams, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{Distance, RingRange};

const K: usize = 10;

fn config(dim: usize) -> ShardConfig {
    ShardConfig::new(dim, Distance::Cosine, EngineKind::Hnsw)
}

/// An empty histogram of query latencies in ns: 1 ns to one minute, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant, valid HDR bounds")
}

/// Record one latency.
fn record(h: &mut Histogram<u64>, latency: Duration) {
    h.saturating_record(latency.as_nanos().try_into().unwrap_or(u64::MAX));
}

struct Sweep {
    recall: f64,
    qps: f64,
    p50: Duration,
    p99: Duration,
}

/// One thread, every query once (after one warm-up pass over the first 100).
fn sweep(
    shard: &Shard,
    ds: &Dataset,
    rows: &HashMap<String, u32>,
    range: Option<RingRange>,
) -> Sweep {
    let n = ds.n_queries();
    for q in 0..n.min(100) {
        shard.search(ds.query(q), K, range).unwrap();
    }
    let mut lat = latency_histogram();
    let mut results = Vec::with_capacity(n);
    let started = Instant::now();
    for q in 0..n {
        let t = Instant::now();
        let hits = shard.search(ds.query(q), K, range).unwrap();
        record(&mut lat, t.elapsed());
        results.push(hits);
    }
    let elapsed = started.elapsed();
    let mut total = 0.0;
    for (q, hits) in results.iter().enumerate() {
        let returned: Vec<u32> = hits.iter().map(|h| rows[&h.id]).collect();
        total += ds.recall(q, &returned, K);
    }
    Sweep {
        recall: total / n as f64,
        qps: n as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_nanos(lat.value_at_quantile(0.5)),
        p99: Duration::from_nanos(lat.value_at_quantile(0.99)),
    }
}

#[test]
fn hnsw_recall_at_10_is_at_least_0_95_at_the_default_ef() {
    let (ds, which) = common::recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), config(ds.dim)).unwrap();
    let load = common::load_rows(&shard, &ds, 0..ds.len(), 0);
    assert_eq!(shard.pending(), ds.len() as u64);
    let build = shard.build_index().unwrap();
    assert_eq!(build.index_len, ds.len() as u64);
    assert_eq!(shard.pending(), 0);
    eprintln!(
        "hnsw ({which}: {} × {}): apply {:.2}s, build {:.2}s (M 16, ef_construction 200, 1 thread)",
        ds.len(),
        ds.dim,
        load.as_secs_f64(),
        build.duration.as_secs_f64(),
    );
    let default_ef = HnswParams::default().ef_search;
    assert_eq!(shard.search_effort(), Some(default_ef));
    let mut efs: Vec<usize> = std::env::var("HEKTOR_HNSW_EF")
        .ok()
        .map(|v| v.split(',').filter_map(|f| f.trim().parse().ok()).collect())
        .unwrap_or_default();
    efs.retain(|&e| e != default_ef);
    efs.insert(0, default_ef);
    for ef in efs {
        assert!(shard.set_search_effort(ef));
        let m = sweep(&shard, &ds, &rows, None);
        eprintln!(
            "hnsw ef_search {ef}: recall@{K} {:.4}, {:.0} QPS, p50 {:.1} µs, p99 {:.1} µs (1 thread, {} queries)",
            m.recall,
            m.qps,
            m.p50.as_secs_f64() * 1e6,
            m.p99.as_secs_f64() * 1e6,
            ds.n_queries()
        );
        if ef == default_ef {
            assert!(
                m.recall >= 0.95,
                "recall@{K} {:.4} < 0.95 at the default ef_search {ef}",
                m.recall
            );
        }
    }
    // A larger beam must not find fewer true neighbours (on average, up to noise).
    shard.set_search_effort(8);
    let low = sweep(&shard, &ds, &rows, None).recall;
    shard.set_search_effort(256);
    let high = sweep(&shard, &ds, &rows, None).recall;
    assert!(
        high + 1e-9 >= low,
        "ef 256 recall {high} < ef 8 recall {low}"
    );
    assert!(high >= 0.98, "ef 256 recall {high}");
}

#[test]
fn search_effort_is_a_knob_only_where_the_engine_has_one() {
    let ds = common::subset(200);
    for (engine, knob) in [
        (EngineKind::Hnsw, true),
        (EngineKind::Exact, false),
        (EngineKind::Arroy, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::open(
            dir.path(),
            ShardConfig::new(ds.dim, Distance::Cosine, engine),
        )
        .unwrap();
        assert_eq!(shard.set_search_effort(100), knob, "{engine}");
        assert_eq!(shard.search_effort(), knob.then_some(100), "{engine}");
    }
}

/// Rows `0..n` of the data set in two tenants by row parity (ring halves), plus the
/// tenant of each row.
fn tenant_ring(r: usize) -> u64 {
    if r.is_multiple_of(2) {
        (r as u64) << 20
    } else {
        (1u64 << 63) + ((r as u64) << 20)
    }
}

#[test]
fn tenant_filter_is_applied_inside_the_graph_search() {
    let ds = common::subset(20_000);
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(dir.path(), config(ds.dim)).unwrap();
    let ops: Vec<(u64, ShardOp)> = (0..ds.len())
        .map(|r| (r as u64, common::upsert(&ds, r, tenant_ring(r), Hlc(1))))
        .collect();
    for chunk in ops.chunks(2_000) {
        shard.apply(chunk).unwrap();
    }
    shard.build_index().unwrap();
    let rows = common::row_index(&ds);
    // Half the shard (the graph path) and a 1/64 sliver (the exact path).
    let half = RingRange {
        start: 0,
        end: Some(1 << 63),
    };
    let sliver = RingRange {
        start: 0,
        end: Some((ds.len() as u64 / 32) << 20),
    };
    for (name, range) in [("half", half), ("sliver", sliver)] {
        let members: Vec<usize> = (0..ds.len())
            .filter(|&r| range.contains(tenant_ring(r)))
            .collect();
        let mut found = 0usize;
        let mut wanted = 0usize;
        for q in 0..100 {
            let query = ds.query(q);
            let hits = shard.search(query, K, Some(range)).unwrap();
            assert_eq!(hits.len(), K.min(members.len()), "{name} q{q}");
            let mut truth: Vec<(f32, usize)> = members
                .iter()
                .map(|&r| (hektor_indexers::metric::cosine(query, ds.base_vector(r)), r))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let threshold = truth[K.min(truth.len()) - 1].0 - 1e-5;
            for h in &hits {
                let row = rows[&h.id] as usize;
                assert!(range.contains(tenant_ring(row)), "{name}: {} outside", h.id);
                if h.score >= threshold {
                    found += 1;
                }
            }
            wanted += K.min(truth.len());
        }
        let recall = found as f64 / wanted as f64;
        eprintln!(
            "tenant {name} ({} members): filtered recall@{K} {recall:.4}",
            members.len()
        );
        assert!(recall >= 0.95, "{name}: filtered recall {recall}");
    }
}

#[test]
fn incremental_builds_never_show_an_item_twice_or_lose_one() {
    let ds = common::subset(4_000);
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(Shard::open(dir.path(), config(ds.dim)).unwrap());
    common::load_rows(&shard, &ds, 0..1_000, 0);
    shard.build_index().unwrap();
    let ds = Arc::new(ds);
    let done = Arc::new(AtomicBool::new(false));
    let searchers: Vec<_> = (0..2)
        .map(|t| {
            let (shard, done, ds) = (shard.clone(), done.clone(), ds.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !done.load(Ordering::Acquire) || n == 0 {
                    // Each probe is a base row that was applied before the search began
                    // (rows 0..1000 never change): it must be its own top hit.
                    let row = (t * 7 + n * 13) % 1_000;
                    let hits = shard.search(ds.base_vector(row), 20, None).unwrap();
                    let unique: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                    assert_eq!(unique.len(), hits.len(), "duplicate ids: {hits:?}");
                    assert_eq!(hits.len(), 20);
                    assert!(finds(&hits, &ds.ids[row]), "row {row} lost: {hits:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let builder = {
        let (shard, done) = (shard.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                shard.build_index().unwrap();
            }
        })
    };
    // New rows, then replacements of rows 1000..1500 (new vectors) and deletes of
    // 1500..1700, applied in small batches while the builder folds them in.
    for start in (1_000..4_000).step_by(100) {
        common::load_rows(&shard, &ds, start..start + 100, 0);
    }
    let mut offset = 10_000u64;
    for r in 1_000..1_500 {
        let v = ds.base_vector(r + 2_000).to_vec();
        let op = ShardOp::Upsert {
            id: ds.ids[r].clone(),
            tenant: None,
            ring: common::ring_of(r),
            vector: v,
            payload: None,
            hlc: Hlc(1_000_000),
        };
        shard.apply(&[(offset, op)]).unwrap();
        offset += 1;
    }
    for r in 1_500..1_700 {
        let op = ShardOp::Delete {
            id: ds.ids[r].clone(),
            tenant: None,
            hlc: Hlc(1_000_000),
        };
        shard.apply(&[(offset, op)]).unwrap();
        offset += 1;
    }
    done.store(true, Ordering::Release);
    builder.join().unwrap();
    for s in searchers {
        assert!(s.join().unwrap() > 0);
    }
    shard.build_index().unwrap();
    assert_eq!((shard.len(), shard.pending()), (3_800, 0));
    // Replaced rows are found by their new vector, deleted rows not at all.
    for r in (1_000..1_500).step_by(25) {
        let hits = shard.search(ds.base_vector(r + 2_000), 20, None).unwrap();
        assert!(finds(&hits, &ds.ids[r]), "replaced row {r}: {hits:?}");
    }
    for r in (1_500..1_700).step_by(10) {
        let hits = shard.search(ds.base_vector(r), 10, None).unwrap();
        assert!(hits.iter().all(|h| h.id != ds.ids[r]), "deleted row {r}");
    }
    for r in (1_700..4_000).step_by(97) {
        let hits = shard.search(ds.base_vector(r), 20, None).unwrap();
        assert!(finds(&hits, &ds.ids[r]), "row {r}: {hits:?}");
    }
    // Reopening after a checkpoint loads the same graph: the same answers. (A rebuild
    // from LMDB inserts in another order; `tests/hot_graph_file.rs` covers that path.)
    let before: Vec<_> = (0..20)
        .map(|q| shard.search(ds.query(q), K, None).unwrap())
        .collect();
    shard.checkpoint(true, false).unwrap();
    drop(shard);
    let shard = Shard::open(dir.path(), config(ds.dim)).unwrap();
    assert!(matches!(
        shard.opened(),
        Some(hektor_indexers::Opened::Loaded { .. })
    ));
    assert_eq!((shard.len(), shard.pending()), (3_800, 0));
    for (q, hits) in before.iter().enumerate() {
        let again = shard.search(ds.query(q), K, None).unwrap();
        let a: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        let b: HashSet<&str> = again.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(a, b, "query {q}");
    }
}

/// Whether a search for a stored vector found it: `id` is among the hits, or every hit is
/// an exact duplicate of it (real data has groups of identical vectors).
fn finds(hits: &[hektor_indexers::Hit], id: &str) -> bool {
    hits.first().is_some_and(|h| h.score >= 1.0 - 1e-4)
        && (hits.iter().any(|h| h.id == id) || hits.iter().all(|h| h.score >= 1.0 - 1e-4))
}

/// Cost of applying upserts to a hot 60k-vector shard (apply + incremental build per
/// 1,000), and query latency while one thread streams updates in and another searches.
/// Prints numbers; run with
/// `cargo test --release -p hektor-indexers --test hnsw -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: minutes on the full data set"]
fn hnsw_streaming_updates_bench() {
    let (ds, which) = common::recall_dataset();
    let n = ds.len();
    // Index 90% first; stream the last 10% (new items) and then replacements.
    let first = n * 9 / 10;
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(Shard::open(dir.path(), config(ds.dim)).unwrap());
    common::load_rows(&shard, &ds, 0..first, 0);
    let b = shard.build_index().unwrap();
    eprintln!(
        "hnsw bench ({which}): initial build of {first} in {:.2}s",
        b.duration.as_secs_f64()
    );
    let ds = Arc::new(ds);

    // Quiet baseline latency.
    let quiet = latencies(&shard, &ds, 1_000);
    let done = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (shard, done, ds) = (shard.clone(), done.clone(), ds.clone());
        std::thread::spawn(move || {
            let mut lat = latency_histogram();
            let mut q = 0;
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                shard.search(ds.query(q % ds.n_queries()), K, None).unwrap();
                record(&mut lat, t.elapsed());
                q += 1;
            }
            lat
        })
    };
    let mut apply_total = Duration::ZERO;
    let mut build_total = Duration::ZERO;
    let mut batches = 0u32;
    for start in (first..n).step_by(1_000) {
        let end = (start + 1_000).min(n);
        let t = Instant::now();
        common::load_rows(&shard, &ds, start..end, 0);
        apply_total += t.elapsed();
        let t = Instant::now();
        shard.build_index().unwrap();
        build_total += t.elapsed();
        batches += 1;
    }
    // Replacements: existing ids take the vectors of other rows.
    let mut offset = n as u64;
    for start in (0..5_000).step_by(1_000) {
        let ops: Vec<(u64, ShardOp)> = (start..start + 1_000)
            .map(|r| {
                offset += 1;
                (
                    offset,
                    ShardOp::Upsert {
                        id: ds.ids[r].clone(),
                        tenant: None,
                        ring: common::ring_of(r),
                        vector: ds.base_vector((r + 7_919) % n).to_vec(),
                        payload: None,
                        hlc: Hlc(u64::MAX / 2),
                    },
                )
            })
            .collect();
        let t = Instant::now();
        shard.apply(&ops).unwrap();
        apply_total += t.elapsed();
        let t = Instant::now();
        shard.build_index().unwrap();
        build_total += t.elapsed();
        batches += 1;
    }
    done.store(true, Ordering::Release);
    let busy = searcher.join().unwrap();
    // µs at quantile `q`.
    let pct = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    eprintln!(
        "hnsw bench: per 1k upserts: apply {:.1} ms + graph insert (build) {:.1} ms, over {batches} batches of 1,000",
        apply_total.as_secs_f64() * 1e3 / f64::from(batches),
        build_total.as_secs_f64() * 1e3 / f64::from(batches),
    );
    eprintln!(
        "hnsw bench: query latency quiet p50 {:.1} µs p99 {:.1} µs; while updating ({} queries) p50 {:.1} µs p99 {:.1} µs",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        busy.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
    );
    assert_eq!(shard.len(), n as u64);
}

fn latencies(shard: &Shard, ds: &Dataset, n: usize) -> Histogram<u64> {
    let mut lat = latency_histogram();
    for q in 0..n {
        let t = Instant::now();
        shard.search(ds.query(q % ds.n_queries()), K, None).unwrap();
        record(&mut lat, t.elapsed());
    }
    lat
}
