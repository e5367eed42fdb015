//! Scalar quantization shared by the engines that walk compressed vectors (the hot
//! engine's walk over codes, the warm graph on disk): a row as int8 codes with one scale
//! per row (`x ≈ scale × code`, `scale = max |x| / 127`), a query as finer `i16` codes,
//! and the exact integer dot product between the two with the fastest kernel the CPU runs
//! (AVX-512 VNNI, else AVX2, else portable code).
//!
//! Owns only the arithmetic; where codes are stored and how distances are formed from
//! the dot product stays with each engine.

use std::sync::OnceLock;

/// Longest row a kernel takes without overflowing its `i32` lanes: each lane adds at
/// most `n / 16` products of `32,767 × 127`. (The sum of the lanes is an `i32` too: it
/// stays exact while `|a·b|` in code units is under 2^31, which real rows keep far from;
/// a row whose every component is at the maximum passes it after ~516 lanes.)
pub(crate) const MAX_DIMENSION: usize = 8_192;

/// The scale of a row's int8 codes: `max |x| / 127` (0 for a zero row).
pub(crate) fn i8_scale(values: impl Iterator<Item = f32>) -> f32 {
    let max = values.fold(0.0f32, |m, x| m.max(x.abs()));
    if max > 0.0 {
        max / 127.0
    } else {
        0.0
    }
}

/// The int8 code of `x` at `scale`.
#[inline]
pub(crate) fn to_i8(x: f32, scale: f32) -> i8 {
    if scale > 0.0 {
        (x / scale).round().clamp(-127.0, 127.0) as i8
    } else {
        0
    }
}

/// `v` as `i16` codes into `out` (cleared first); returns their scale, `max |x| / 32,767`.
pub(crate) fn quantize_i16(v: &[f32], out: &mut Vec<i16>) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 32_767.0 } else { 0.0 };
    out.clear();
    out.extend(v.iter().map(|&x| {
        if scale > 0.0 {
            (x / scale).round().clamp(-32_767.0, 32_767.0) as i16
        } else {
            0
        }
    }));
    scale
}

/// A kernel: `Σ a[i] × b[i]` over `n` lanes.
///
/// # Safety
/// The CPU has the kernel's features (only this module hands kernels out); both pointers
/// valid for `n` reads; `n ≤` [`MAX_DIMENSION`].
pub(crate) type Kernel = unsafe fn(*const i16, *const i8, usize) -> i32;

/// The fastest SIMD kernel this CPU runs, if it has one.
pub(crate) fn simd_kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
            return Some(avx512);
        }
        if has!("avx2") {
            return Some(avx2);
        }
    }
    None
}

/// The fastest kernel this CPU runs (portable code without SIMD).
pub(crate) fn kernel() -> Kernel {
    static BEST: OnceLock<Kernel> = OnceLock::new();
    *BEST.get_or_init(|| simd_kernel().unwrap_or(portable))
}

/// `Σ a[i] × b[i]` over the shorter of the two, `b` holding int8 codes as bytes.
#[inline]
pub(crate) fn dot(a: &[i16], b: &[u8]) -> i32 {
    let n = a.len().min(b.len()).min(MAX_DIMENSION);
    // SAFETY: `kernel` hands out only kernels this CPU runs; both slices hold `n`.
    unsafe { kernel()(a.as_ptr(), b.as_ptr().cast::<i8>(), n) }
}

/// Lanes of the portable kernel (the compiler vectorizes it where it can).
const LANES: usize = 16;

