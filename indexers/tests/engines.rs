//! One conformance suite run against every index engine (exact, arroy, hnsw = hot,
//! warm = hannoy, cold = binary-quantized arroy): recall@10 on the real data set (the full
//! set when present, always under `CI=true`; else the sample in
//! `samples/debian-minilm-384-sample`), upserts replacing, deletes removing, reopening
//! after a drop, and the tenant (ring-range) filter; plus a shard moving hot → warm →
//! cold → hot with `Shard::set_engine` while a reader thread keeps searching.
//!
//! The full-data part is one recall test per engine; the rest runs on small slices.
//! `--nocapture` prints recall, QPS, build time and index bytes against the raw vectors.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hektor_indexers::dataset::Dataset;
use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::{Distance, RingRange};

const K: usize = 10;
/// Rows of the small data sets the conformance tests use.
const SMALL: usize = 1_500;

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-minilm-384-sample")
}

/// The recall data set: the full one when present (required under CI), else the sample.
fn recall_dataset() -> (Dataset, &'static str) {
    match common::full_dataset() {
        Some(ds) => (ds.clone(), "full"),
        None => (
            Dataset::load(&sample_dir(), None).expect("the sample data set loads"),
            "sample",
        ),
    }
}

/// The first `n` rows of the real data (full set when present, else the sample), with
/// ground truth over those rows.
fn small(n: usize) -> Dataset {
    if common::full_dataset().is_some() {
        common::subset(n)
    } else {
        Dataset::load(&sample_dir(), Some(n)).expect("the sample data set loads")
    }
}

/// Minimum recall@10 on the recall data set.
fn recall_bar(kind: EngineKind) -> f64 {
    match kind {
        EngineKind::Exact => 0.999, // exact up to float rounding of ties
        EngineKind::Hnsw | EngineKind::Warm => 0.95,
        EngineKind::Arroy | EngineKind::Cold => 0.90,
    }
}

fn open(dir: &Path, kind: EngineKind, dim: usize) -> Shard {
    Shard::open(dir, ShardConfig::new(dim, Distance::Cosine, kind)).expect("open shard")
}

fn row_of(id: &str, ds: &Dataset) -> usize {
    ds.ids.iter().position(|x| x == id).expect("known id")
}

fn recall_on_full_data(kind: EngineKind) {
    let (ds, which) = recall_dataset();
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let mut config = ShardConfig::new(ds.dim, Distance::Cosine, kind);
    let tuned = tuning_overrides(&mut config);
    let shard = Shard::open(dir.path(), config).unwrap();
    let load = common::load_rows(&shard, &ds, 0..ds.len(), 0);
    let build = shard.build_index().unwrap();
    assert_eq!(shard.len(), ds.len() as u64);
    assert_eq!(shard.pending(), 0);
    let n_queries = if kind == EngineKind::Exact {
        200
    } else {
        ds.n_queries()
    };
    let m = common::measure(&shard, &ds, &rows, K, n_queries);
    let raw = 4 * ds.dim as u64 * ds.len() as u64;
    let index_bytes = shard.index_bytes().unwrap();
    eprintln!(
        "{kind} ({which}: {} × {}): apply {:.2}s, build {:.2}s, recall@{K} {:.4}, {:.0} QPS \
         (1 thread, {} queries, effort {:?}), index {:.1} MiB = raw/{:.1}",
        ds.len(),
        ds.dim,
        load.as_secs_f64(),
        build.duration.as_secs_f64(),
        m.recall,
        m.qps,
        m.queries,
        shard.search_effort(),
        index_bytes as f64 / (1 << 20) as f64,
        raw as f64 / index_bytes.max(1) as f64,
    );
    eprintln!("{kind}: {}", rss());
    // Tuning runs: `HEKTOR_EFFORTS=16,24,...` sweeps the run-time knob (no assertion then).
    let default_effort = shard.search_effort();
    for effort in env_list("HEKTOR_EFFORTS") {
        if shard.set_search_effort(effort) {
            let m = common::measure(&shard, &ds, &rows, K, n_queries);
            eprintln!(
                "{kind} effort {effort}: recall@{K} {:.4}, {:.0} QPS",
                m.recall, m.qps
            );
        }
    }
    if let Some(effort) = default_effort {
        shard.set_search_effort(effort);
    }
    if tuned {
        return;
    }
    assert!(
        m.recall >= recall_bar(kind),
        "{kind}: recall@{K} {:.4} < {}",
        m.recall,
        recall_bar(kind)
    );
    if kind == EngineKind::Cold {
        assert!(
            index_bytes * 8 <= raw,
            "cold index is {index_bytes} bytes, more than 1/8 of the {raw} raw bytes"
        );
    }
    if build.index_len > 0 && matches!(kind, EngineKind::Warm | EngineKind::Cold) {
        assert_eq!(build.index_len, ds.len() as u64);
    }
}

