//! Packing weights into the kernels' panel layouts, and converting activations to bf16 or int8
//! on the fly.

use super::Packed;
use crate::encoder::cpu::kernels::NR;
use crate::encoder::cpu::Isa;

/// Pack `w` (`[n, k]`) into 32-column panels whose rows hold `unit` consecutive k values per
/// column: `[panel][k / unit][32][unit]`, converted by `conv`, padded with `zero`.
pub(super) fn pack<T: Copy>(
    w: &[f32],
    n: usize,
    k: usize,
    kp: usize,
    unit: usize,
    conv: impl Fn(f32) -> T,
    zero: T,
) -> Vec<T> {
    let panels = n.div_ceil(NR);
    let mut out = vec![zero; panels * kp * NR];
    for col in 0..n {
        let (p, j) = (col / NR, col % NR);
        for kk in 0..k {
            let at = p * kp * NR + (kk / unit) * NR * unit + j * unit + kk % unit;
            out[at] = conv(w[col * k + kk]);
        }
    }
    out
}

/// Symmetric per-output-channel int8 weights.
pub(super) fn pack_int8(w: &[f32], n: usize, k: usize, kp: usize) -> Packed {
    let padded = n.div_ceil(NR) * NR;
    let mut scale = vec![0f32; padded];
    let mut sums = vec![0i32; padded];
    let mut qw = vec![0f32; n * k];
    for col in 0..n {
        let row = &w[col * k..(col + 1) * k];
        let s = scale_for(row);
        let mut sum = 0i32;
        for (q, &x) in qw[col * k..(col + 1) * k].iter_mut().zip(row) {
            *q = quantize(x, s) as f32;
            sum += *q as i32;
        }
        scale[col] = s;
        sums[col] = sum;
    }
    let q = pack(&qw, n, k, kp, 4, |x| x as i8, 0i8);
    Packed::Int8 {
        q,
        scale,
        sum: sums,
    }
}

/// The scale that maps a row's largest magnitude to 127 (1 for an all-zero row).
fn scale_for(row: &[f32]) -> f32 {
    let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
    if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        1.0
    }
}

fn quantize(x: f32, scale: f32) -> i8 {
    (x / scale).round().clamp(-127.0, 127.0) as i8
}

simd_fn! {
    /// Rows of `x` (`k` wide) as bf16 into `out`, whose rows are `out.len() / rows` wide (the
    /// padding is left as it is: zero).
    pub fn bf16_rows(x: &[f32], k: usize, out: &mut [u16]) {
        let kp = out.len() / (x.len() / k).max(1);
        for (o, row) in out.chunks_exact_mut(kp).zip(x.chunks_exact(k)) {
            for (d, &s) in o.iter_mut().zip(row) {
                *d = to_bf16(s);
            }
        }
    }
}

simd_fn! {
    /// Dynamic per-row asymmetric quantisation of activations to u8: the row's range (widened
    /// to include 0, so zero stays exact) onto 0..=255. Rows of `out` are padded with the zero
    /// point; `scales` and `zeros` get one value per row.
    pub fn quantize_rows(x: &[f32], k: usize, out: &mut [u8], scales: &mut [f32], zeros: &mut [i32]) {
        let kp = out.len() / scales.len().max(1);
        let rows = out.chunks_exact_mut(kp).zip(x.chunks_exact(k));
        for (((o, row), scale_out), zero_out) in rows.zip(scales.iter_mut()).zip(zeros.iter_mut()) {
            let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
            for c in row.chunks_exact(16) {
                for i in 0..16 {
                    lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
                    hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
                }
            }
            let tail = row.chunks_exact(16).remainder();
            let lo = tail.iter().chain(&lo).fold(0f32, |m, &v| m.min(v));
            let hi = tail.iter().chain(&hi).fold(0f32, |m, &v| m.max(v));
            let scale = if hi > lo && (hi - lo).is_finite() { (hi - lo) / 255.0 } else { 1.0 };
            let zero = (-lo / scale).round().clamp(0.0, 255.0);
            for (d, &v) in o.iter_mut().zip(row) {
                *d = (v / scale + zero).round().clamp(0.0, 255.0) as u8;
            }
            o[k..].fill(zero as u8);
            *scale_out = scale;
            *zero_out = zero as i32;
        }
    }
}

/// f32 to bf16, rounding to nearest even (what `vcvtneps2bf16` does); NaN stays NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if x.is_nan() {
        0x7FC0
    } else {
        rounded
    }
}

/// bf16 to f32 (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}
