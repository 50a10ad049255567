//! Element-wise and row operations of the CPU engine: norms, activations, softmax, attention.
//!
//! Each is written once, as plain Rust loops shaped so the compiler vectorises them (sums kept
//! in 16 lanes, `exp` / `erf` as polynomials instead of libm calls), and compiled for each
//! instruction set by [`simd_fn!`]. No fused multiply-add is implied, so results are bit-identical
//! whichever instruction set runs them.

use rayon::prelude::*;

use super::linear::PackedB;
use super::Isa;

const LANES: usize = 16;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `e^x` to about 1 ulp on [-87, 88] (0 below, +inf above): `2^n * p(r)` with `x = n ln2 + r`,
/// `|r| <= ln2 / 2`, `p` the degree-7 Taylor polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.5, 88.5);
    let n = (x * std::f32::consts::LOG2_E).round();
    // ln 2 split in two so `n * LN2_HI` is exact.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // 2^n by building the exponent; n in [-127, 128] after the clamp, done in two halves so
    // neither half over- or underflows.
    let half = (n * 0.5).floor();
    let pow = |e: f32| f32::from_bits(((e as i32 + 127) as u32) << 23);
    p * pow(half) * pow(n - half)
}

/// `erf(x)`, absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

simd_fn! {
    /// Exact GELU, `x/2 (1 + erf(x / sqrt 2))`, in place (BERT's `gelu`).
    pub fn gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    /// SwiGLU: row `r` of `out` (`inter` wide) is `silu(gate) * up`, where row `r` of
    /// `gate_up` is `[gate | up]`.
    pub fn silu_mul(gate_up: &[f32], out: &mut [f32], inter: usize) {
        for (o, gu) in out.chunks_exact_mut(inter).zip(gate_up.chunks_exact(2 * inter)) {
            let (g, u) = gu.split_at(inter);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + exp(-g)) * u;
            }
        }
    }
}

simd_fn! {
    /// `x = LayerNorm(x + residual)` per row of `gamma.len()` values (BERT's post-norm).
    pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let h = gamma.len();
        for (row, res) in x.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
            for (v, r) in row.iter_mut().zip(res) {
                *v += r;
            }
            norm_row(row, gamma, beta, eps);
        }
    }
}

simd_fn! {
    /// `x = LayerNorm(x)` per row (BERT's embeddings).
    pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        for row in x.chunks_exact_mut(gamma.len()) {
            norm_row(row, gamma, beta, eps);
        }
    }
}

#[inline(always)]
fn norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let inv = 1.0 / (sum_sq_dev(row, mean) / n + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

simd_fn! {
    /// `out = RMSNorm(x) * weight` per row (Llama), computed as the reference does: the mean
    /// square in f32, then `x * rsqrt(ms + eps) * weight`.
    pub fn rms_norm(x: &[f32], out: &mut [f32], weight: &[f32], eps: f32) {
        let h = weight.len();
        for (o, row) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
            let mut acc = [0f32; LANES];
            for c in row.chunks_exact(LANES) {
                for i in 0..LANES {
                    acc[i] += c[i] * c[i];
                }
            }
            let tail: f32 = row.chunks_exact(LANES).remainder().iter().map(|v| v * v).sum();
            let inv = 1.0 / ((acc.iter().sum::<f32>() + tail) / h as f32 + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
                *o = v * inv * w;
            }
        }
    }
}

simd_fn! {
    /// [`rms_norm`] in place, over each `weight.len()` values of `x` (Qwen3's per-head q/k
    /// norms).
    pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
        let h = weight.len();
        for row in x.chunks_exact_mut(h) {
            let mut acc = [0f32; LANES];
            for c in row.chunks_exact(LANES) {
                for i in 0..LANES {
                    acc[i] += c[i] * c[i];
                }
            }
            let tail: f32 = row.chunks_exact(LANES).remainder().iter().map(|v| v * v).sum();
            let inv = 1.0 / ((acc.iter().sum::<f32>() + tail) / h as f32 + eps).sqrt();
            for (v, w) in row.iter_mut().zip(weight) {
                *v = *v * inv * w;
            }
        }
    }
}