fn env_list(name: &str) -> Vec<usize> {
    std::env::var(name)
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Build-time parameter overrides for tuning runs (`HEKTOR_WARM_EFC`,
/// `HEKTOR_COLD_TREES`, `HEKTOR_COLD_SPLIT`, `HEKTOR_COLD_FACTOR`); whether any applied.
fn tuning_overrides(config: &mut ShardConfig) -> bool {
    let one = |name: &str| env_list(name).first().copied();
    let mut tuned = false;
    if let Some(v) = one("HEKTOR_WARM_EFC") {
        config.warm.ef_construction = v;
        tuned = true;
    }
    if let Some(v) = one("HEKTOR_COLD_TREES") {
        config.cold.n_trees = Some(v);
        tuned = true;
    }
    if let Some(v) = one("HEKTOR_COLD_SPLIT") {
        config.cold.split_after = Some(v);
        tuned = true;
    }
    if let Some(v) = one("HEKTOR_COLD_FACTOR") {
        config.cold.search_k_factor = v;
        tuned = true;
    }
    tuned || !env_list("HEKTOR_EFFORTS").is_empty()
}

/// This process's resident memory: total, anonymous (heap) and file-backed (mapped LMDB
/// pages, evictable), in MiB.
fn rss() -> String {
    let field = |name: &str| common::status_kib(name).map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    format!(
        "VmRSS {:.0} MiB (anon {:.0}, file {:.0})",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:")
    )
}

#[test]
fn recall_exact() {
    recall_on_full_data(EngineKind::Exact);
}

#[test]
fn recall_arroy() {
    recall_on_full_data(EngineKind::Arroy);
}

#[test]
fn recall_hnsw() {
    recall_on_full_data(EngineKind::Hnsw);
}

#[test]
fn recall_warm() {
    recall_on_full_data(EngineKind::Warm);
}

#[test]
fn recall_cold() {
    recall_on_full_data(EngineKind::Cold);
}

/// A search's own effort (`Shard::search_with`) applies to that search only: with the
/// shard's configured effort at its lowest, a search asking for a wide one finds (nearly)
/// all true neighbours, and the configured effort and the plain searches stay as they were.
fn per_search_effort_overrides_the_configured_one(kind: EngineKind) {
    let ds = small(SMALL);
    let rows = common::row_index(&ds);
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), kind, ds.dim);
    common::load_rows(&shard, &ds, 0..ds.len(), 0);
    shard.build_index().unwrap();
    assert!(shard.set_search_effort(1), "{kind} has an effort knob");
    let recall = |effort: Option<usize>| {
        let n = ds.n_queries().min(200);
        let mut total = 0.0;
        for q in 0..n {
            let options = hektor_indexers::SearchOptions {
                effort,
                ..Default::default()
            };
            let hits = shard.search_with(ds.query(q), K, None, options).unwrap();
            let returned: Vec<u32> = hits.iter().map(|h| rows[&h.id]).collect();
            total += ds.recall(q, &returned, K);
        }
        total / n as f64
    };
    let narrow = recall(None);
    let wide = recall(Some(600));
    assert!(
        wide >= 0.98 && wide > narrow,
        "{kind}: recall@{K} {wide:.4} at effort 600 vs {narrow:.4} at the configured 1"
    );
    assert_eq!(
        shard.search_effort(),
        Some(1),
        "{kind}: configured effort kept"
    );
    assert_eq!(recall(None), narrow, "{kind}: plain searches unchanged");
}

