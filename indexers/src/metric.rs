//! Vector arithmetic for exact scoring: dot products, squared distances and norms written
//! as fixed-width lane loops (16 independent accumulators) that the compiler turns into
//! SIMD code on any target, plus the mapping from a [`Distance`] to a score.
//!
//! Scores are always "higher is closer":
//! - [`Distance::Cosine`]: the cosine similarity, in `[-1, 1]`;
//! - [`Distance::Euclidean`]: minus the euclidean distance;
//! - [`Distance::Dot`]: the dot product.
//!
//! [`RawKernel`]s (AVX2+FMA picked at run time, portable fallback) serve the
//! in-memory HNSW engine, which calls one kernel per distance over aligned rows.
//!
//! This module owns no storage and no index; the engines and the shard call it.

use hektor_topics::record::Distance;

const LANES: usize = 16;

/// Dot product of two equally long slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dispatch!(dot_impl(a, b))
}

/// Squared euclidean distance of two equally long slices.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    dispatch!(l2_impl(a, b))
}

/// Dot product of `a` with a vector stored as little-endian `f32` bytes (unaligned, as
/// LMDB hands them out), without copying it first.
#[inline]
pub fn dot_bytes(a: &[f32], b: &[u8]) -> f32 {
    dispatch!(dot_bytes_impl(a, b))
}

/// Squared euclidean distance of `a` to a vector stored as little-endian `f32` bytes.
#[inline]
pub fn l2_squared_bytes(a: &[f32], b: &[u8]) -> f32 {
    dispatch!(l2_bytes_impl(a, b))
}

/// Call the AVX2 build of a kernel when the CPU has it, else the baseline (SSE2 on
/// x86_64) build. Both are the same portable source, vectorised by the compiler.
macro_rules! dispatch {
    ($f:ident($a:expr, $b:expr)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { avx2::$f($a, $b) };
            }
        }
        kernels::$f($a, $b)
    }};
}
use dispatch;

/// The portable kernels, `#[inline(always)]` so each `target_feature` wrapper below gets
/// its own vectorisation.
mod kernels {
    use super::LANES;

    #[inline(always)]
    fn load(b: &[u8], i: usize) -> f32 {
        f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    }

    /// One chunk of `LANES` little-endian floats, decoded as a block (one vector load).
    #[inline(always)]
    fn decode_chunk(y: &[u8]) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        for (o, c) in out.iter_mut().zip(y.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        out
    }

