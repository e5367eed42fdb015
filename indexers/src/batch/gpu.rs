//! The GPU backend of [`super::BatchSearcher`] (feature `gpu`): cudarc over the CUDA
//! driver API, cuBLAS and NVRTC, all loaded at run time, so a build with the feature runs
//! (and reports "no GPU") on machines without CUDA.
//!
//! Per batch: the queries are uploaded, `sgemm` computes `base_chunk · queriesᵀ` (the
//! base is cut in chunks so that the score matrix stays under [`SCORE_BUDGET`] floats),
//! and the top k of every query is selected either on the device by a small NVRTC kernel
//! (one block per query; each thread keeps a sorted top k of a strided slice of the
//! rows, thread 0 merges them; only k scores per query come back) or on the host (the
//! chunk's score matrix comes back through pinned memory and threads select it).
//! Euclidean scores come from `|q|² + |b|² − 2 q·b`, which loses precision near distance
//! 0 (duplicates); so for euclidean the searcher keeps a host copy of the base, selects
//! [`EUCLID_EXTRA`] more candidates than asked, rescores them exactly on the host and
//! keeps the best k.
//!
//! This module does not route batches (see [`super::route`]) and holds no ids.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use hektor_topics::record::Distance;
use parking_lot::Mutex;

use crate::engine::TopK;
use crate::error::{Error, Result};

/// Largest score matrix of one `sgemm` call, in floats (256 MiB).
pub const SCORE_BUDGET: usize = 64 << 20;
/// Most queries of one `sgemm` call.
const QUERY_CHUNK: usize = 4096;
/// Largest k the device top-k kernel handles; larger k select on the host.
pub const DEVICE_TOPK_MAX: usize = 32;
/// Extra candidates selected for euclidean before exact rescoring.
pub const EUCLID_EXTRA: usize = 8;
/// Threads per block of the top-k kernel.
const TOPK_THREADS: u32 = 128;

/// Where the top k of each query is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopKOn {
    /// An NVRTC kernel; k (≤ [`DEVICE_TOPK_MAX`]) scores per query and chunk come back.
    Device,
    /// The host, from the whole score matrix copied back.
    Host,
}

const KERNEL_SRC: &str = r#"
#define KMAX 32
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) {
    return a > b || (a == b && ia >= 0 && (ib < 0 || ia < ib));
}
__device__ __forceinline__ void insert(float* s, int* ix, int k, float v, int r) {
    int j = k - 1;
    while (j > 0 && better(v, r, s[j - 1], ix[j - 1])) {
        s[j] = s[j - 1];
        ix[j] = ix[j - 1];
        j--;
    }
    s[j] = v;
    ix[j] = r;
}
// scores: column-major n x nq (ld = n); mode 0 dot, 1 cosine, 2 euclidean.
extern "C" __global__ void hektor_topk(const float* scores, int n, int k, int mode,
        const float* base_sq, const float* query_sq, int row0,
        float* out_s, int* out_i) {
    const int q = blockIdx.x;
    const float* s = scores + (size_t)q * (size_t)n;
    const float NEG_INF = __int_as_float(0xff800000);
    float best[KMAX];
    int idx[KMAX];
    for (int i = 0; i < k; i++) { best[i] = NEG_INF; idx[i] = -1; }
    const float qs = mode == 2 ? query_sq[q] : 0.0f;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        float v = s[r];
        if (mode == 1) {
            v = fminf(fmaxf(v, -1.0f), 1.0f);
        } else if (mode == 2) {
            v = -sqrtf(fmaxf(qs + base_sq[row0 + r] - 2.0f * v, 0.0f));
        }
        const int row = row0 + r;
        if (better(v, row, best[k - 1], idx[k - 1])) insert(best, idx, k, v, row);
    }
    extern __shared__ float smem[];
    float* ss = smem;
    int* si = (int*)(smem + blockDim.x * k);
    for (int i = 0; i < k; i++) {
        ss[threadIdx.x * k + i] = best[i];
        si[threadIdx.x * k + i] = idx[i];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int c = k; c < (int)blockDim.x * k; c++) {
            const float v = ss[c];
            const int r = si[c];
            if (r >= 0 && better(v, r, best[k - 1], idx[k - 1])) insert(best, idx, k, v, r);
        }
        for (int i = 0; i < k; i++) {
            out_s[q * k + i] = best[i];
            out_i[q * k + i] = idx[i];
        }
    }
}
"#;

