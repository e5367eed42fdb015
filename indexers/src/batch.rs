//! Exact top-k for *batches* of queries against a row-major matrix of base vectors, on the
//! CPU or (feature `gpu`) on an NVIDIA GPU, and the routing rule that picks between them
//! (seed §2.3: batches go to the GPU, single queries stay on the CPU).
//!
//! - [`BatchSearcher::cpu`]: a blocked matrix product (query tiles × base tiles that fit
//!   in cache, each query scored against four base rows at once by a lane loop the
//!   compiler vectorises, AVX2+FMA picked at run time), a bounded heap per query, and the
//!   query range split over threads.
//! - `BatchSearcher::gpu` (feature `gpu`, module `gpu`): the base uploaded once; per batch the
//!   queries are uploaded, cuBLAS `sgemm` computes the score matrix (the base cut in
//!   chunks so it stays within a memory budget), and the top k is selected on the device
//!   by a small NVRTC kernel (or, for comparison, on the host).
//! - [`route`]: which backend a batch of a given size and dimension should use.
//!
//! Scores are "higher is closer", as in [`crate::metric`] and the shards: cosine
//! similarity (a dot product of normalised copies, clamped to `[-1, 1]`), the dot
//! product, or minus the euclidean distance. Ties are broken by the smaller row number.
//!
//! This module holds no ids, payloads or LMDB state: rows are numbered `0..rows`, and a
//! caller (a shard, a bench) maps them to its own ids.

#[cfg(feature = "gpu")]
pub mod gpu;

use hektor_topics::record::Distance;

use crate::engine::TopK;
use crate::error::{Error, Result};

/// Where a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Cpu,
    Gpu,
}

/// The thresholds of [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Batches of at least this many queries go to the GPU (seed: 100).
    pub gpu_min_batch: usize,
    /// Batches of vectors with at least this many dimensions go to the GPU, whatever
    /// their size above one query (seed: 1024; the GEMM is compute-bound there).
    pub gpu_min_dim: usize,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            gpu_min_batch: 100,
            gpu_min_dim: 1024,
        }
    }
}

/// The seed's routing rule. With no GPU available everything runs on the CPU; a single
/// query (or an empty batch) always stays on the CPU (latency: a GPU round trip costs
/// more than scoring one query); a batch of at least `gpu_min_batch` queries, or of
/// two or more queries of dimension at least `gpu_min_dim`, goes to the GPU; anything
/// else stays on the CPU.
///
/// The seed's last rule ("GPU if its queue is short") is left to the caller, which knows
/// its queue: pass `gpu_available = false` when the GPU queue is full.
pub fn route(batch: usize, dim: usize, gpu_available: bool, policy: &RoutePolicy) -> Backend {
    if !gpu_available || batch <= 1 {
        return Backend::Cpu;
    }
    if batch >= policy.gpu_min_batch || dim >= policy.gpu_min_dim {
        Backend::Gpu
    } else {
        Backend::Cpu
    }
}

/// Whether this build has the GPU backend and a CUDA driver with at least one device can
/// be loaded now. Always `false` without feature `gpu`.
pub fn gpu_available() -> bool {
    #[cfg(feature = "gpu")]
    {
        gpu::probe().is_ok()
    }
    #[cfg(not(feature = "gpu"))]
    {
        false
    }
}

/// Exact top-k for a batch of queries against a row-major matrix of base vectors.
///
/// Holds the base (for cosine, normalised copies) and, on the GPU, a device copy of it.
/// `search` takes `&self` and may be called from several threads (GPU searches are
/// serialised on the device's stream).
pub struct BatchSearcher {
    dim: usize,
    rows: usize,
    distance: Distance,
    imp: Imp,
}

enum Imp {
    Cpu {
        base: Vec<f32>,
        threads: usize,
    },
    #[cfg(feature = "gpu")]
    Gpu(Box<gpu::GpuSearcher>),
}