simd_fn! {
    /// `x += y`.
    pub fn add(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

simd_fn! {
    /// Softmax of one row, in place.
    pub fn softmax(x: &mut [f32]) {
        softmax_row(x)
    }
}

#[inline(always)]
fn softmax_row(x: &mut [f32]) {
    let m = max(x);
    for v in x.iter_mut() {
        *v = exp(*v - m);
    }
    let inv = 1.0 / sum(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rotary position embedding in place on one head's `[d]` vector, HF's non-interleaved layout
/// (`rotate_half`): pairs `(i, i + d/2)` turned by the angle of frequency `i`.
pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

/// Where one layer's attention inputs live: rows of a `[tokens, stride]` buffer holding every
/// head's q, then k, then v (the fused projection's output).
#[derive(Clone, Copy)]
pub struct QkvLayout {
    pub stride: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    /// Causal attention to at most this many keys, the query's own included (Mistral).
    pub window: Option<usize>,
}

impl QkvLayout {
    fn q(&self, h: usize) -> usize {
        h * self.head_dim
    }
    fn k(&self, h: usize) -> usize {
        (self.heads + h) * self.head_dim
    }
    fn v(&self, h: usize) -> usize {
        (self.heads + self.kv_heads + h) * self.head_dim
    }
}

/// Query rows whose scores are held at once per (text, head): memory stays
/// `rows x length`, not `length x length`.
const QUERY_BLOCK: usize = 128;

/// Exact softmax attention of each text (`spans`: its first row and length in `qkv`) with
/// itself, no padding anywhere; writes `[tokens, heads * head_dim]` into `out`. One task per
/// (text, head); both products run on the matmul kernels, keys and values packed per head.
pub fn attention(isa: Isa, qkv: &[f32], lay: QkvLayout, spans: &[(usize, usize)], out: &mut [f32]) {
    let width = lay.heads * lay.head_dim;
    assert_eq!(out.len(), qkv.len() / lay.stride * width);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..spans.len())
        .flat_map(|s| (0..lay.heads).map(move |h| (s, h)))
        .collect();
    tasks
        .par_iter()
        .for_each_init(Scratch::default, |scratch, &(s, h)| {
            let (start, len) = spans[s];
            // SAFETY: `out` holds every token's `width` values (asserted above), and this
            // (text, head) alone writes its rows' `head_dim` columns of head `h`.
            unsafe {
                let dst = out_ptr.get().add(start * width + h * lay.head_dim);
                head_attention(isa, qkv, lay, (start, len, h), scratch, (dst, width));
            }
        });
}

struct SyncPtr(*mut f32);

impl SyncPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the pointer is only used by `attention`'s tasks, each writing its own disjoint
// (text, head) block of an output slice that outlives them.
unsafe impl Sync for SyncPtr {}
// SAFETY: as for `Sync`.
unsafe impl Send for SyncPtr {}

#[derive(Default)]
struct Scratch {
    keys: PackedB,
    values: PackedB,
    scores: Vec<f32>,
}

/// One head of one text (`at` = first row, length, head), written to `dst` (rows `ld` apart).
///
/// # Safety
/// `dst` is writable for `len` rows of `head_dim` values, `ld` apart, and no one else touches
/// them meanwhile.
unsafe fn head_attention(
    isa: Isa,
    qkv: &[f32],
    lay: QkvLayout,
    (start, len, h): (usize, usize, usize),
    s: &mut Scratch,
    (dst, ld): (*mut f32, usize),
) {
    let d = lay.head_dim;
    let kvh = h / (lay.heads / lay.kv_heads);
    let at = |t: usize, off: usize| qkv[(start + t) * lay.stride + off];
    let (k_off, v_off) = (lay.k(kvh), lay.v(kvh));
    s.keys.pack(len, d, |j, c| at(j, k_off + c));
    s.values.pack(d, len, |c, j| at(j, v_off + c));
    let scale = 1.0 / (d as f32).sqrt();
    for i0 in (0..len).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(len - i0);
        s.scores.resize(rows * len, 0.0);
        let q = &qkv[(start + i0) * lay.stride + lay.q(h)..];
        // SAFETY: `scores` holds rows x len values.
        unsafe {
            s.keys
                .product(isa, q, lay.stride, rows, s.scores.as_mut_ptr(), len);
        }
        for (r, row) in s.scores.chunks_exact_mut(len).enumerate() {
            let keys = if lay.causal { i0 + r + 1 } else { len };
            let first = lay.window.map_or(0, |w| keys.saturating_sub(w));
            scaled_softmax(isa, &mut row[first..keys], scale);
            row[..first].fill(0.0);
            row[keys..].fill(0.0);
        }
        // SAFETY: rows i0..i0 + rows < len of `dst` are this task's (the function's contract).
        unsafe {
            s.values
                .product(isa, &s.scores, len, rows, dst.add(i0 * ld), ld);
        }
    }
}

simd_fn! {
    /// `x = softmax(x * scale)` for one row of scores.
    pub fn scaled_softmax(x: &mut [f32], scale: f32) {
        for v in x.iter_mut() {
            *v *= scale;
        }
        softmax_row(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_library() {
        for i in -8000..8000 {
            let x = i as f32 * 0.01;
            let e = (x as f64).exp();
            let rel = ((exp(x) as f64 - e) / e).abs();
            assert!(rel < 4e-7, "exp({x}) = {} vs {e}", exp(x));
        }
        assert!(exp(-200.0) < 1e-37);
        // erf against a high-precision series at a few points.
        for (x, want) in [
            (0.5f32, 0.520_499_877_8f64),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.5, -0.966_105_146_5),
        ] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn every_isa_gives_the_same_bits() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07)
            .collect();
        let g: Vec<f32> = (0..100).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..100).map(|i| i as f32 * -0.02).collect();
        let run = |isa: Isa| {
            let mut a = x.clone();
            gelu(isa, &mut a);
            layer_norm(isa, &mut a, &g, &b, 1e-12);
            softmax(isa, &mut a[..300]);
            a
        };
        let reference = run(Isa::Portable);
        for isa in [Isa::Avx2, Isa::Avx512] {
            if isa <= Isa::detect().unwrap() {
                assert_eq!(run(isa), reference, "{isa:?}");
            }
        }
    }
}