fn gpu_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Gpu(format!("{what}: {e:?}"))
}

/// Run `f`, turning a panic of the CUDA bindings (a missing symbol in an old driver)
/// into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Error::Gpu(format!(
                "{what}: the CUDA bindings failed ({msg}); this build needs a driver for CUDA 13.0 or newer"
            )))
        }
    }
}

/// Check that the CUDA driver library loads and sees a device; returns the device count.
pub fn probe() -> Result<usize> {
    guarded("probing for a GPU", || {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Gpu(
                "no CUDA driver library (libcuda.so) could be loaded: this machine has no NVIDIA driver, or it is not on the library path".into(),
            ));
        }
        let n = CudaContext::device_count()
            .map_err(|e| gpu_err("the CUDA driver found no usable device", e))?;
        if n <= 0 {
            return Err(Error::Gpu("the CUDA driver reports no GPU".into()));
        }
        Ok(n as usize)
    })
}

pub(crate) struct GpuSearcher {
    topk: TopKOn,
    threads: usize,
    score_budget: usize,
    state: Mutex<State>,
}

struct State {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernel: Option<CudaFunction>,
    rows: usize,
    dim: usize,
    distance: Distance,
    /// The base, normalised for cosine.
    base: CudaSlice<f32>,
    /// Squared row norms (euclidean), on the device and the host; one dummy otherwise.
    base_sq: CudaSlice<f32>,
    base_sq_host: Vec<f32>,
    /// The base on the host (euclidean only, for exact rescoring; empty otherwise).
    base_host: Vec<f32>,
    /// Host-side landing buffer for score matrices (host top-k), grown on demand.
    pinned: Option<PinnedHostSlice<f32>>,
}

impl GpuSearcher {
    pub(crate) fn new(
        base: &[f32],
        rows: usize,
        dim: usize,
        distance: Distance,
        topk: TopKOn,
    ) -> Result<Self> {
        probe()?;
        let state = guarded("setting up the GPU", || {
            // SAFETY: only try to dlopen the libraries.
            if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Err(Error::Gpu(
                    "the CUDA driver loads but cuBLAS (libcublas.so) does not: install the CUDA toolkit's cuBLAS or put it on LD_LIBRARY_PATH".into(),
                ));
            }
            if topk == TopKOn::Device && !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Err(Error::Gpu(
                    "NVRTC (libnvrtc.so) does not load, so the device top-k kernel cannot be compiled: install it or put it on LD_LIBRARY_PATH".into(),
                ));
            }
            let ctx = CudaContext::new(0).map_err(|e| gpu_err("opening GPU 0", e))?;
            let stream = ctx.default_stream();
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| gpu_err("creating a cuBLAS handle", e))?;
            let kernel = match topk {
                TopKOn::Device => {
                    let ptx = cudarc::nvrtc::compile_ptx(KERNEL_SRC)
                        .map_err(|e| gpu_err("compiling the top-k kernel with NVRTC", e))?;
                    let module = ctx
                        .load_module(ptx)
                        .map_err(|e| gpu_err("loading the top-k kernel", e))?;
                    Some(
                        module
                            .load_function("hektor_topk")
                            .map_err(|e| gpu_err("finding the top-k kernel", e))?,
                    )
                }
                TopKOn::Host => None,
            };
            let uploaded = upload(&stream, base, dim, distance)?;
            Ok(State {
                ctx,
                stream,
                blas,
                kernel,
                rows,
                dim,
                distance,
                base: uploaded.base,
                base_sq: uploaded.base_sq,
                base_sq_host: uploaded.base_sq_host,
                base_host: uploaded.base_host,
                pinned: None,
            })
        })?;
        Ok(GpuSearcher {
            topk,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            score_budget: SCORE_BUDGET,
            state: Mutex::new(state),
        })
    }

    pub(crate) fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    pub(crate) fn set_score_budget(&mut self, floats: usize) {
        self.score_budget = floats.max(1);
    }

    /// Put `base` (`rows × dim`, validated by the caller) in place of the searcher's
    /// base, keeping its context, cuBLAS handle and compiled kernel: what a worker that
    /// searches a new base per job (a build's rounds) reuses instead of starting again.
    pub(crate) fn replace_base(
        &self,
        base: &[f32],
        rows: usize,
        dim: usize,
        distance: Distance,
    ) -> Result<()> {
        let mut state = self.state.lock();
        let uploaded = guarded("uploading a new base to the GPU", || {
            upload(&state.stream, base, dim, distance)
        })?;
        state.rows = rows;
        state.dim = dim;
        state.distance = distance;
        state.base = uploaded.base;
        state.base_sq = uploaded.base_sq;
        state.base_sq_host = uploaded.base_sq_host;
        state.base_host = uploaded.base_host;
        Ok(())
    }

    pub(crate) fn backend(&self) -> &'static str {
        match self.topk {
            TopKOn::Device => "gpu",
            TopKOn::Host => "gpu-host-topk",
        }
    }

    /// `queries` are validated by the caller (whole rows, finite), `1 <= k <= rows`.
    /// Euclidean winners are rescored exactly on the host.
    pub(crate) fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let mut state = self.state.lock();
        let fetch = if state.distance == Distance::Euclidean {
            (k + EUCLID_EXTRA).min(state.rows)
        } else {
            k
        };
        let device_topk = self.topk == TopKOn::Device && fetch <= DEVICE_TOPK_MAX;
        let found = guarded("searching on the GPU", || {
            state.search(queries, fetch, device_topk, self.threads, self.score_budget)
        })?;
        if state.distance != Distance::Euclidean {
            return Ok(found);
        }
        let dim = state.dim;
        Ok(found
            .into_iter()
            .zip(queries.chunks_exact(dim))
            .map(|(cands, q)| {
                let mut top = TopK::new(k);
                for (row, _) in cands {
                    let b = &state.base_host[row as usize * dim..(row as usize + 1) * dim];
                    top.push(row, -crate::metric::l2_squared(q, b).sqrt());
                }
                top.into_sorted()
            })
            .collect())
    }
}