impl std::fmt::Debug for BatchSearcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSearcher")
            .field("backend", &self.backend())
            .field("rows", &self.rows)
            .field("dim", &self.dim)
            .field("distance", &self.distance)
            .finish()
    }
}

impl BatchSearcher {
    /// A CPU searcher over `base` (`rows × dim`, row-major), using all available cores
    /// for batches of more than one query.
    ///
    /// Errors when `dim` is 0, `base.len()` is not a multiple of `dim`, the base has
    /// more than 2^32 rows, or holds a non-finite value.
    pub fn cpu(mut base: Vec<f32>, dim: usize, distance: Distance) -> Result<Self> {
        let rows = check_base(&base, dim)?;
        if distance == Distance::Cosine {
            for row in base.chunks_exact_mut(dim) {
                normalise(row);
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(BatchSearcher {
            dim,
            rows,
            distance,
            imp: Imp::Cpu { base, threads },
        })
    }

    /// A GPU searcher: `base` is uploaded to device 0 once; the top k is selected on the
    /// device. Errors (never panics) when no CUDA driver, device, cuBLAS or NVRTC can be
    /// loaded, with a message saying which.
    #[cfg(feature = "gpu")]
    pub fn gpu(base: &[f32], dim: usize, distance: Distance) -> Result<Self> {
        Self::gpu_with(base, dim, distance, gpu::TopKOn::Device)
    }

    /// [`BatchSearcher::gpu`] choosing where the top k is selected: on the device (an
    /// NVRTC kernel; only k scores per query come back) or on the host (the whole score
    /// matrix comes back through pinned memory). For benchmarks.
    #[cfg(feature = "gpu")]
    pub fn gpu_with(
        base: &[f32],
        dim: usize,
        distance: Distance,
        topk: gpu::TopKOn,
    ) -> Result<Self> {
        let rows = check_base(base, dim)?;
        let imp = gpu::GpuSearcher::new(base, rows, dim, distance, topk)?;
        Ok(BatchSearcher {
            dim,
            rows,
            distance,
            imp: Imp::Gpu(Box::new(imp)),
        })
    }

    /// Search `base` (`rows × dim`, row-major, same dimension and distance) from now on,
    /// on the same backend: on the GPU the device context, cuBLAS handle and compiled
    /// kernel are kept and only the base is uploaded, so a worker that searches a new base
    /// per job pays the device's start once. Errors as [`BatchSearcher::cpu`] for a bad
    /// base (then the old base stays), or when the upload fails.
    pub fn replace_base(&mut self, mut base: Vec<f32>) -> Result<()> {
        let rows = check_base(&base, self.dim)?;
        match &mut self.imp {
            Imp::Cpu { base: old, .. } => {
                if self.distance == Distance::Cosine {
                    for row in base.chunks_exact_mut(self.dim) {
                        normalise(row);
                    }
                }
                *old = base;
            }
            #[cfg(feature = "gpu")]
            Imp::Gpu(g) => g.replace_base(&base, rows, self.dim, self.distance)?,
        }
        self.rows = rows;
        Ok(())
    }

    /// Use at most `threads` threads (at least 1) for CPU work: the CPU backend's scoring
    /// and the GPU backend's host-side top-k.
    pub fn with_threads(mut self, threads: usize) -> Self {
        let threads = threads.max(1);
        match &mut self.imp {
            Imp::Cpu { threads: t, .. } => *t = threads,
            #[cfg(feature = "gpu")]
            Imp::Gpu(g) => g.set_threads(threads),
        }
        self
    }

    /// Per query of `queries` (row-major, `n × dim`): its `min(k, rows)` best rows as
    /// `(row, score)`, best first, ties by smaller row.
    ///
    /// Errors when `queries.len()` is not a multiple of the dimension or a query holds a
    /// non-finite value (then nothing is searched).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        if !queries.len().is_multiple_of(self.dim) {
            return Err(Error::InvalidQuery(format!(
                "a batch of {}-dimensional queries must hold a multiple of {} values, got {}",
                self.dim,
                self.dim,
                queries.len()
            )));
        }
        if let Some(i) = queries.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidQuery(format!(
                "query {} of the batch holds a non-finite value at dimension {}",
                i / self.dim,
                i % self.dim
            )));
        }
        let n = queries.len() / self.dim;
        let k = k.min(self.rows);
        if n == 0 || k == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        match &self.imp {
            Imp::Cpu { base, threads } => {
                let prepared;
                let queries = if self.distance == Distance::Cosine {
                    prepared = normalised(queries, self.dim);
                    &prepared[..]
                } else {
                    queries
                };
                Ok(cpu_search(
                    base,
                    self.dim,
                    self.distance,
                    queries,
                    k,
                    *threads,
                ))
            }
            #[cfg(feature = "gpu")]
            Imp::Gpu(g) => g.search(queries, k),
        }
    }

    /// Cap the GPU score matrix of one `sgemm` at `floats` floats (at least one row per
    /// query), cutting the base (and the batch) into more chunks. For tests and tuning;
    /// the default is [`gpu::SCORE_BUDGET`]. No effect on the CPU backend.
    #[cfg(feature = "gpu")]
    pub fn with_score_budget(mut self, floats: usize) -> Self {
        if let Imp::Gpu(g) = &mut self.imp {
            g.set_score_budget(floats);
        }
        self
    }

    /// `"cpu"`, `"gpu"` (device top-k) or `"gpu-host-topk"`.
    pub fn backend(&self) -> &'static str {
        match &self.imp {
            Imp::Cpu { .. } => "cpu",
            #[cfg(feature = "gpu")]
            Imp::Gpu(g) => g.backend(),
        }
    }

    /// Number of base rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The distance scores are computed for.
    pub fn distance(&self) -> Distance {
        self.distance
    }
}