    #[inline(always)]
    pub fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        super::reduce(&acc) + tail
    }

    #[inline(always)]
    pub fn l2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += (x - y) * (x - y);
        }
        super::reduce(&acc) + tail
    }

    #[inline(always)]
    pub fn dot_bytes_impl(a: &[f32], b: &[u8]) -> f32 {
        let n = a.len().min(b.len() / 4);
        let (a, b) = (&a[..n], &b[..4 * n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(4 * LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            let y = decode_chunk(y);
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0;
        let rb = cb.remainder();
        for (i, x) in ca.remainder().iter().enumerate() {
            tail += x * load(rb, i);
        }
        super::reduce(&acc) + tail
    }

    #[inline(always)]
    pub fn l2_bytes_impl(a: &[f32], b: &[u8]) -> f32 {
        let n = a.len().min(b.len() / 4);
        let (a, b) = (&a[..n], &b[..4 * n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(4 * LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            let y = decode_chunk(y);
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0;
        let rb = cb.remainder();
        for (i, x) in ca.remainder().iter().enumerate() {
            let d = x - load(rb, i);
            tail += d * d;
        }
        super::reduce(&acc) + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Hand-written AVX2 kernels: 4 × 8 lanes per step, unaligned loads (LMDB hands out
    //! values at 2-byte alignment), so they read stored bytes in place.
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY (whole module): callers guarantee AVX2 and that the pointers are valid
        // for `n` f32 reads (`loadu` needs no alignment).
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps::<1>(v);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot_ptr(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, slot) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(a.add(i + 8 * j));
                    let y = _mm256_loadu_ps(b.add(i + 8 * j));
                    *slot = _mm256_add_ps(*slot, _mm256_mul_ps(x, y));
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_loadu_ps(a.add(i));
                let y = _mm256_loadu_ps(b.add(i));
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(x, y));
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum(sum);
            while i < n {
                total += a.add(i).read_unaligned() * b.add(i).read_unaligned();
                i += 1;
            }
            total
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn l2_ptr(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, slot) in acc.iter_mut().enumerate() {
                    let d = _mm256_sub_ps(
                        _mm256_loadu_ps(a.add(i + 8 * j)),
                        _mm256_loadu_ps(b.add(i + 8 * j)),
                    );
                    *slot = _mm256_add_ps(*slot, _mm256_mul_ps(d, d));
                }
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)));
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(d, d));
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum(sum);
            while i < n {
                let d = a.add(i).read_unaligned() - b.add(i).read_unaligned();
                total += d * d;
                i += 1;
            }
            total
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: both slices hold at least `n` f32.
        unsafe { dot_ptr(a.as_ptr(), b.as_ptr(), n) }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn l2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: both slices hold at least `n` f32.
        unsafe { l2_ptr(a.as_ptr(), b.as_ptr(), n) }
    }

    /// # Safety
    /// The CPU must support AVX2; x86_64 is little-endian, so the bytes are the floats.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_bytes_impl(a: &[f32], b: &[u8]) -> f32 {
        let n = a.len().min(b.len() / 4);
        // SAFETY: `b` holds at least `4 n` bytes; unaligned reads.
        unsafe { dot_ptr(a.as_ptr(), b.as_ptr().cast::<f32>(), n) }
    }

    /// # Safety
    /// The CPU must support AVX2; x86_64 is little-endian, so the bytes are the floats.
    #[target_feature(enable = "avx2")]
    pub unsafe fn l2_bytes_impl(a: &[f32], b: &[u8]) -> f32 {
        let n = a.len().min(b.len() / 4);
        // SAFETY: `b` holds at least `4 n` bytes; unaligned reads.
        unsafe { l2_ptr(a.as_ptr(), b.as_ptr().cast::<f32>(), n) }
    }
}

/// A distance kernel over raw pointers: `f(a, b, n)` reads `n` `f32` from each of `a`
/// and `b` (any alignment) and returns their dot product or squared euclidean distance.
/// Picked once per index by [`raw_dot_kernel`] / [`raw_l2_kernel`] for the CPU it runs on.
///
/// # Safety
/// Both pointers must be valid for `n` `f32` reads.
pub type RawKernel = unsafe fn(*const f32, *const f32, usize) -> f32;

/// The fastest dot-product kernel this CPU runs: AVX2+FMA, else the portable lane loop
/// (detected at run time). AVX-512 intrinsics need Rust 1.89, above the workspace MSRV.
pub fn raw_dot_kernel() -> RawKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return wide::dot_fma;
        }
    }
    portable_raw_dot
}

/// The fastest squared-euclidean kernel this CPU runs (see [`raw_dot_kernel`]).
pub fn raw_l2_kernel() -> RawKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return wide::l2_fma;
        }
    }
    portable_raw_l2
}

/// # Safety
/// See [`RawKernel`].
unsafe fn portable_raw_dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    // SAFETY: the caller guarantees `n` readable f32 behind each pointer; `f32` slices
    // need 4-byte alignment, which every caller's `f32` buffers have.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    kernels::dot_impl(a, b)
}

/// # Safety
/// See [`RawKernel`].
unsafe fn portable_raw_l2(a: *const f32, b: *const f32, n: usize) -> f32 {
    // SAFETY: as in `portable_raw_dot`.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    kernels::l2_impl(a, b)
}