/// A base as the device holds it: normalised for cosine, with squared norms for
/// euclidean (and, then, a host copy for exact rescoring).
struct Uploaded {
    base: CudaSlice<f32>,
    base_sq: CudaSlice<f32>,
    base_sq_host: Vec<f32>,
    base_host: Vec<f32>,
}

/// Upload `base` (`rows × dim`, validated by the caller) on `stream` and wait for it.
fn upload(
    stream: &Arc<CudaStream>,
    base: &[f32],
    dim: usize,
    distance: Distance,
) -> Result<Uploaded> {
    let prepared;
    let rows = if distance == Distance::Cosine {
        prepared = super::normalised(base, dim);
        &prepared[..]
    } else {
        base
    };
    let base_sq_host: Vec<f32> = if distance == Distance::Euclidean {
        rows.chunks_exact(dim)
            .map(|r| crate::metric::dot(r, r))
            .collect()
    } else {
        vec![0.0]
    };
    let d_base = stream
        .clone_htod(rows)
        .map_err(|e| gpu_err("uploading the base", e))?;
    let base_sq = stream
        .clone_htod(&base_sq_host)
        .map_err(|e| gpu_err("uploading the base norms", e))?;
    stream
        .synchronize()
        .map_err(|e| gpu_err("uploading the base", e))?;
    Ok(Uploaded {
        base: d_base,
        base_sq,
        base_sq_host,
        base_host: if distance == Distance::Euclidean {
            base.to_vec()
        } else {
            Vec::new()
        },
    })
}

