//! Helpers shared by the indexers integration tests: the real data set (or its subset),
//! loading a data set into a shard, and measuring recall and QPS.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hektor_indexers::dataset::{data_dir, Dataset};
use hektor_indexers::{Shard, ShardOp};
use hektor_topics::hlc::Hlc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rows used when the data set is absent or a test only needs a slice.
pub const SUBSET: usize = 5_000;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The full data set when present. Under `CI=true` a missing data set fails the test;
/// otherwise `None` (the caller falls back to a subset).
pub fn full_dataset() -> Option<&'static Dataset> {
    static FULL: OnceLock<Option<Dataset>> = OnceLock::new();
    FULL.get_or_init(|| {
        let dir = data_dir();
        match Dataset::load(&dir, None) {
            Ok(ds) => Some(ds),
            Err(e) if ci() => panic!(
                "CI=true and the data set at {} is unusable: {e}",
                dir.display()
            ),
            Err(e) => {
                eprintln!(
                    "data set at {} unusable ({e}); using a smaller set",
                    dir.display()
                );
                None
            }
        }
    })
    .as_ref()
}

/// The first `n` rows of the real data set with brute-force ground truth, or (data set
/// absent, not under CI) a synthetic clustered set of `n` unit vectors.
pub fn subset(n: usize) -> Dataset {
    match Dataset::load(&data_dir(), Some(n)) {
        Ok(ds) => ds,
        Err(e) if ci() => panic!("CI=true and the data set is unusable: {e}"),
        Err(_) => synthetic(n, 200, 64),
    }
}

/// Full data when present, else [`subset`] of [`SUBSET`] rows.
pub fn recall_dataset() -> (Dataset, &'static str) {
    match full_dataset() {
        Some(ds) => (ds.clone(), "full"),
        None => (subset(SUBSET), "subset"),
    }
}

/// Deterministic clustered unit vectors (a seeded `StdRng`), with brute-force ground
/// truth.
pub fn synthetic(n: usize, n_queries: usize, dim: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    let mut next = move || rng.random_range(-0.5f32..0.5);
    let centers: Vec<Vec<f32>> = (0..32)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    let mut row = |i: usize| -> Vec<f32> {
        let c = &centers[i % centers.len()];
        let v: Vec<f32> = c.iter().map(|x| x + 0.3 * next()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    };
    let base: Vec<f32> = (0..n).flat_map(&mut row).collect();
    let queries: Vec<f32> = (0..n_queries).flat_map(|i| row(i + 7)).collect();
    let (groundtruth, gt_scores) =
        hektor_indexers::dataset::exact_ground_truth(&base, &queries, dim, 100);
    Dataset {
        base,
        dim,
        ids: (0..n).map(|i| format!("syn-{i}")).collect(),
        queries,
        groundtruth,
        gt_scores,
        groundtruth_computed: true,
    }
}

/// Upsert op for row `row` of `ds`, with ring position `ring`.
pub fn upsert(ds: &Dataset, row: usize, ring: u64, hlc: Hlc) -> ShardOp {
    ShardOp::Upsert {
        id: ds.ids[row].clone(),
        tenant: None,
        ring,
        vector: ds.base_vector(row).to_vec(),
        payload: Some(serde_json::json!({ "row": row })),
        hlc,
    }
}

/// Apply rows `0..ds.len()` at offsets `first_offset..`, in batches; returns the time taken.
pub fn load_rows(
    shard: &Shard,
    ds: &Dataset,
    rows: std::ops::Range<usize>,
    first_offset: u64,
) -> Duration {
    let started = Instant::now();
    let rows: Vec<usize> = rows.collect();
    for chunk in rows.chunks(2_000) {
        let ops: Vec<(u64, ShardOp)> = chunk
            .iter()
            .map(|&r| {
                (
                    first_offset + r as u64,
                    upsert(ds, r, ring_of(r), Hlc(1 + r as u64)),
                )
            })
            .collect();
        let report = shard.apply(&ops).expect("apply");
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
    started.elapsed()
}

/// A ring position for row `r`: spread over the ring, deterministic.
pub fn ring_of(r: usize) -> u64 {
    (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Map ids back to base rows.
pub fn row_index(ds: &Dataset) -> HashMap<String, u32> {
    ds.ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32))
        .collect()
}

pub struct Measured {
    pub recall: f64,
    pub qps: f64,
    pub queries: usize,
}

/// Search each of the first `n_queries` queries (one thread) and measure recall@k and QPS.
pub fn measure(
    shard: &Shard,
    ds: &Dataset,
    rows: &HashMap<String, u32>,
    k: usize,
    n_queries: usize,
) -> Measured {
    let n = n_queries.min(ds.n_queries());
    let mut total = 0.0;
    let started = Instant::now();
    let mut results = Vec::with_capacity(n);
    for q in 0..n {
        results.push(shard.search(ds.query(q), k, None).expect("search"));
    }
    let elapsed = started.elapsed();
    for (q, hits) in results.iter().enumerate() {
        assert!(hits.len() <= k);
        let returned: Vec<u32> = hits
            .iter()
            .map(|h| *rows.get(&h.id).unwrap_or(&u32::MAX))
            .collect();
        total += ds.recall(q, &returned, k);
    }
    Measured {
        recall: total / n.max(1) as f64,
        qps: n as f64 / elapsed.as_secs_f64().max(1e-9),
        queries: n,
    }
}

pub fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A field of this process's `/proc/self/status` in KiB (`"VmRSS:"`, `"RssAnon:"`,
/// `"RssFile:"`), `None` where there is no such file or field.
pub fn status_kib(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
}