/// Validate a base matrix; returns its row count.
fn check_base(base: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(Error::InvalidConfig(
            "a batch searcher needs a dimension of at least 1".into(),
        ));
    }
    if !base.len().is_multiple_of(dim) {
        return Err(Error::InvalidConfig(format!(
            "the base holds {} values, not a whole number of {dim}-dimensional rows",
            base.len()
        )));
    }
    let rows = base.len() / dim;
    if rows > u32::MAX as usize {
        return Err(Error::InvalidConfig(format!(
            "the base has {rows} rows; a batch searcher numbers rows with u32 (split the base)"
        )));
    }
    if let Some(i) = base.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidConfig(format!(
            "base row {} holds a non-finite value at dimension {}",
            i / dim,
            i % dim
        )));
    }
    Ok(rows)
}

/// Scale `v` to unit length in place (a zero vector stays zero: it scores 0 everywhere,
/// as [`crate::metric::cosine`] does).
pub(crate) fn normalise(v: &mut [f32]) {
    let n = crate::metric::norm(v);
    if n > 0.0 {
        for x in v {
            *x /= n;
        }
    }
}

/// A copy of `queries` with every row normalised.
pub(crate) fn normalised(queries: &[f32], dim: usize) -> Vec<f32> {
    let mut q = queries.to_vec();
    for row in q.chunks_exact_mut(dim) {
        normalise(row);
    }
    q
}

/// Split `n` items into at most `parts` contiguous, nearly equal, non-empty ranges.
pub(crate) fn split_ranges(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let (size, extra) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = size + usize::from(p < extra);
        if len > 0 {
            out.push(start..start + len);
        }
        start += len;
    }
    out
}

/// Queries scored together against one base tile (their heaps stay hot).
const QUERY_TILE: usize = 64;
/// Bytes of base rows per tile: fits in L2 with room for the query tile.
const BASE_TILE_BYTES: usize = 128 * 1024;
/// Below this many query × row pairs per thread, splitting over threads is not worth it.
const MIN_PAIRS_PER_THREAD: usize = 1 << 18;