impl State {
    fn search(
        &mut self,
        queries: &[f32],
        k: usize,
        device_topk: bool,
        threads: usize,
        budget: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let dim = self.dim;
        let n = queries.len() / dim;
        let prepared;
        let queries = if self.distance == Distance::Cosine {
            prepared = super::normalised(queries, dim);
            &prepared[..]
        } else {
            queries
        };
        let query_sq: Vec<f32> = if self.distance == Distance::Euclidean {
            queries
                .chunks_exact(dim)
                .map(|q| crate::metric::dot(q, q))
                .collect()
        } else {
            vec![0.0; n]
        };
        let mut tops: Vec<TopK> = (0..n).map(|_| TopK::new(k)).collect();
        let q_chunk = n.min(QUERY_CHUNK).min(budget);
        let b_chunk = self.rows.min((budget / q_chunk).max(1));
        let mut d_scores = self
            .stream
            .alloc_zeros::<f32>(q_chunk * b_chunk)
            .map_err(|e| gpu_err("allocating the score matrix", e))?;
        if !device_topk {
            self.ensure_pinned(q_chunk * b_chunk)?;
        }
        for q0 in (0..n).step_by(q_chunk) {
            let qn = q_chunk.min(n - q0);
            let d_q = self
                .stream
                .clone_htod(&queries[q0 * dim..(q0 + qn) * dim])
                .map_err(|e| gpu_err("uploading queries", e))?;
            let d_qsq = self
                .stream
                .clone_htod(&query_sq[q0..q0 + qn])
                .map_err(|e| gpu_err("uploading query norms", e))?;
            for row0 in (0..self.rows).step_by(b_chunk) {
                let bn = b_chunk.min(self.rows - row0);
                self.gemm(&d_q, qn, row0, bn, &mut d_scores)?;
                let tops = &mut tops[q0..q0 + qn];
                if device_topk {
                    self.select_on_device(&d_scores, &d_qsq, qn, row0, bn, k, tops)?;
                } else {
                    self.select_on_host(
                        &d_scores,
                        &query_sq[q0..q0 + qn],
                        row0,
                        bn,
                        threads,
                        tops,
                    )?;
                }
            }
        }
        Ok(tops.into_iter().map(TopK::into_sorted).collect())
    }

    fn ensure_pinned(&mut self, len: usize) -> Result<()> {
        if self.pinned.as_ref().is_some_and(|p| p.len() >= len) {
            return Ok(());
        }
        self.pinned = None;
        // SAFETY: the buffer is only read after a device-to-host copy into it completed.
        // Flags 0, not write-combined: the host reads it.
        let p = unsafe { self.ctx.alloc_pinned_with_flags::<f32>(len, 0) }
            .map_err(|e| gpu_err("allocating pinned host memory for scores", e))?;
        self.pinned = Some(p);
        Ok(())
    }