#[cfg(target_arch = "x86_64")]
mod wide {
    //! Fused multiply-add kernels for the in-memory index: AVX2+FMA (4 × 8 lanes per
    //! step), scalar tails. Callers check the CPU features.
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        // SAFETY: callers are AVX2 functions.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; both pointers valid for `n` f32 reads.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_fma(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, slot) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(a.add(i + 8 * j));
                    let y = _mm256_loadu_ps(b.add(i + 8 * j));
                    *slot = _mm256_fmadd_ps(x, y, *slot);
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_loadu_ps(a.add(i));
                let y = _mm256_loadu_ps(b.add(i));
                acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum256(sum);
            while i < n {
                total += a.add(i).read_unaligned() * b.add(i).read_unaligned();
                i += 1;
            }
            total
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; both pointers valid for `n` f32 reads.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_fma(a: *const f32, b: *const f32, n: usize) -> f32 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, slot) in acc.iter_mut().enumerate() {
                    let d = _mm256_sub_ps(
                        _mm256_loadu_ps(a.add(i + 8 * j)),
                        _mm256_loadu_ps(b.add(i + 8 * j)),
                    );
                    *slot = _mm256_fmadd_ps(d, d, *slot);
                }
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)));
                acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum256(sum);
            while i < n {
                let d = a.add(i).read_unaligned() - b.add(i).read_unaligned();
                total += d * d;
                i += 1;
            }
            total
        }
    }
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

#[inline]
fn reduce(acc: &[f32; LANES]) -> f32 {
    // Pairwise, so the order is fixed and the compiler can keep it in registers.
    let mut half = [0.0f32; LANES / 2];
    for i in 0..LANES / 2 {
        half[i] = acc[i] + acc[i + LANES / 2];
    }
    let mut quarter = [0.0f32; LANES / 4];
    for i in 0..LANES / 4 {
        quarter[i] = half[i] + half[i + LANES / 4];
    }
    (quarter[0] + quarter[2]) + (quarter[1] + quarter[3])
}

/// Decode little-endian `f32`s from `bytes` into `out` (which must be `bytes.len() / 4`
/// long). A plain copy on little-endian machines; works on unaligned input.
#[inline]
pub fn decode_f32s(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Append `v` as little-endian `f32`s to `out`.
#[inline]
pub fn encode_f32s(v: &[f32], out: &mut Vec<u8>) {
    out.reserve(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// A query prepared once for many comparisons: for cosine it is normalised, so a score is
/// one dot product divided by the stored norm of the other vector.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    pub distance: Distance,
    /// The query as given.
    pub raw: Vec<f32>,
    /// The query scaled to unit length (cosine only; equal to `raw` otherwise).
    pub unit: Vec<f32>,
    /// This search's own knobs.
    pub options: SearchOptions,
}

/// Knobs one search may set; the default keeps the engine's configured effort and returns
/// exact scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    /// This search's effort (the graph engines' beam width, the cold engine's rescored
    /// candidates), overriding the engine's configured one; `None` keeps that.
    pub effort: Option<usize>,
    /// Whether an engine that ranks by compressed codes rescores its answers with the
    /// store's full vectors. `false` lets the warm tier answer from its int8 codes alone
    /// (same hits, approximate scores, no store vector page read); the cold tier always
    /// rescores (its binary codes cannot rank), and the other engines are exact anyway.
    pub rescore: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            effort: None,
            rescore: true,
        }
    }
}

impl PreparedQuery {
    pub fn new(distance: Distance, query: &[f32]) -> PreparedQuery {
        let unit = match distance {
            Distance::Cosine => {
                let n = norm(query);
                if n > 0.0 {
                    query.iter().map(|x| x / n).collect()
                } else {
                    query.to_vec()
                }
            }
            _ => query.to_vec(),
        };
        PreparedQuery {
            distance,
            raw: query.to_vec(),
            unit,
            options: SearchOptions::default(),
        }
    }

    /// This search's effort: its own when it set one, else the engine's `configured`.
    #[inline]
    pub fn effort_or(&self, configured: usize) -> usize {
        self.options.effort.unwrap_or(configured)
    }

    /// The same query searched with `options` (an effort of at least 1).
    pub fn with_options(mut self, options: SearchOptions) -> PreparedQuery {
        self.options = SearchOptions {
            effort: options.effort.map(|e| e.max(1)),
            ..options
        };
        self
    }

