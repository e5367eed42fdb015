//! The batch searcher (`hektor_indexers::batch`): the CPU path against a naive f64 scan
//! on real MiniLM embeddings for every distance, its input checks, the routing rule, and
//! (feature `gpu`) the GPU path against the CPU path.
//!
//! Data: the shipped sample (`samples/debian-minilm-384-sample`, or `$HEKTOR_SAMPLE`).
//! The GPU tests use `$HEKTOR_GPU_DATA` (a folder with `base.fvecs` and `query.fvecs`,
//! e.g. the 20k-row cut that `scripts/gpu-prepare.sh` writes), else the full data set
//! when present, else the sample. With feature `gpu` and no usable GPU they FAIL, unless
//! `HEKTOR_GPU_OPTIONAL=1`.
//!
//! `batch_throughput` (ignored; run with `--ignored --nocapture`) prints JSON lines
//! `{"backend","batch","queries_per_s",...}` for batches of 1, 100 and 1000.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hektor_indexers::batch::{route, Backend, BatchSearcher, RoutePolicy};
use hektor_indexers::dataset::{data_dir, read_fvecs};
use hektor_topics::record::Distance;

const ALL: [Distance; 3] = [Distance::Cosine, Distance::Dot, Distance::Euclidean];

/// Base and queries of a data set folder, row-major.
struct Data {
    base: Vec<f32>,
    queries: Vec<f32>,
    dim: usize,
    source: String,
}

fn sample_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HEKTOR_SAMPLE") {
        return PathBuf::from(d);
    }
    let by_manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-minilm-384-sample");
    if by_manifest.join("base.fvecs").exists() {
        by_manifest
    } else {
        PathBuf::from("samples/debian-minilm-384-sample")
    }
}

fn load(dir: &Path, base_limit: Option<usize>) -> Data {
    let (base, dim) = read_fvecs(&dir.join("base.fvecs"), base_limit)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let (queries, qdim) = read_fvecs(&dir.join("query.fvecs"), None)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    assert_eq!(
        dim,
        qdim,
        "{}: base and query dimensions differ",
        dir.display()
    );
    Data {
        source: format!("{} ({} × {dim})", dir.display(), base.len() / dim),
        base,
        queries,
        dim,
    }
}

fn sample() -> Data {
    load(&sample_dir(), None)
}