#[test]
fn per_search_effort_hnsw() {
    per_search_effort_overrides_the_configured_one(EngineKind::Hnsw);
}

#[test]
fn per_search_effort_warm() {
    per_search_effort_overrides_the_configured_one(EngineKind::Warm);
}

#[test]
fn per_search_effort_cold() {
    per_search_effort_overrides_the_configured_one(EngineKind::Cold);
}

/// Warm searches reuse the node locations of the snapshot they read (`Pins` in
/// `warm_graph.rs`): while a writer keeps moving and deleting items and committing builds,
/// readers on other threads must always see, in their own snapshot, every moved item at
/// its new place and no deleted one, with exact scores.
#[test]
fn warm_searches_stay_exact_while_builds_commit() {
    let ds = small(SMALL);
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(open(dir.path(), EngineKind::Warm, ds.dim));
    common::load_rows(&shard, &ds, 0..1_000, 0);
    shard.build_index().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..2 {
        let (shard, stop, ds) = (shard.clone(), stop.clone(), ds.clone());
        readers.push(std::thread::spawn(move || {
            let mut searches = 0usize;
            let mut i = t;
            while !stop.load(Ordering::Acquire) || searches < 200 {
                // Rows below 500 are never touched by the writer: each finds itself.
                let row = (i * 37) % 500;
                let hits = shard.search(ds.base_vector(row), 10, None).unwrap();
                assert!(
                    hits.iter().any(|h| h.id == ds.ids[row] && h.score > 0.999),
                    "row {row} not found as itself: {hits:?}"
                );
                for h in &hits {
                    assert!(h.score.is_finite() && h.score <= 1.0 + 1e-5, "{hits:?}");
                }
                searches += 1;
                i += 2;
            }
            searches
        }));
    }
    // The writer: rows 500..1000 move to other rows' vectors, then come back, then some
    // are deleted, each step a committed build.
    let mut offset = 1_000u64;
    let mut hlc = 10_000_000u64;
    for round in 0..6usize {
        let moved: Vec<(u64, ShardOp)> = (500..1_000)
            .step_by(7)
            .map(|row| {
                offset += 1;
                hlc += 1;
                let source = if round % 2 == 0 {
                    1_000 + (row % 500)
                } else {
                    row
                };
                (offset, put(&ds.ids[row], ds.base_vector(source), 0, hlc))
            })
            .collect();
        shard.apply(&moved).unwrap();
        shard.build_index().unwrap();
        // In a fresh snapshot every moved row is found where it now is.
        for row in (500..1_000).step_by(70) {
            let source = if round % 2 == 0 {
                1_000 + (row % 500)
            } else {
                row
            };
            let hits = shard.search(ds.base_vector(source), 5, None).unwrap();
            assert!(
                hits.iter().any(|h| h.id == ds.ids[row]),
                "round {round}: moved row {row} not found at its new vector: {hits:?}"
            );
        }
    }
    let deleted: Vec<(u64, ShardOp)> = (900..1_000)
        .map(|row| {
            offset += 1;
            hlc += 1;
            (
                offset,
                ShardOp::Delete {
                    id: ds.ids[row].clone(),
                    tenant: None,
                    hlc: Hlc(hlc),
                },
            )
        })
        .collect();
    shard.apply(&deleted).unwrap();
    shard.build_index().unwrap();
    for row in 900..1_000 {
        let hits = shard.search(ds.base_vector(row), 10, None).unwrap();
        assert!(
            hits.iter().all(|h| h.id != ds.ids[row]),
            "deleted row {row} returned"
        );
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("a reader panicked") >= 200);
    }
}

/// Upsert op moving `id` to `vector`.
fn put(id: &str, vector: &[f32], ring: u64, hlc: u64) -> ShardOp {
    ShardOp::Upsert {
        id: id.to_owned(),
        tenant: None,
        ring,
        vector: vector.to_vec(),
        payload: None,
        hlc: Hlc(hlc),
    }
}