fn cpu_search(
    base: &[f32],
    dim: usize,
    distance: Distance,
    queries: &[f32],
    k: usize,
    threads: usize,
) -> Vec<Vec<(u32, f32)>> {
    let n = queries.len() / dim;
    let rows = base.len() / dim;
    let by_work = (n * rows / MIN_PAIRS_PER_THREAD).max(1);
    let threads = threads.min(n).min(by_work).max(1);
    if threads == 1 {
        return cpu_search_range(base, dim, distance, queries, k);
    }
    let ranges = split_ranges(n, threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|r| {
                let q = &queries[r.start * dim..r.end * dim];
                s.spawn(move || cpu_search_range(base, dim, distance, q, k))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The blocked scan for one thread's queries.
fn cpu_search_range(
    base: &[f32],
    dim: usize,
    distance: Distance,
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(u32, f32)>> {
    let rows = base.len() / dim;
    let tile_rows = (BASE_TILE_BYTES / (4 * dim)).max(4) / 4 * 4;
    let euclid = distance == Distance::Euclidean;
    let score_fn = tile_kernel();
    let mut out = Vec::with_capacity(queries.len() / dim);
    let mut scores = vec![0.0f32; tile_rows];
    for qtile in queries.chunks(QUERY_TILE * dim) {
        let mut tops: Vec<TopK> = (0..qtile.len() / dim).map(|_| TopK::new(k)).collect();
        for start in (0..rows).step_by(tile_rows) {
            let end = (start + tile_rows).min(rows);
            let tile = &base[start * dim..end * dim];
            let scores = &mut scores[..end - start];
            for (q, top) in qtile.chunks_exact(dim).zip(tops.iter_mut()) {
                score_fn(q, tile, dim, euclid, scores);
                let mut threshold = top.threshold();
                for (i, &raw) in scores.iter().enumerate() {
                    let s = match distance {
                        Distance::Cosine => raw.clamp(-1.0, 1.0),
                        Distance::Euclidean => -raw.sqrt(),
                        Distance::Dot => raw,
                    };
                    // Rows come in increasing order, so an equal score never wins its tie.
                    if s > threshold || threshold == f32::NEG_INFINITY {
                        top.push((start + i) as u32, s);
                        threshold = top.threshold();
                    }
                }
            }
        }
        out.extend(tops.into_iter().map(TopK::into_sorted));
    }
    out
}

/// `out[r]` = dot product (or squared euclidean distance) of `q` with row `r` of `tile`.
type TileKernel = fn(&[f32], &[f32], usize, bool, &mut [f32]);

fn tile_kernel() -> TileKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return |q, tile, dim, euclid, out| {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                unsafe { simd::score_tile_avx2(q, tile, dim, euclid, out) }
            };
        }
    }
    |q, tile, dim, euclid, out| score_tile::<false>(q, tile, dim, euclid, out)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn score_tile_avx2(
        q: &[f32],
        tile: &[f32],
        dim: usize,
        euclid: bool,
        out: &mut [f32],
    ) {
        super::score_tile::<true>(q, tile, dim, euclid, out)
    }
}

#[inline(always)]
fn score_tile<const FMA: bool>(q: &[f32], tile: &[f32], dim: usize, euclid: bool, out: &mut [f32]) {
    let mut rows = tile.chunks_exact(dim);
    let mut outs = out.chunks_exact_mut(4);
    for o in &mut outs {
        let (Some(a), Some(b), Some(c), Some(d)) =
            (rows.next(), rows.next(), rows.next(), rows.next())
        else {
            break;
        };
        let r = if euclid {
            block4::<true, FMA>(q, [a, b, c, d])
        } else {
            block4::<false, FMA>(q, [a, b, c, d])
        };
        o.copy_from_slice(&r);
    }
    for (o, row) in outs.into_remainder().iter_mut().zip(rows) {
        *o = if euclid {
            crate::metric::l2_squared(q, row)
        } else {
            crate::metric::dot(q, row)
        };
    }
}

const W: usize = 16;

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, x: f32, y: f32) -> f32 {
    if FMA {
        x.mul_add(y, acc)
    } else {
        acc + x * y
    }
}