    /// `scores[0 .. qn*bn]` (column-major, bn × qn) = base rows `row0..row0+bn` · queriesᵀ.
    fn gemm(
        &self,
        d_q: &CudaSlice<f32>,
        qn: usize,
        row0: usize,
        bn: usize,
        d_scores: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let dim = self.dim;
        let to_i32 = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::Gpu(format!("{what} {v} is too large for cuBLAS")))
        };
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: to_i32(bn, "base chunk")?,
            n: to_i32(qn, "query chunk")?,
            k: to_i32(dim, "dimension")?,
            alpha: 1.0f32,
            lda: to_i32(dim, "dimension")?,
            ldb: to_i32(dim, "dimension")?,
            beta: 0.0f32,
            ldc: to_i32(bn, "base chunk")?,
        };
        let a = self.base.slice(row0 * dim..(row0 + bn) * dim);
        let mut c = d_scores.slice_mut(0..qn * bn);
        // SAFETY: a is bn × dim (row-major = dim × bn column-major, lda = dim), d_q holds
        // qn × dim (ldb = dim), c holds qn × bn (ldc = bn): every access is in bounds.
        unsafe { self.blas.gemm(cfg, &a, d_q, &mut c) }.map_err(|e| gpu_err("cuBLAS sgemm", e))
    }

    #[allow(clippy::too_many_arguments)]
    fn select_on_device(
        &self,
        d_scores: &CudaSlice<f32>,
        d_qsq: &CudaSlice<f32>,
        qn: usize,
        row0: usize,
        bn: usize,
        k: usize,
        tops: &mut [TopK],
    ) -> Result<()> {
        let Some(kernel) = &self.kernel else {
            return Err(Error::Gpu("the top-k kernel is not loaded".into()));
        };
        let mut out_s = self
            .stream
            .alloc_zeros::<f32>(qn * k)
            .map_err(|e| gpu_err("allocating top-k output", e))?;
        let mut out_i = self
            .stream
            .alloc_zeros::<i32>(qn * k)
            .map_err(|e| gpu_err("allocating top-k output", e))?;
        let (n_i, k_i, row0_i) = (bn as i32, k as i32, row0 as i32);
        let mode: i32 = match self.distance {
            Distance::Dot => 0,
            Distance::Cosine => 1,
            Distance::Euclidean => 2,
        };
        let cfg = LaunchConfig {
            grid_dim: (qn as u32, 1, 1),
            block_dim: (TOPK_THREADS, 1, 1),
            shared_mem_bytes: TOPK_THREADS * k as u32 * 8,
        };
        let mut launch = self.stream.launch_builder(kernel);
        launch
            .arg(d_scores)
            .arg(&n_i)
            .arg(&k_i)
            .arg(&mode)
            .arg(&self.base_sq)
            .arg(d_qsq)
            .arg(&row0_i)
            .arg(&mut out_s)
            .arg(&mut out_i);
        // SAFETY: the argument list matches hektor_topk's signature; scores hold qn
        // columns of bn floats, base_sq covers row0 + bn rows (euclidean; unread
        // otherwise), the outputs hold qn × k, and shared memory fits 128 × k pairs.
        unsafe { launch.launch(cfg) }.map_err(|e| gpu_err("launching the top-k kernel", e))?;
        let s = self
            .stream
            .clone_dtoh(&out_s)
            .map_err(|e| gpu_err("copying top-k scores back", e))?;
        let ix = self
            .stream
            .clone_dtoh(&out_i)
            .map_err(|e| gpu_err("copying top-k rows back", e))?;
        self.stream
            .synchronize()
            .map_err(|e| gpu_err("copying top-k results back", e))?;
        for (q, top) in tops.iter_mut().enumerate() {
            for j in 0..k {
                let row = ix[q * k + j];
                if row >= 0 {
                    top.push(row as u32, s[q * k + j]);
                }
            }
        }
        Ok(())
    }

    fn select_on_host(
        &mut self,
        d_scores: &CudaSlice<f32>,
        query_sq: &[f32],
        row0: usize,
        bn: usize,
        threads: usize,
        tops: &mut [TopK],
    ) -> Result<()> {
        let qn = tops.len();
        let Some(pinned) = self.pinned.as_mut() else {
            return Err(Error::Gpu("no pinned score buffer".into()));
        };
        let src = d_scores.slice(0..qn * bn);
        self.stream
            .memcpy_dtoh(&src, pinned)
            .map_err(|e| gpu_err("copying scores back", e))?;
        self.stream
            .synchronize()
            .map_err(|e| gpu_err("copying scores back", e))?;
        let scores = pinned
            .as_slice()
            .map_err(|e| gpu_err("reading pinned memory", e))?;
        let scores = &scores[..qn * bn];
        let (distance, base_sq) = (self.distance, &self.base_sq_host);
        let select = |tops: &mut [TopK], scores: &[f32], qsq: &[f32]| {
            for ((top, s), &qs) in tops.iter_mut().zip(scores.chunks_exact(bn)).zip(qsq) {
                let mut threshold = top.threshold();
                for (i, &raw) in s.iter().enumerate() {
                    let v = match distance {
                        Distance::Dot => raw,
                        Distance::Cosine => raw.clamp(-1.0, 1.0),
                        Distance::Euclidean => {
                            -(qs + base_sq[row0 + i] - 2.0 * raw).max(0.0).sqrt()
                        }
                    };
                    if v > threshold || threshold == f32::NEG_INFINITY {
                        top.push((row0 + i) as u32, v);
                        threshold = top.threshold();
                    }
                }
            }
        };
        let parts = super::split_ranges(qn, threads.min(((qn * bn) >> 20).max(1)));
        if parts.len() <= 1 {
            select(tops, scores, query_sq);
            return Ok(());
        }
        std::thread::scope(|s| {
            let mut rest = tops;
            for r in &parts {
                let (mine, tail) = rest.split_at_mut(r.len());
                rest = tail;
                let sc = &scores[r.start * bn..r.end * bn];
                let qs = &query_sq[r.clone()];
                s.spawn(move || select(mine, sc, qs));
            }
        });
        Ok(())
    }
}