fn ids(hits: &[hektor_indexers::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// Upserts replace, deletes remove: before and after the build, and after a reopen.
fn upserts_replace_and_deletes_remove(kind: EngineKind) {
    let ds = small(SMALL);
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), kind, ds.dim);
    common::load_rows(&shard, &ds, 0..ds.len(), 0);
    shard.build_index().unwrap();
    let n = ds.len() as u64;
    // Row 10's id moves to row 700's vector.
    let moved = &ds.ids[10];
    let target = 700;
    let deleted: Vec<&String> = ds.ids[100..110].iter().collect();
    let mut ops = vec![(n, put(moved, ds.base_vector(target), 5, 1_000_000))];
    for (i, id) in deleted.iter().enumerate() {
        ops.push((
            n + 1 + i as u64,
            ShardOp::Delete {
                id: (*id).clone(),
                tenant: None,
                hlc: Hlc(1_000_000),
            },
        ));
    }
    let r = shard.apply(&ops).unwrap();
    assert_eq!((r.upserted, r.deleted), (1, deleted.len()));
    assert_eq!(shard.len(), n - deleted.len() as u64);

    let check = |shard: &Shard, when: &str| {
        // The moved id is found at its new vector, with the exact score.
        let hits = shard.search(ds.base_vector(target), 3, None).unwrap();
        assert!(
            ids(&hits).contains(&moved.as_str()),
            "{kind} {when}: {moved} not found at its new vector: {:?}",
            ids(&hits)
        );
        let h = hits.iter().find(|h| &h.id == moved).unwrap();
        assert!(h.score > 0.999, "{kind} {when}: score {}", h.score);
        // ... and not at its old one (the old vector is gone from the index).
        let hits = shard.search(ds.base_vector(10), K, None).unwrap();
        for h in &hits {
            if &h.id == moved {
                assert!(
                    h.score < 0.999,
                    "{kind} {when}: {moved} still found at its old vector"
                );
            }
        }
        assert_eq!(
            shard.get(None, moved).unwrap().unwrap().vector,
            ds.base_vector(target)
        );
        // Deleted ids are never returned, not even for their own vectors.
        for id in &deleted {
            let row = row_of(id, &ds);
            let hits = shard.search(ds.base_vector(row), K, None).unwrap();
            assert!(
                !ids(&hits).contains(&id.as_str()),
                "{kind} {when}: deleted {id} returned"
            );
            assert_eq!(hits.len(), K, "{kind} {when}: fewer than k hits");
            assert!(shard.get(None, id).unwrap().is_none());
        }
        // Live rows still find themselves.
        for row in [0usize, 333, 1_234] {
            let hits = shard.search(ds.base_vector(row), K, None).unwrap();
            assert!(
                ids(&hits).contains(&ds.ids[row].as_str()),
                "{kind} {when}: row {row} does not find itself: {:?}",
                ids(&hits)
            );
        }
    };
    check(&shard, "pending");
    let built = shard.build_index().unwrap();
    assert_eq!(shard.pending(), 0);
    if kind != EngineKind::Exact {
        assert_eq!(built.index_len, shard.len(), "{kind}: index length");
    }
    check(&shard, "built");
    let before: Vec<Vec<String>> = (0..20)
        .map(|q| {
            ids(&shard.search(ds.query(q), K, None).unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let (len, offset) = (shard.len(), shard.next_offset());
    drop(shard);

    let shard = open(dir.path(), kind, ds.dim);
    assert_eq!(shard.engine(), kind);
    assert_eq!(
        (shard.len(), shard.next_offset(), shard.pending()),
        (len, offset, 0)
    );
    check(&shard, "reopened");
    for (q, want) in before.iter().enumerate() {
        let got: Vec<String> = ids(&shard.search(ds.query(q), K, None).unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            &got, want,
            "{kind}: query {q} answers differently after reopen"
        );
    }
}

/// A tenant's ring range: only in-range items come back, and they are its true
/// neighbours (recall against brute force over the in-range rows).
fn range_filter_returns_only_in_range_items(kind: EngineKind) {
    let ds = small(SMALL);
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), kind, ds.dim);
    common::load_rows(&shard, &ds, 0..ds.len(), 0);
    shard.build_index().unwrap();
    // Half of the rows pending again (re-upserted with a newer hlc): the filter must hold
    // for the pending tail too.
    let ops: Vec<(u64, ShardOp)> = (0..ds.len())
        .step_by(2)
        .enumerate()
        .map(|(i, r)| {
            (
                ds.len() as u64 + i as u64,
                common::upsert(&ds, r, common::ring_of(r), Hlc(10_000 + r as u64)),
            )
        })
        .collect();
    shard.apply(&ops).unwrap();
    for (range, label) in [
        (
            RingRange {
                start: 0,
                end: Some(u64::MAX / 5),
            },
            "a fifth",
        ),
        (
            RingRange {
                start: u64::MAX / 2,
                end: Some(u64::MAX / 2 + u64::MAX / 50),
            },
            "a fiftieth",
        ),
    ] {
        let in_range: Vec<usize> = (0..ds.len())
            .filter(|&r| range.contains(common::ring_of(r)))
            .collect();
        let mut total = 0.0;
        let queries = 30;
        for q in 0..queries {
            let hits = shard.search(ds.query(q), K, Some(range)).unwrap();
            let mut truth: Vec<(f32, usize)> = in_range
                .iter()
                .map(|&r| {
                    let v = ds.base_vector(r);
                    let dot: f32 = v.iter().zip(ds.query(q)).map(|(a, b)| a * b).sum();
                    (dot, r)
                })
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: HashSet<usize> = truth.iter().take(K).map(|t| t.1).collect();
            assert_eq!(hits.len(), K.min(in_range.len()), "{kind} {label}: hits");
            let mut found = 0;
            for h in &hits {
                let row = row_of(&h.id, &ds);
                assert!(
                    range.contains(common::ring_of(row)),
                    "{kind} {label}: {} is outside the range",
                    h.id
                );
                found += usize::from(truth.contains(&row));
            }
            total += found as f64 / truth.len().max(1) as f64;
        }
        let recall = total / queries as f64;
        let bar = recall_bar(kind) - 0.05;
        assert!(
            recall >= bar,
            "{kind} {label} ({} rows): in-range recall@{K} {recall:.3} < {bar}",
            in_range.len()
        );
    }
}

macro_rules! conformance {
    ($($name:ident => $kind:expr),* $(,)?) => {
        mod conformance {
            use super::*;
            $(
                mod $name {
                    use super::*;
                    #[test]
                    fn upserts_replace_deletes_remove_and_reopen_keeps_everything() {
                        upserts_replace_and_deletes_remove($kind);
                    }
                    #[test]
                    fn range_filter_returns_only_in_range_items() {
                        super::range_filter_returns_only_in_range_items($kind);
                    }
                }
            )*
        }
    };
}

conformance! {
    exact => EngineKind::Exact,
    arroy => EngineKind::Arroy,
    hnsw => EngineKind::Hnsw,
    warm => EngineKind::Warm,
    cold => EngineKind::Cold,
}

#[test]
fn dot_product_is_refused_by_warm_and_cold_with_a_clear_error() {
    for kind in [EngineKind::Warm, EngineKind::Cold] {
        let dir = tempfile::tempdir().unwrap();
        let err = Shard::open(dir.path(), ShardConfig::new(8, Distance::Dot, kind)).unwrap_err();
        assert!(
            err.to_string().contains("dot-product"),
            "{kind}: unclear error {err}"
        );
    }
}

#[test]
fn euclidean_works_on_warm_and_cold() {
    let ds = small(600);
    for kind in [EngineKind::Warm, EngineKind::Cold] {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::open(
            dir.path(),
            ShardConfig::new(ds.dim, Distance::Euclidean, kind),
        )
        .unwrap();
        common::load_rows(&shard, &ds, 0..ds.len(), 0);
        shard.build_index().unwrap();
        for row in [0usize, 77, 599] {
            let hits = shard.search(ds.base_vector(row), 10, None).unwrap();
            assert_eq!(hits[0].id, ds.ids[row], "{kind}: row {row}");
            assert!(
                hits[0].score.abs() < 1e-3,
                "{kind}: -distance {}",
                hits[0].score
            );
            assert!(hits[1].score <= hits[0].score);
        }
    }
}

/// hot → warm → cold → hot while a reader searches: no search errors, every search finds
/// its probe row, deleted ids never come back; writes between switches are kept.
#[test]
fn set_engine_switches_tiers_while_serving() {
    let ds = small(3_000);
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(open(dir.path(), EngineKind::Hnsw, ds.dim));
    common::load_rows(&shard, &ds, 0..2_000, 0);
    shard.build_index().unwrap();
    // A pending tail, a replaced and some deleted ids before the first switch.
    common::load_rows(&shard, &ds, 2_000..2_400, 0);
    let deleted: Vec<String> = ds.ids[50..60].to_vec();
    let ops: Vec<(u64, ShardOp)> = deleted
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                2_400 + i as u64,
                ShardOp::Delete {
                    id: id.clone(),
                    tenant: None,
                    hlc: Hlc(1_000_000),
                },
            )
        })
        .collect();
    shard.apply(&ops).unwrap();
    assert!(shard.pending() > 0);

    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (shard, stop, searches, ds, deleted) = (
            shard.clone(),
            stop.clone(),
            searches.clone(),
            ds.clone(),
            deleted.clone(),
        );
        std::thread::spawn(move || {
            let probes = [0usize, 7, 61, 500, 1_999, 2_100, 2_399];
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let row = probes[i % probes.len()];
                let hits = shard
                    .search(ds.base_vector(row), K, None)
                    .unwrap_or_else(|e| panic!("search failed during a switch: {e}"));
                assert!(
                    hits.iter().any(|h| h.id == ds.ids[row]),
                    "row {row} not found on {}",
                    shard.engine()
                );
                let q = shard.search(ds.query(i % 50), K, None).unwrap();
                assert_eq!(q.len(), K);
                for h in &q {
                    assert!(!deleted.contains(&h.id), "deleted {} returned", h.id);
                }
                searches.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    let mut offset = 2_410u64;
    let mut next_row = 2_400usize;
    for kind in [EngineKind::Warm, EngineKind::Cold, EngineKind::Hnsw] {
        let before = searches.load(Ordering::Relaxed);
        let report = shard.set_engine(kind).unwrap();
        assert_eq!(shard.engine(), kind);
        assert_eq!(shard.pending(), 0);
        assert_eq!(report.index_len, shard.len(), "{kind}: everything indexed");
        eprintln!(
            "switched to {kind} in {:.2}s ({} searches meanwhile)",
            report.duration.as_secs_f64(),
            searches.load(Ordering::Relaxed) - before
        );
        // Writes keep working on the new engine: a pending tail, then a build.
        common::load_rows(
            &shard,
            &ds,
            next_row..next_row + 200,
            offset - next_row as u64,
        );
        offset += 200;
        next_row += 200;
        assert_eq!(shard.pending(), 200);
        let hits = shard.search(ds.base_vector(next_row - 1), 1, None).unwrap();
        assert_eq!(hits[0].id, ds.ids[next_row - 1]);
    }
    shard.build_index().unwrap();
    stop.store(true, Ordering::Release);
    reader.join().expect("the reader thread saw no error");
    assert!(searches.load(Ordering::Relaxed) > 0);
    let live = shard.len();
    assert_eq!(live, (next_row - deleted.len()) as u64);
    drop(shard);

    // Reopening with another configured engine opens the stored one (no error).
    let shard = open(dir.path(), EngineKind::Cold, ds.dim);
    assert_eq!(shard.engine(), EngineKind::Hnsw);
    assert_eq!(shard.config().engine, EngineKind::Hnsw);
    assert_eq!(shard.len(), live);
    let hits = shard.search(ds.base_vector(2_500), 1, None).unwrap();
    assert_eq!(hits[0].id, ds.ids[2_500]);
    // And the tier can be changed from there.
    shard.set_engine(EngineKind::Cold).unwrap();
    drop(shard);
    let shard = open(dir.path(), EngineKind::Hnsw, ds.dim);
    assert_eq!(shard.engine(), EngineKind::Cold);
    let hits = shard.search(ds.base_vector(7), 1, None).unwrap();
    assert_eq!(hits[0].id, ds.ids[7]);
}