    /// The score of a stored vector given as little-endian bytes, with its norm.
    #[inline]
    pub fn score_bytes(&self, v: &[u8], v_norm: f32) -> f32 {
        match self.distance {
            Distance::Cosine => {
                if v_norm > 0.0 {
                    (dot_bytes(&self.unit, v) / v_norm).clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }
            Distance::Euclidean => -l2_squared_bytes(&self.raw, v).sqrt(),
            Distance::Dot => dot_bytes(&self.raw, v),
        }
    }

    /// The score of a stored vector `v` whose euclidean norm is `v_norm`.
    #[inline]
    pub fn score(&self, v: &[f32], v_norm: f32) -> f32 {
        match self.distance {
            Distance::Cosine => {
                if v_norm > 0.0 {
                    (dot(&self.unit, v) / v_norm).clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }
            Distance::Euclidean => -l2_squared(&self.raw, v).sqrt(),
            Distance::Dot => dot(&self.raw, v),
        }
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d = norm(a) * norm(b);
    if d > 0.0 {
        (dot(a, b) / d).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn kernels_match_naive_sums_for_odd_lengths() {
        for n in [0usize, 1, 7, 16, 17, 33, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0).collect();
            assert!(
                (dot(&a, &b) as f64 - naive_dot(&a, &b)).abs() < 1e-3,
                "n={n}"
            );
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| ((*x - *y) as f64).powi(2))
                .sum();
            assert!((l2_squared(&a, &b) as f64 - l2).abs() < 1e-3, "n={n}");
            let mut bytes = Vec::new();
            encode_f32s(&b, &mut bytes);
            assert!((dot_bytes(&a, &bytes) - dot(&a, &b)).abs() < 1e-4, "n={n}");
            assert!(
                (l2_squared_bytes(&a, &bytes) - l2_squared(&a, &b)).abs() < 1e-4,
                "n={n}"
            );
            assert!(
                (kernels::dot_impl(&a, &b) - dot(&a, &b)).abs() < 1e-4,
                "n={n}"
            );
        }
    }

    #[test]
    fn raw_kernels_match_the_slice_kernels() {
        let kernels: [(RawKernel, RawKernel); 2] = [
            (raw_dot_kernel(), raw_l2_kernel()),
            (portable_raw_dot, portable_raw_l2),
        ];
        for n in [0usize, 1, 15, 16, 63, 64, 65, 384, 391] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) / 2.0).collect();
            for (dot_k, l2_k) in kernels {
                // SAFETY: both vectors hold `n` floats.
                let (d, l) = unsafe {
                    (
                        dot_k(a.as_ptr(), b.as_ptr(), n),
                        l2_k(a.as_ptr(), b.as_ptr(), n),
                    )
                };
                assert!((d as f64 - naive_dot(&a, &b)).abs() < 1e-3, "n={n}");
                assert!((l - l2_squared(&a, &b)).abs() < 1e-3, "n={n}");
            }
        }
    }

    #[test]
    fn scores_are_higher_when_closer() {
        let q = [1.0, 0.0, 0.0];
        let near = [0.9, 0.1, 0.0];
        let far = [0.0, 1.0, 0.0];
        for d in [Distance::Cosine, Distance::Euclidean, Distance::Dot] {
            let p = PreparedQuery::new(d, &q);
            assert!(
                p.score(&near, norm(&near)) > p.score(&far, norm(&far)),
                "{d:?}"
            );
        }
        let p = PreparedQuery::new(Distance::Euclidean, &q);
        assert!((p.score(&far, 1.0) + 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn f32_codec_round_trips() {
        let v = [1.5f32, -0.25, f32::MIN_POSITIVE, 3.0e7];
        let mut bytes = vec![0u8]; // unaligned on purpose
        encode_f32s(&v, &mut bytes);
        let mut out = [0.0f32; 4];
        decode_f32s(&bytes[1..], &mut out);
        assert_eq!(out, v);
    }
}
