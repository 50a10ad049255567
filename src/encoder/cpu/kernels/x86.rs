//! The intrinsic kernels (x86-64 only): AVX-512F f32, AVX512_BF16 bf16, AVX512_VNNI int8 and
//! AVX2 + FMA f32. Written with intrinsics because the `gemm` crate that candle uses only
//! enables its AVX-512 kernels on a nightly compiler, and has no bf16 dot-product or int8 VNNI
//! kernels at all.
//!
//! # Safety (every kernel here)
//! The caller guarantees the [`Tile`] contract (see [`super::Tile`]) and that the CPU has the
//! kernel's `target_feature`s (checked once by `Isa::detect` / `Precision::kernel_for`).

use super::{Int8Scales, Tile, NR};
use std::arch::x86_64::*;

#[inline(always)]
fn masks(nr: usize) -> (u16, u16) {
    let lo = if nr >= 16 { 0xFFFF } else { (1u16 << nr) - 1 };
    let hi = if nr >= 32 {
        0xFFFF
    } else if nr > 16 {
        (1u16 << (nr - 16)) - 1
    } else {
        0
    };
    (lo, hi)
}

/// The bias for the tile's 32 columns, or zeros.
///
/// # Safety
/// `bias` is null or readable for the columns set in `lo` / `hi`; AVX-512F is available (only
/// inlined into the AVX-512 kernels).
#[inline(always)]
unsafe fn bias_regs(bias: *const f32, lo: u16, hi: u16) -> (__m512, __m512) {
    // SAFETY: `bias` is null or readable for the tile's columns, as masked by `lo` / `hi`.
    unsafe {
        if bias.is_null() {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        } else {
            (
                _mm512_maskz_loadu_ps(lo, bias),
                _mm512_maskz_loadu_ps(hi, bias.add(16)),
            )
        }
    }
}

/// f32 tile with AVX-512F: `MR` rows, 32 columns.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, and this CPU has the enabled target features.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_avx512<const MR: usize>(t: Tile<f32>) {
    // SAFETY: pointer reads and writes stay inside the tile (the caller's contract), and
    // the intrinsics need only the features this function enables.
    unsafe {
        let (lo, hi) = masks(t.nr);
        let (b0, b1) = bias_regs(t.bias, lo, hi);
        let mut acc = [[b0, b1]; MR];
        let b = t.b as *const f32;
        for k in 0..t.k {
            let w0 = _mm512_loadu_ps(b.add(k * NR));
            let w1 = _mm512_loadu_ps(b.add(k * NR + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*t.a.add(r * t.lda + k));
                acc[0] = _mm512_fmadd_ps(a, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate().take(t.mr) {
            let c = t.c.add(r * t.ldc);
            _mm512_mask_storeu_ps(c, lo, acc[0]);
            _mm512_mask_storeu_ps(c.add(16), hi, acc[1]);
        }
    }
}

/// bf16 tile with AVX512_BF16: A is bf16 (`k` even), the panel holds column pairs
/// `[k/2][32][2]`; each `vdpbf16ps` adds two products per lane into f32.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, and this CPU has the enabled target features.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn bf16_avx512<const MR: usize>(t: Tile<u16>) {
    // SAFETY: pointer reads and writes stay inside the tile (the caller's contract), and
    // the intrinsics need only the features this function enables.
    unsafe {
        let (lo, hi) = masks(t.nr);
        let (b0, b1) = bias_regs(t.bias, lo, hi);
        let mut acc = [[b0, b1]; MR];
        let b = t.b as *const __m512i;
        for k2 in 0..t.k / 2 {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(2 * k2)));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(2 * k2 + 1)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = (t.a.add(r * t.lda + 2 * k2) as *const i32).read_unaligned();
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], a, w0);
                acc[1] = _mm512_dpbf16_ps(acc[1], a, w1);
            }
        }
        for (r, acc) in acc.iter().enumerate().take(t.mr) {
            let c = t.c.add(r * t.ldc);
            _mm512_mask_storeu_ps(c, lo, acc[0]);
            _mm512_mask_storeu_ps(c.add(16), hi, acc[1]);
        }
    }
}