/// Exact scores in f64, "higher is closer", with the metric module's conventions.
fn exact_score(distance: Distance, q: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = q.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    match distance {
        Distance::Dot => dot,
        Distance::Cosine => {
            let nq: f64 = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if nq > 0.0 && nb > 0.0 {
                (dot / (nq * nb)).clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }
        Distance::Euclidean => -q
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
    }
}

/// The naive per-query scan: every row scored, sorted by score then row.
fn naive(data: &Data, distance: Distance, queries: &[f32], k: usize) -> Vec<Vec<(u32, f64)>> {
    queries
        .chunks_exact(data.dim)
        .map(|q| {
            let mut all: Vec<(u32, f64)> = data
                .base
                .chunks_exact(data.dim)
                .enumerate()
                .map(|(r, b)| (r as u32, exact_score(distance, q, b)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

/// `got` equals `want` up to `tol`: same length; scores equal position by position; each
/// returned row's own exact score equals its reported score; and any row that differs
/// from the reference set scores within `tol` of the reference's k-th score (a tie).
fn assert_same(
    what: &str,
    data: &Data,
    distance: Distance,
    queries: &[f32],
    got: &[Vec<(u32, f32)>],
    want: &[Vec<(u32, f64)>],
    tol: f64,
) {
    assert_eq!(got.len(), want.len(), "{what}: one result list per query");
    let mut swapped_ties = 0;
    for (qi, (g, w)) in got.iter().zip(want).enumerate() {
        let q = &queries[qi * data.dim..(qi + 1) * data.dim];
        assert_eq!(g.len(), w.len(), "{what}: query {qi} result length");
        for (pos, ((gr, gs), (_, ws))) in g.iter().zip(w).enumerate() {
            assert!(
                (*gs as f64 - ws).abs() <= tol,
                "{what}: query {qi} position {pos}: score {gs} vs {ws}"
            );
            let b = &data.base[*gr as usize * data.dim..(*gr as usize + 1) * data.dim];
            let own = exact_score(distance, q, b);
            assert!(
                (*gs as f64 - own).abs() <= tol,
                "{what}: query {qi} row {gr} reported {gs}, its exact score is {own}"
            );
        }
        let kth = w.last().map_or(f64::NEG_INFINITY, |x| x.1);
        for (gr, gs) in g {
            if !w.iter().any(|(wr, _)| wr == gr) {
                swapped_ties += 1;
                assert!(
                    (*gs as f64 - kth).abs() <= tol,
                    "{what}: query {qi} returned row {gr} ({gs}) that is not among the true top {} (k-th score {kth})",
                    w.len()
                );
            }
        }
    }
    eprintln!(
        "{what}: {} queries match; {swapped_ties} rows swapped at ties",
        got.len()
    );
}

#[test]
fn cpu_batch_equals_a_naive_scan_for_every_distance() {
    let data = sample();
    assert!(
        data.queries.len() / data.dim >= 50,
        "the sample has too few queries"
    );
    let k = 10;
    for distance in ALL {
        let want = naive(&data, distance, &data.queries, k);
        for threads in [1, 2] {
            let s = BatchSearcher::cpu(data.base.clone(), data.dim, distance)
                .unwrap()
                .with_threads(threads);
            assert_eq!(s.backend(), "cpu");
            assert_eq!(s.rows(), data.base.len() / data.dim);
            let got = s.search(&data.queries, k).unwrap();
            let what = format!("cpu {distance:?} {threads} thread(s) on {}", data.source);
            assert_same(&what, &data, distance, &data.queries, &got, &want, 1e-4);
        }
    }
}

#[test]
fn cpu_batch_splits_big_batches_over_threads_with_the_same_results() {
    // Base rows as extra queries make the batch big enough to be split over threads,
    // and include exact self-matches (cosine 1, distance 0).
    let data = sample();
    let mut queries = data.queries.clone();
    queries.extend_from_slice(&data.base[..400 * data.dim]);
    for distance in ALL {
        let one = BatchSearcher::cpu(data.base.clone(), data.dim, distance)
            .unwrap()
            .with_threads(1)
            .search(&queries, 5)
            .unwrap();
        let four = BatchSearcher::cpu(data.base.clone(), data.dim, distance)
            .unwrap()
            .with_threads(4)
            .search(&queries, 5)
            .unwrap();
        assert_eq!(one, four, "{distance:?}: thread count changed the results");
        let want = naive(&data, distance, &queries, 5);
        assert_same(
            &format!(
                "cpu {distance:?} 4 threads, {} queries",
                queries.len() / data.dim
            ),
            &data,
            distance,
            &queries,
            &four,
            &want,
            1e-4,
        );
    }
}

#[test]
fn cpu_batch_handles_k_and_batch_edge_cases() {
    let data = sample();
    let dim = data.dim;
    let few = data.base[..7 * dim].to_vec();
    let s = BatchSearcher::cpu(few, dim, Distance::Cosine).unwrap();
    // k larger than the base: every row, best first.
    let got = s.search(&data.queries[..2 * dim], 50).unwrap();
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.len(), 7);
        assert!(
            r.windows(2).all(|w| w[0].1 >= w[1].1),
            "not best first: {r:?}"
        );
        let mut rows: Vec<u32> = r.iter().map(|x| x.0).collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..7).collect::<Vec<u32>>());
    }
    // k = 0 and an empty batch.
    assert_eq!(
        s.search(&data.queries[..3 * dim], 0).unwrap(),
        vec![Vec::new(); 3]
    );
    assert!(s.search(&[], 10).unwrap().is_empty());
}

#[test]
fn cpu_batch_breaks_ties_by_smaller_row() {
    // Three identical rows and one other: the identical ones tie and come in row order.
    let base = vec![1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0];
    for distance in ALL {
        let s = BatchSearcher::cpu(base.clone(), 2, distance).unwrap();
        let got = s.search(&[1.0, 0.0], 3).unwrap();
        let rows: Vec<u32> = got[0].iter().map(|x| x.0).collect();
        assert_eq!(rows, vec![0, 2, 3], "{distance:?}: {got:?}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let data = sample();
    let dim = data.dim;
    assert!(BatchSearcher::cpu(vec![0.0; 10], 0, Distance::Dot).is_err());
    assert!(BatchSearcher::cpu(vec![0.0; dim + 1], dim, Distance::Dot).is_err());
    let mut nan_base = data.base[..2 * dim].to_vec();
    nan_base[dim + 3] = f32::NAN;
    let e = BatchSearcher::cpu(nan_base, dim, Distance::Dot).unwrap_err();
    assert!(e.to_string().contains("row 1"), "{e}");

    let s = BatchSearcher::cpu(data.base[..10 * dim].to_vec(), dim, Distance::Cosine).unwrap();
    let e = s.search(&data.queries[..dim + 5], 3).unwrap_err();
    assert!(e.to_string().contains("multiple of"), "{e}");
    let mut q = data.queries[..2 * dim].to_vec();
    q[dim] = f32::INFINITY;
    let e = s.search(&q, 3).unwrap_err();
    assert!(e.to_string().contains("query 1"), "{e}");
}

#[test]
fn routing_sends_batches_and_high_dimensions_to_the_gpu_and_single_queries_to_the_cpu() {
    let p = RoutePolicy::default();
    assert_eq!((p.gpu_min_batch, p.gpu_min_dim), (100, 1024));
    // Batches of at least 100 go to the GPU when there is one.
    assert_eq!(route(100, 384, true, &p), Backend::Gpu);
    assert_eq!(route(1000, 384, true, &p), Backend::Gpu);
    assert_eq!(route(99, 384, true, &p), Backend::Cpu);
    // High dimension sends small batches too.
    assert_eq!(route(2, 1024, true, &p), Backend::Gpu);
    assert_eq!(route(2, 1023, true, &p), Backend::Cpu);
    // A single query (or nothing) stays on the CPU, even at high dimension.
    assert_eq!(route(1, 4096, true, &p), Backend::Cpu);
    assert_eq!(route(0, 4096, true, &p), Backend::Cpu);
    // No GPU: always the CPU.
    assert_eq!(route(10_000, 4096, false, &p), Backend::Cpu);
    // The thresholds are the policy's.
    let p = RoutePolicy {
        gpu_min_batch: 8,
        gpu_min_dim: 100_000,
    };
    assert_eq!(route(8, 384, true, &p), Backend::Gpu);
    assert_eq!(route(7, 4096, true, &p), Backend::Cpu);
}

#[test]
fn gpu_availability_is_reported_consistently() {
    let available = hektor_indexers::batch::gpu_available();
    #[cfg(not(feature = "gpu"))]
    assert!(!available, "without feature gpu no GPU can be available");
    #[cfg(feature = "gpu")]
    {
        let data = sample();
        let made = BatchSearcher::gpu(&data.base[..8 * data.dim], data.dim, Distance::Dot);
        assert_eq!(
            available,
            made.is_ok(),
            "gpu_available() = {available} but BatchSearcher::gpu gave {:?}",
            made.as_ref().err()
        );
    }
}

/// The data the GPU tests and the benchmark use; see the module doc.
fn gpu_data() -> Data {
    if let Some(d) = std::env::var_os("HEKTOR_GPU_DATA") {
        return load(Path::new(&d), None);
    }
    let full = data_dir();
    if full.join("base.fvecs").exists() && full.join("query.fvecs").exists() {
        return load(&full, None);
    }
    sample()
}

#[cfg(feature = "gpu")]
mod gpu {
    use super::*;
    use hektor_indexers::batch::gpu::TopKOn;
    use hektor_indexers::candidates;

    /// A GPU searcher, or `None` (test passes) when `HEKTOR_GPU_OPTIONAL=1` and none is
    /// usable; any other failure fails the test.
    fn gpu_or_skip(data: &Data, distance: Distance, topk: TopKOn) -> Option<BatchSearcher> {
        match BatchSearcher::gpu_with(&data.base, data.dim, distance, topk) {
            Ok(s) => Some(s),
            Err(e) if std::env::var("HEKTOR_GPU_OPTIONAL").is_ok_and(|v| v == "1") => {
                eprintln!("no GPU ({e}); skipped because HEKTOR_GPU_OPTIONAL=1");
                None
            }
            Err(e) => panic!("built with feature gpu but no GPU is usable: {e} (set HEKTOR_GPU_OPTIONAL=1 to skip)"),
        }
    }

    #[test]
    fn gpu_batch_equals_cpu_batch_for_every_distance_and_top_k_site() {
        let data = gpu_data();
        let n = data.queries.len() / data.dim;
        eprintln!("GPU vs CPU on {}, {n} queries", data.source);
        for distance in ALL {
            let cpu = BatchSearcher::cpu(data.base.clone(), data.dim, distance).unwrap();
            for topk in [TopKOn::Device, TopKOn::Host] {
                let Some(gpu) = gpu_or_skip(&data, distance, topk) else {
                    return;
                };
                let ks: &[usize] = if distance == Distance::Cosine {
                    &[1, 10, 32, 100]
                } else {
                    &[10]
                };
                for &k in ks {
                    let t = Instant::now();
                    let got = gpu.search(&data.queries, k).unwrap();
                    let gpu_time = t.elapsed();
                    let want = cpu.search(&data.queries, k).unwrap();
                    let want: Vec<Vec<(u32, f64)>> = want
                        .into_iter()
                        .map(|r| r.into_iter().map(|(i, s)| (i, s as f64)).collect())
                        .collect();
                    let what = format!(
                        "{} {distance:?} k={k} ({:.1} ms)",
                        gpu.backend(),
                        gpu_time.as_secs_f64() * 1e3
                    );
                    assert_same(&what, &data, distance, &data.queries, &got, &want, 1e-3);
                }
            }
        }
    }

    /// Rows of `a` and `b` (candidate lists, row by row) that share at least 90 % of
    /// their entries, over all rows: GPU and CPU scores differ in their last bits, so
    /// near-equal candidates may swap at a list's end.
    fn overlap(a: &candidates::RoundLists, b: &candidates::RoundLists, n: usize) -> f64 {
        let mut same = 0;
        for r in 0..n {
            let x: Vec<u32> = a.of(r).collect();
            let common = b.of(r).filter(|y| x.contains(y)).count();
            same += usize::from(common * 10 >= x.len() * 9);
        }
        same as f64 / n as f64
    }

    #[test]
    fn build_candidate_lists_on_the_gpu_match_the_cpus_round_after_round() {
        use hektor_indexers::{candidate_stats, BuildCandidates};
        let data = gpu_data();
        if gpu_or_skip(&data, Distance::Cosine, TopKOn::Device).is_none() {
            return;
        }
        let per = candidates::per_row(16);
        let round = 4_096.min(data.base.len() / data.dim / 2);
        for (i, rows) in data.base.chunks(round * data.dim).take(2).enumerate() {
            let before = candidate_stats();
            let t = Instant::now();
            let gpu = candidates::round_lists(
                rows.to_vec(),
                data.dim,
                Distance::Cosine,
                per,
                BuildCandidates::Gpu,
            )
            .unwrap()
            .unwrap();
            let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let cpu = candidates::round_lists(
                rows.to_vec(),
                data.dim,
                Distance::Cosine,
                per,
                BuildCandidates::Cpu,
            )
            .unwrap()
            .unwrap();
            let cpu_ms = t.elapsed().as_secs_f64() * 1e3;
            let after = candidate_stats();
            assert_eq!(gpu.backend, "gpu", "round {i}: the GPU worker failed");
            assert!(after.gpu_rows >= before.gpu_rows + round as u64);
            let same = overlap(&gpu, &cpu, round);
            eprintln!(
                "build round {i}: {round} rows x {per} candidates, GPU {gpu_ms:.1} ms, CPU {cpu_ms:.1} ms, {:.4} of rows agree",
                same
            );
            assert!(same >= 0.99, "round {i}: only {same:.4} of rows agree");
        }
    }

    #[test]
    fn gpu_batch_chunks_the_base_and_the_batch_with_the_same_results() {
        let data = gpu_data();
        let distance = Distance::Euclidean;
        let cpu = BatchSearcher::cpu(data.base.clone(), data.dim, distance).unwrap();
        let want: Vec<Vec<(u32, f64)>> = cpu
            .search(&data.queries, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.into_iter().map(|(i, s)| (i, s as f64)).collect())
            .collect();
        for topk in [TopKOn::Device, TopKOn::Host] {
            let Some(gpu) = gpu_or_skip(&data, distance, topk) else {
                return;
            };
            // 97 queries × ~1000 rows per sgemm: many base chunks, ragged ends.
            let gpu = gpu.with_score_budget(97 * 1000);
            let got = gpu.search(&data.queries, 10).unwrap();
            let what = format!("{} chunked", gpu.backend());
            assert_same(&what, &data, distance, &data.queries, &got, &want, 1e-3);
        }
    }
}

/// Queries per second of `s` for batches of `batch` queries taken cyclically from
/// `queries`, over at least `min_time` (after one warm-up batch).
fn throughput(
    s: &BatchSearcher,
    queries: &[f32],
    dim: usize,
    batch: usize,
    min_time: Duration,
) -> f64 {
    let n = queries.len() / dim;
    let make = |start: usize| -> Vec<f32> {
        (0..batch)
            .flat_map(|i| {
                let q = (start + i) % n;
                queries[q * dim..(q + 1) * dim].iter().copied()
            })
            .collect()
    };
    let batches: Vec<Vec<f32>> = (0..8).map(|b| make(b * batch)).collect();
    s.search(&batches[0], 10).unwrap();
    let t = Instant::now();
    let mut done = 0usize;
    let mut i = 0;
    while t.elapsed() < min_time || done == 0 {
        let r = s.search(&batches[i % batches.len()], 10).unwrap();
        assert_eq!(r.len(), batch);
        done += batch;
        i += 1;
    }
    done as f64 / t.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn batch_throughput() {
    let data = gpu_data();
    let dim = data.dim;
    let rows = data.base.len() / dim;
    let min_time = Duration::from_millis(
        std::env::var("HEKTOR_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(700),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "batch throughput on {}, cosine, k=10, {cores} cores",
        data.source
    );
    #[cfg_attr(not(feature = "gpu"), allow(unused_mut))]
    let mut searchers: Vec<(String, BatchSearcher)> = vec![
        (
            "cpu-1t".into(),
            BatchSearcher::cpu(data.base.clone(), dim, Distance::Cosine)
                .unwrap()
                .with_threads(1),
        ),
        (
            "cpu".into(),
            BatchSearcher::cpu(data.base.clone(), dim, Distance::Cosine).unwrap(),
        ),
    ];
    #[cfg(feature = "gpu")]
    for topk in [
        hektor_indexers::batch::gpu::TopKOn::Device,
        hektor_indexers::batch::gpu::TopKOn::Host,
    ] {
        let t = Instant::now();
        match BatchSearcher::gpu_with(&data.base, dim, Distance::Cosine, topk) {
            Ok(s) => {
                eprintln!(
                    "{}: set up in {:.0} ms",
                    s.backend(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                searchers.push((s.backend().into(), s));
            }
            Err(e) => eprintln!("no GPU backend: {e}"),
        }
    }
    for batch in [1usize, 100, 1000] {
        for (name, s) in &searchers {
            let qps = throughput(s, &data.queries, dim, batch, min_time);
            println!(
                "{{\"backend\":\"{name}\",\"batch\":{batch},\"queries_per_s\":{qps:.1},\"rows\":{rows},\"dim\":{dim},\"k\":10,\"cores\":{cores}}}"
            );
        }
    }
}