/// One query against four rows: the query chunk is loaded once for four accumulators.
#[inline(always)]
fn block4<const L2: bool, const FMA: bool>(q: &[f32], r: [&[f32]; 4]) -> [f32; 4] {
    #[inline(always)]
    fn step<const L2: bool, const FMA: bool>(acc: &mut [f32; W], x: &[f32; W], y: &[f32; W]) {
        for i in 0..W {
            acc[i] = if L2 {
                let t = x[i] - y[i];
                madd::<FMA>(acc[i], t, t)
            } else {
                madd::<FMA>(acc[i], x[i], y[i])
            };
        }
    }
    let (qc, qt) = q.as_chunks::<W>();
    let (c0, t0) = r[0].as_chunks::<W>();
    let (c1, t1) = r[1].as_chunks::<W>();
    let (c2, t2) = r[2].as_chunks::<W>();
    let (c3, t3) = r[3].as_chunks::<W>();
    let n = qc
        .len()
        .min(c0.len())
        .min(c1.len())
        .min(c2.len())
        .min(c3.len());
    let (qc, c0, c1, c2, c3) = (&qc[..n], &c0[..n], &c1[..n], &c2[..n], &c3[..n]);
    let mut acc = [[0.0f32; W]; 4];
    let [a0, a1, a2, a3] = &mut acc;
    for i in 0..n {
        let x = &qc[i];
        step::<L2, FMA>(a0, x, &c0[i]);
        step::<L2, FMA>(a1, x, &c1[i]);
        step::<L2, FMA>(a2, x, &c2[i]);
        step::<L2, FMA>(a3, x, &c3[i]);
    }
    let tails = [t0, t1, t2, t3];
    let mut out = [0.0f32; 4];
    for j in 0..4 {
        let mut s = 0.0f32;
        for (x, y) in qt.iter().zip(tails[j]) {
            s += if L2 { (x - y) * (x - y) } else { x * y };
        }
        // Pairwise reduction, fixed order.
        let a = &acc[j];
        let mut half = [0.0f32; W / 2];
        for i in 0..W / 2 {
            half[i] = a[i] + a[i + W / 2];
        }
        let mut quarter = [0.0f32; W / 4];
        for i in 0..W / 4 {
            quarter[i] = half[i] + half[i + W / 4];
        }
        out[j] = (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]) + s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ranges_covers_everything_once() {
        for n in 0..40 {
            for parts in 1..9 {
                let r = split_ranges(n, parts);
                let total: usize = r.iter().map(|r| r.len()).sum();
                assert_eq!(total, n);
                assert!(r.len() <= parts);
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
                assert!(r.iter().all(|r| !r.is_empty()));
            }
        }
    }

    #[test]
    fn block4_matches_the_metric_kernels_for_odd_dimensions() {
        for dim in [1, 3, 15, 16, 17, 33, 384] {
            let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|j| {
                    (0..dim)
                        .map(|i| ((i * 7 + j) as f32 * 0.11).cos())
                        .collect()
                })
                .collect();
            let r = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let d = block4::<false, false>(&q, r);
            let l = block4::<true, false>(&q, r);
            for j in 0..4 {
                assert!(
                    (d[j] - crate::metric::dot(&q, r[j])).abs() < 1e-3,
                    "dim {dim}"
                );
                assert!(
                    (l[j] - crate::metric::l2_squared(&q, r[j])).abs() < 1e-3,
                    "dim {dim}"
                );
            }
        }
    }
}