/// int8 tile with AVX512_VNNI: A is u8 (`k` a multiple of 4), the panel holds `[k/4][32][4]`
/// signed bytes; sums are exact in i32, then scaled to f32.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, the pointers of `s` are readable for its rows and
/// columns, and this CPU has the enabled target features.
#[target_feature(enable = "avx512f,avx512vnni")]
pub unsafe fn int8_avx512<const MR: usize>(t: Tile<u8>, s: Int8Scales) {
    // SAFETY: pointer reads and writes stay inside the tile (the caller's contract), and
    // the intrinsics need only the features this function enables.
    unsafe {
        let (lo, hi) = masks(t.nr);
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let b = t.b as *const __m512i;
        for k4 in 0..t.k / 4 {
            let w0 = _mm512_loadu_si512(b.add(2 * k4));
            let w1 = _mm512_loadu_si512(b.add(2 * k4 + 1));
            for (r, acc) in acc.iter_mut().enumerate() {
                let quad = (t.a.add(r * t.lda + 4 * k4) as *const i32).read_unaligned();
                let a = _mm512_set1_epi32(quad);
                acc[0] = _mm512_dpbusd_epi32(acc[0], a, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], a, w1);
            }
        }
        let (bias0, bias1) = bias_regs(t.bias, lo, hi);
        let sum0 = _mm512_maskz_loadu_epi32(lo, s.col_sum);
        let sum1 = _mm512_maskz_loadu_epi32(hi, s.col_sum.add(16));
        let cs0 = _mm512_maskz_loadu_ps(lo, s.col_scale);
        let cs1 = _mm512_maskz_loadu_ps(hi, s.col_scale.add(16));
        for (r, acc) in acc.iter().enumerate().take(t.mr) {
            let rs = _mm512_set1_ps(*s.row_scale.add(r));
            let zero = _mm512_set1_epi32(*s.row_zero.add(r));
            let v0 = _mm512_sub_epi32(acc[0], _mm512_mullo_epi32(zero, sum0));
            let v1 = _mm512_sub_epi32(acc[1], _mm512_mullo_epi32(zero, sum1));
            let c = t.c.add(r * t.ldc);
            let y0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v0), _mm512_mul_ps(rs, cs0), bias0);
            let y1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v1), _mm512_mul_ps(rs, cs1), bias1);
            _mm512_mask_storeu_ps(c, lo, y0);
            _mm512_mask_storeu_ps(c.add(16), hi, y1);
        }
    }
}

/// f32 tile with AVX2 + FMA, for CPUs without AVX-512: `MR` rows, 16 of the panel's 32 columns
/// starting at `half * 16`.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, and this CPU has the enabled target features.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn f32_avx2<const MR: usize>(t: Tile<f32>, half: usize) {
    // SAFETY: pointer reads and writes stay inside the tile (the caller's contract), and
    // the intrinsics need only the features this function enables.
    unsafe {
        let cols = t.nr.saturating_sub(half * 16).min(16);
        if cols == 0 {
            return;
        }
        let mut bias = [0f32; 16];
        if !t.bias.is_null() {
            std::ptr::copy_nonoverlapping(t.bias.add(half * 16), bias.as_mut_ptr(), cols);
        }
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        let mut acc = [[b0, b1]; MR];
        let b = (t.b as *const f32).add(half * 16);
        for k in 0..t.k {
            let w0 = _mm256_loadu_ps(b.add(k * NR));
            let w1 = _mm256_loadu_ps(b.add(k * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*t.a.add(r * t.lda + k));
                acc[0] = _mm256_fmadd_ps(a, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, w1, acc[1]);
            }
        }
        let mut row = [0f32; 16];
        for (r, acc) in acc.iter().enumerate().take(t.mr) {
            _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
            let c = t.c.add(r * t.ldc + half * 16);
            std::ptr::copy_nonoverlapping(row.as_ptr(), c, cols);
        }
    }
}
