//! `hektor-bench search --engine batch --batch-sizes 1,100,1000`: the batch route's CPU
//! path against one-at-a-time exact search, in one process, on the same shard.
//!
//! The base is applied to one exact-engine shard. The baseline is that shard's own exact
//! search ([`Shard::search`]), one query at a time on one thread, ids and payloads read.
//! The batch path is what `POST /collections/{c}/search/batch` does per shard: the
//! shard's live vectors as a matrix from one snapshot ([`Shard::exact_view`], built once
//! and timed apart, as the route caches it), [`BatchSearcher::cpu`] over the batch on
//! every core, then each hit's record read from the snapshot. Every batch size runs the
//! same queries; one JSON line per size gives queries/s of both and the speedup, and how
//! many queries' top k ids differ from the baseline's (exact both: 0 up to ties).

use std::time::Instant;

use anyhow::Context;
use hektor_indexers::batch::BatchSearcher;
use hektor_indexers::dataset::Dataset;
use hektor_indexers::{EngineKind, Shard, ShardConfig, ShardOp};
use hektor_topics::hlc::Hlc;
use hektor_topics::record::Distance;
use hektor_topics::ring;
use serde_json::json;

const K: usize = 10;

/// Run the batch bench on `ds`'s first `n_queries` queries for each of `sizes`.
pub(crate) fn run(
    ds: &Dataset,
    n_queries: usize,
    sizes: &[usize],
    json_lines: bool,
) -> anyhow::Result<()> {
    if sizes.contains(&0) {
        anyhow::bail!("--batch-sizes must be at least 1");
    }
    let dir = tempfile::tempdir().context("creating a temp dir for the shard")?;
    let shard = Shard::open(
        dir.path(),
        ShardConfig::new(ds.dim, Distance::Cosine, EngineKind::Exact),
    )?;
    let rows: Vec<usize> = (0..ds.len()).collect();
    for chunk in rows.chunks(2_000) {
        let ops: Vec<(u64, ShardOp)> = chunk
            .iter()
            .map(|&row| {
                let id = &ds.ids[row];
                (
                    row as u64,
                    ShardOp::Upsert {
                        id: id.clone(),
                        tenant: None,
                        ring: ring::position(None, id),
                        vector: ds.base_vector(row).to_vec(),
                        payload: None,
                        hlc: Hlc(1),
                    },
                )
            })
            .collect();
        shard.apply(&ops)?;
    }
    shard.build_index()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The baseline: one query at a time.
    let started = Instant::now();
    let mut baseline = Vec::with_capacity(n_queries);
    for q in 0..n_queries {
        let hits = shard.search(ds.query(q), K, None)?;
        baseline.push(hits.into_iter().map(|h| h.id).collect::<Vec<_>>());
    }
    let one_s = started.elapsed().as_secs_f64();
    let one_qps = n_queries as f64 / one_s;

    // The batch path: the matrix once (the route's cache), then the batches.
    let started = Instant::now();
    let view = shard.exact_view()?;
    let matrix = view.matrix(None)?;
    let searcher = BatchSearcher::cpu(matrix.vectors, ds.dim, Distance::Cosine)?;
    let build_s = started.elapsed().as_secs_f64();
    for &size in sizes {
        let started = Instant::now();
        let mut differ = 0usize;
        for first in (0..n_queries).step_by(size) {
            let last = (first + size).min(n_queries);
            let flat: Vec<f32> = (first..last).flat_map(|q| ds.query(q)).copied().collect();
            let answers = searcher.search(&flat, K)?;
            for (i, hits) in answers.into_iter().enumerate() {
                let ids = hits
                    .into_iter()
                    .map(|(row, score)| {
                        view.raw_hit(matrix.items[row as usize], score, true)
                            .map(|h| h.id)
                    })
                    .collect::<hektor_indexers::Result<Vec<_>>>()?;
                differ += usize::from(ids != baseline[first + i]);
            }
        }
        let batch_s = started.elapsed().as_secs_f64();
        let qps = n_queries as f64 / batch_s;
        let line = json!({
            "bench": "batch",
            "backend": "cpu",
            "batch": size,
            "base": ds.len(),
            "dim": ds.dim,
            "k": K,
            "queries": n_queries,
            "threads": threads,
            "batch_qps": (qps * 10.0).round() / 10.0,
            "one_at_a_time_exact_qps": (one_qps * 10.0).round() / 10.0,
            "speedup": (qps / one_qps * 100.0).round() / 100.0,
            "matrix_build_s": (build_s * 1000.0).round() / 1000.0,
            "queries_differing_from_exact": differ,
        });
        if json_lines {
            println!("{line}");
        } else {
            println!(
                "batch {size:>5}: {qps:>9.1} q/s on {threads} threads vs one at a time {one_qps:.1} q/s ({:.2}×); {differ} of {n_queries} queries differ",
                qps / one_qps
            );
        }
    }
    Ok(())
}