/// # Safety
/// Both pointers valid for `n` reads.
unsafe fn portable(a: *const i16, b: *const i8, n: usize) -> i32 {
    // SAFETY: forwarded from the caller.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    let mut acc = [0i32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// The lanes past the last whole 32-lane step.
///
/// # Safety
/// Both pointers valid for `n` reads.
#[inline(always)]
unsafe fn tail(a: *const i16, b: *const i8, from: usize, n: usize) -> i32 {
    let mut sum = 0i32;
    for i in from..n {
        // SAFETY: `i < n`.
        sum += unsafe { i32::from(*a.add(i)) * i32::from(*b.add(i)) };
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512(a: *const i16, b: *const i8, n: usize) -> i32 {
    use std::arch::x86_64::*;
    // SAFETY: the features are enabled for this function; reads stay within `n`.
    unsafe {
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i + 32 <= n {
            let codes = _mm512_cvtepi8_epi16(_mm256_loadu_si256(b.add(i).cast()));
            let probe = _mm512_loadu_si512(a.add(i).cast());
            acc = _mm512_dpwssd_epi32(acc, probe, codes);
            i += 32;
        }
        _mm512_reduce_add_epi32(acc) + tail(a, b, i, n)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(a: *const i16, b: *const i8, n: usize) -> i32 {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is enabled for this function; reads stay within `n`.
    unsafe {
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(i).cast()));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(i + 16).cast()));
            let a0 = _mm256_loadu_si256(a.add(i).cast());
            let a1 = _mm256_loadu_si256(a.add(i + 16).cast());
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
            i += 32;
        }
        let acc = _mm256_add_epi32(acc0, acc1);
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s) + tail(a, b, i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs.
    fn kernels() -> Vec<Kernel> {
        let mut all: Vec<Kernel> = vec![portable, kernel()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(avx2);
        }
        all
    }

    #[test]
    fn kernels_compute_the_exact_integer_dot() {
        // 416 lanes (whole steps) and 387 (a tail), mixed values and the extremes: every
        // product at its largest, the overflow bound's case.
        for n in [416usize, 387] {
            let mixed_a: Vec<i16> = (0..n)
                .map(|i| ((i * 7_919 % 65_535) as i32 - 32_767) as i16)
                .collect();
            let mixed_b: Vec<i8> = (0..n)
                .map(|i| ((i * 104_729 % 255) as i32 - 127) as i8)
                .collect();
            let (max_a, max_b) = (vec![32_767i16; n], vec![-127i8; n]);
            for (a, b) in [(&mixed_a, &mixed_b), (&max_a, &max_b)] {
                let exact: i64 = a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| i64::from(x) * i64::from(y))
                    .sum();
                for kernel in kernels() {
                    // SAFETY: `kernels` lists only what this CPU runs; both hold `n`.
                    let got = unsafe { kernel(a.as_ptr(), b.as_ptr(), n) };
                    assert_eq!(i64::from(got), exact);
                }
            }
        }
    }

    #[test]
    fn int_dot_is_the_exact_integer_dot() {
        let a: Vec<i16> = (0..387)
            .map(|i| ((i * 37 % 101) - 50) as i16 * 600)
            .collect();
        let codes: Vec<u8> = (0..387)
            .map(|i| ((i * 13 % 255) - 127) as i8 as u8)
            .collect();
        let exact: i64 = a
            .iter()
            .zip(&codes)
            .map(|(&x, &c)| i64::from(x) * i64::from(c as i8))
            .sum();
        assert_eq!(i64::from(dot(&a, &codes)), exact);
        // SAFETY: plain code; both hold 387.
        let portable = unsafe { portable(a.as_ptr(), codes.as_ptr().cast(), 387) };
        assert_eq!(i64::from(portable), exact);
    }

    #[test]
    fn codes_approximate_the_dot_product_of_unit_rows() {
        let dim: usize = 384;
        let unit = |seed: usize| {
            let v: Vec<f32> = (0..dim)
                .map(|i| (((i * 31 + seed * 17) % 97) as f32 - 48.0) / 48.0)
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        for kernel in kernels() {
            for seed in 0..20 {
                let (a, b) = (unit(seed), unit(seed + 1_000));
                let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                let bs = i8_scale(b.iter().copied());
                let codes: Vec<i8> = b.iter().map(|&x| to_i8(x, bs)).collect();
                let mut probe = Vec::new();
                let qs = quantize_i16(&a, &mut probe);
                assert_eq!((codes.len(), probe.len()), (dim, dim));
                // SAFETY: as above; both rows are `dim` long.
                let dot = unsafe { kernel(probe.as_ptr(), codes.as_ptr(), dim) };
                let approx = qs * bs * dot as f32;
                assert!((approx - exact).abs() < 0.01, "{approx} vs {exact}");
            }
        }
    }
}
