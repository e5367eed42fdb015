//! Recall@10, single-thread QPS and build time of the arroy and exact engines on the real
//! data set (full when present; see `common::full_dataset`), through the `Shard` API with
//! real LMDB. Run with `--nocapture` to see the numbers.
//!
//! `HEKTOR_ARROY_TREES` / `HEKTOR_ARROY_FACTORS` (comma list) override the arroy
//! parameters for tuning runs; the assertions use the defaults' bar of 0.95.

mod common;

use std::time::Instant;

use hektor_indexers::{ArroyParams, EngineKind, Shard, ShardConfig};
use hektor_topics::record::Distance;

const K: usize = 10;

#[test]
fn arroy_recall_at_10_is_at_least_0_95() {
    let (ds, which) = common::recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let mut params = ArroyParams::default();
    if let Some(t) = std::env::var("HEKTOR_ARROY_TREES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        params.n_trees = if t == 0 { None } else { Some(t) };
    }
    if let Some(t) = std::env::var("HEKTOR_ARROY_SPLIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        params.split_after = Some(t);
    }
    let factors: Vec<usize> = std::env::var("HEKTOR_ARROY_FACTORS")
        .ok()
        .map(|v| v.split(',').filter_map(|f| f.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![params.search_k_factor]);
    let mut config = ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Arroy);
    config.arroy = params;

    let shard = Shard::open(dir.path(), config.clone()).unwrap();
    let load = common::load_rows(&shard, &ds, 0..ds.len(), 0);
    assert_eq!(shard.pending(), ds.len() as u64);
    let build = shard.build_index().unwrap();
    assert_eq!(build.index_len, ds.len() as u64);
    assert_eq!(shard.pending(), 0);
    eprintln!(
        "arroy ({which}: {} × {}): apply {:.2}s, build {:.2}s, n_trees {:?}, split_after {:?}, disk {} MiB",
        ds.len(),
        ds.dim,
        load.as_secs_f64(),
        build.duration.as_secs_f64(),
        params.n_trees,
        params.split_after,
        common::dir_size(dir.path()) >> 20
    );
    drop(shard);

    let mut best = 0.0f64;
    for factor in factors {
        config.arroy.search_k_factor = factor;
        let shard = Shard::open(dir.path(), config.clone()).unwrap();
        let m = common::measure(&shard, &ds, &rows, K, ds.n_queries());
        eprintln!(
            "arroy search_k_factor {factor}: recall@{K} {:.4}, {:.0} QPS (1 thread, {} queries)",
            m.recall, m.qps, m.queries
        );
        best = best.max(m.recall);
        if factor == ArroyParams::default().search_k_factor && params == ArroyParams::default() {
            assert!(
                m.recall >= 0.95,
                "recall@{K} {:.4} < 0.95 at the default parameters",
                m.recall
            );
        }
    }
    assert!(best >= 0.95, "best recall@{K} {best:.4} < 0.95");
}

#[test]
fn exact_recall_at_10_is_one() {
    let (ds, which) = common::recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let config = ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Exact);
    let shard = Shard::open(dir.path(), config).unwrap();
    let load = common::load_rows(&shard, &ds, 0..ds.len(), 0);
    assert_eq!(
        shard.pending(),
        0,
        "the exact engine never has a pending tail"
    );
    let started = Instant::now();
    let build = shard.build_index().unwrap();
    let n_queries = std::env::var("HEKTOR_EXACT_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let m = common::measure(&shard, &ds, &rows, K, n_queries);
    eprintln!(
        "exact ({which}: {} × {}): apply {:.2}s, build {:.3}s, recall@{K} {:.4}, {:.1} QPS (1 thread, {} queries), took {:.1}s",
        ds.len(),
        ds.dim,
        load.as_secs_f64(),
        build.duration.as_secs_f64(),
        m.recall,
        m.qps,
        m.queries,
        started.elapsed().as_secs_f64()
    );
    // Exact up to float rounding: the tie convention absorbs equal scores.
    assert!(m.recall >= 0.999, "exact recall@{K} {:.4}", m.recall);
}
