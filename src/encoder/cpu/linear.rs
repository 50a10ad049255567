//! A linear layer `y = x W^T + b` with its weights packed once, at load, into the layout the
//! matmul kernels stream: 32-column panels, `[panel][k][32]` for f32, `[panel][k/2][32][2]` for
//! bf16 and `[panel][k/4][32][4]` for int8 (zero-padded), so each kernel step reads one
//! contiguous 128-byte row of the panel.

/// Call `$f::<MR>` for the tile's row count (1..=12): each row count is its own unrolled kernel,
/// so a kernel never reads rows past the matrix.
macro_rules! dispatch_mr {
    ($mr:expr, $($f:ident)::+, $($arg:expr),*) => {
        match $mr {
            12 => $($f)::+::<12>($($arg),*), 11 => $($f)::+::<11>($($arg),*), 10 => $($f)::+::<10>($($arg),*),
            9 => $($f)::+::<9>($($arg),*), 8 => $($f)::+::<8>($($arg),*), 7 => $($f)::+::<7>($($arg),*),
            6 => $($f)::+::<6>($($arg),*), 5 => $($f)::+::<5>($($arg),*), 4 => $($f)::+::<4>($($arg),*),
            3 => $($f)::+::<3>($($arg),*), 2 => $($f)::+::<2>($($arg),*), 1 => $($f)::+::<1>($($arg),*),
            _ => unreachable!("tile of {} rows", $mr),
        }
    };
}

/// [`dispatch_mr`] for the AVX2 kernel's 1..=6 rows.
macro_rules! dispatch_mr_avx2 {
    ($mr:expr, $($f:ident)::+, $($arg:expr),*) => {
        match $mr {
            6 => $($f)::+::<6>($($arg),*), 5 => $($f)::+::<5>($($arg),*), 4 => $($f)::+::<4>($($arg),*),
            3 => $($f)::+::<3>($($arg),*), 2 => $($f)::+::<2>($($arg),*), 1 => $($f)::+::<1>($($arg),*),
            _ => unreachable!("tile of {} rows", $mr),
        }
    };
}

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::kernels::{self, Int8Scales, Tile, MR_AVX2, MR_AVX512, NR};
use super::{Isa, Precision};

enum Packed {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    Int8 {
        q: Vec<i8>,
        /// Per output column (padded to whole panels): the weight scale and the column's sum
        /// of `q` (see [`Int8Scales`]).
        scale: Vec<f32>,
        sum: Vec<i32>,
    },
}

pub struct Linear {
    /// Output and input sizes; `kp` is `k` padded to the packing unit.
    n: usize,
    k: usize,
    kp: usize,
    packed: Packed,
    /// Padded to a whole number of panels.
    bias: Option<Vec<f32>>,
    isa: Isa,
}

/// Rows per parallel task: a task's rows of A stay in L2 while every panel passes over them.
const ROWS_PER_TASK: usize = 96;

/// Row-major activations as a kernel reads them.
struct Rows<'a, A> {
    data: &'a [A],
    stride: usize,
}

/// One matrix product's operands, shared by its tasks.
struct Job<'a, A> {
    rows: Rows<'a, A>,
    panels: *const u8,
    panel_bytes: usize,
    mr_max: usize,
}

impl Linear {
    /// `w` is `[n, k]` row-major (PyTorch's `Linear.weight`), `bias` `[n]`.
    pub fn new(
        w: &[f32],
        (n, k): (usize, usize),
        bias: Option<&[f32]>,
        precision: Precision,
        isa: Isa,
    ) -> Result<Self> {
        if w.len() != n * k || n == 0 || k == 0 {
            bail!("linear weight of {} values is not {n} x {k}", w.len());
        }
        if let Some(b) = bias.filter(|b| b.len() != n) {
            bail!("linear bias of {} values for {n} outputs", b.len());
        }
        precision.check(isa)?;
        let unit = precision.k_unit();
        let kp = k.div_ceil(unit) * unit;
        let packed = match precision {
            Precision::F32 => Packed::F32(pack(w, n, k, kp, 1, |x| x, 0.0)),
            Precision::BF16 => Packed::Bf16(pack(w, n, k, kp, 2, to_bf16, 0)),
            Precision::Int8 => pack_int8(w, n, k, kp),
        };
        let bias = bias.map(|b| {
            let mut v = b.to_vec();
            v.resize(n.div_ceil(NR) * NR, 0.0);
            v
        });
        Ok(Self {
            n,
            k,
            kp,
            packed,
            bias,
            isa,
        })
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `out[m, n] = x[m, k] W^T + b`, on the current rayon pool.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "linear input is not {m} x {}", self.k);
        assert_eq!(
            out.len(),
            m * self.n,
            "linear output is not {m} x {}",
            self.n
        );
        match &self.packed {
            Packed::F32(b) => {
                let job = self.job(x, self.k, b.as_ptr() as _, 4);
                self.par_rows(out, m, |r0, c| self.f32_rows(&job, r0, c));
            }
            Packed::Bf16(b) => {
                let mut a = vec![0u16; m * self.kp];
                bf16_rows(self.isa, x, self.k, &mut a);
                let job = self.job(&a, self.kp, b.as_ptr() as _, 2);
                self.par_rows(out, m, |r0, c| self.bf16_rows(&job, r0, c));
            }
            Packed::Int8 { q, scale, sum } => {
                let mut a = vec![0u8; m * self.kp];
                let (mut row_scale, mut row_zero) = (vec![0f32; m], vec![0i32; m]);
                quantize_rows(self.isa, x, self.k, &mut a, &mut row_scale, &mut row_zero);
                let job = self.job(&a, self.kp, q.as_ptr() as _, 1);
                self.par_rows(out, m, |r0, c| {
                    self.tiles(&job, r0, c, |t, r, p| unsafe {
                        let s = Int8Scales {
                            row_scale: row_scale[r0 + r..].as_ptr(),
                            row_zero: row_zero[r0 + r..].as_ptr(),
                            col_scale: scale[p * NR..].as_ptr(),
                            col_sum: sum[p * NR..].as_ptr(),
                        };
                        if self.isa == Isa::Avx512 {
                            dispatch_mr!(t.mr, kernels::int8_avx512, t, s)
                        } else {
                            portable::int8_tile(t, s)
                        }
                    })
                });
            }
        }
    }

    fn job<'a, A>(&self, a: &'a [A], stride: usize, panels: *const u8, size: usize) -> Job<'a, A> {
        Job {
            rows: Rows { data: a, stride },
            panels,
            panel_bytes: self.kp * NR * size,
            mr_max: mr_max(self.isa),
        }
    }

    /// Split the output rows into tasks of [`ROWS_PER_TASK`]; `f(first_row, out_rows)`.
    fn par_rows(&self, out: &mut [f32], m: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        if m <= ROWS_PER_TASK {
            return f(0, out);
        }
        out.par_chunks_mut(ROWS_PER_TASK * self.n)
            .enumerate()
            .for_each(|(i, c)| f(i * ROWS_PER_TASK, c));
    }

    /// Where a task's output rows go, for [`for_tiles`].
    fn out<'a>(&'a self, c: &mut [f32]) -> Out<'a> {
        Out {
            c: c.as_mut_ptr(),
            rows: c.len() / self.n,
            n: self.n,
            ldc: self.n,
            kp: self.kp,
            bias: self.bias.as_deref(),
        }
    }

    fn tiles<A>(
        &self,
        job: &Job<A>,
        r0: usize,
        c: &mut [f32],
        kernel: impl FnMut(Tile<A>, usize, usize),
    ) {
        for_tiles(job, r0, &self.out(c), kernel)
    }

    fn f32_rows(&self, job: &Job<f32>, r0: usize, c: &mut [f32]) {
        // SAFETY: `out` covers `c`, and the rows of `job` were checked against it.
        unsafe { run_f32(self.isa, job, r0, &self.out(c)) }
    }

    fn bf16_rows(&self, job: &Job<u16>, r0: usize, c: &mut [f32]) {
        match self.isa {
            Isa::Avx512 => self.tiles(job, r0, c, |t, _, _| unsafe {
                dispatch_mr!(t.mr, kernels::bf16_avx512, t)
            }),
            _ => self.tiles(job, r0, c, |t, _, _| unsafe { portable::bf16_tile(t) }),
        }
    }
}

/// The output side of one product: `rows x n` values, `ldc` apart per row, from inputs of
/// `kp` (padded) values per row.
struct Out<'a> {
    c: *mut f32,
    rows: usize,
    n: usize,
    ldc: usize,
    kp: usize,
    bias: Option<&'a [f32]>,
}

/// Run `kernel(tile, row, panel)` over every tile of `out` (input rows from `r0` on),
/// panel-major so one panel stays in L1 across all the row tiles.
fn for_tiles<A>(job: &Job<A>, r0: usize, out: &Out, mut kernel: impl FnMut(Tile<A>, usize, usize)) {
    for p in 0..out.n.div_ceil(NR) {
        let mut r = 0;
        while r < out.rows {
            let mr = job.mr_max.min(out.rows - r);
            let tile = Tile {
                a: job.rows.data[(r0 + r) * job.rows.stride..].as_ptr(),
                lda: job.rows.stride,
                // SAFETY: p < panels, each panel_bytes long; row r < rows of `out`.
                b: unsafe { job.panels.add(p * job.panel_bytes) },
                k: out.kp,
                c: unsafe { out.c.add(r * out.ldc + p * NR) },
                ldc: out.ldc,
                mr,
                nr: (out.n - p * NR).min(NR),
                bias: out.bias.map_or(std::ptr::null(), |v| v[p * NR..].as_ptr()),
            };
            kernel(tile, r, p);
            r += mr;
        }
    }
}

/// The f32 product of `job` into `out` with the kernels of `isa`.
///
/// # Safety
/// `out` must describe writable memory, and `isa` must be supported by this CPU.
unsafe fn run_f32(isa: Isa, job: &Job<f32>, r0: usize, out: &Out) {
    match isa {
        Isa::Avx512 => for_tiles(job, r0, out, |t, _, _| {
            dispatch_mr!(t.mr, kernels::f32_avx512, t)
        }),
        Isa::Avx2 => for_tiles(job, r0, out, |t, _, _| {
            for half in 0..2 {
                dispatch_mr_avx2!(t.mr, kernels::f32_avx2, t, half)
            }
        }),
        Isa::Portable => for_tiles(job, r0, out, |t, _, _| portable::f32_tile(t)),
    }
}

fn mr_max(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => MR_AVX512,
        Isa::Avx2 => MR_AVX2,
        Isa::Portable => 8,
    }
}

/// An f32 right-hand operand packed for the kernels, rebuilt in place (attention packs each
/// head's keys and values, so the allocation is reused).
#[derive(Default)]
pub struct PackedB {
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedB {
    /// Pack `B` (`k x n`) given as `at(column, kk)`.
    pub fn pack(&mut self, n: usize, k: usize, at: impl Fn(usize, usize) -> f32) {
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
        for p in 0..n.div_ceil(NR) {
            let panel = &mut self.data[p * k * NR..(p + 1) * k * NR];
            for col in p * NR..n.min((p + 1) * NR) {
                for kk in 0..k {
                    panel[kk * NR + col % NR] = at(col, kk);
                }
            }
        }
        (self.n, self.k) = (n, k);
    }

    /// `c[r, j] = sum_kk a[r, kk] B[kk, j]` for `rows` rows of `a` (`lda` apart), single-threaded.
    ///
    /// # Safety
    /// `c` must be writable for `rows` rows of `n` values, `ldc` apart.
    pub unsafe fn product(
        &self,
        isa: Isa,
        a: &[f32],
        lda: usize,
        rows: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        assert!(
            rows == 0 || a.len() >= (rows - 1) * lda + self.k,
            "product: A too short"
        );
        let job = Job {
            rows: Rows {
                data: a,
                stride: lda,
            },
            panels: self.data.as_ptr() as *const u8,
            panel_bytes: self.k * NR * 4,
            mr_max: mr_max(isa),
        };
        let out = Out {
            c,
            rows,
            n: self.n,
            ldc,
            kp: self.k,
            bias: None,
        };
        run_f32(isa, &job, 0, &out);
    }
}

// Raw pointers inside a job only point into slices the job borrows.
unsafe impl<A: Sync> Sync for Job<'_, A> {}

/// Pack `w` (`[n, k]`) into 32-column panels whose rows hold `unit` consecutive k values per
/// column: `[panel][k / unit][32][unit]`, converted by `conv`, padded with `zero`.
fn pack<T: Copy>(
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
fn pack_int8(w: &[f32], n: usize, k: usize, kp: usize) -> Packed {
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

pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Plain-Rust kernels with the same inputs and outputs: the fallback, and the reference the
/// intrinsic kernels are tested against.
mod portable {
    use super::super::kernels::{Int8Scales, Tile, NR};
    use super::from_bf16;

    unsafe fn store(t: &Tile<impl Copy>, r: usize, j: usize, v: f32) {
        *t.c.add(r * t.ldc + j) = v;
    }

    unsafe fn bias(t: &Tile<impl Copy>, j: usize) -> f32 {
        if t.bias.is_null() {
            0.0
        } else {
            *t.bias.add(j)
        }
    }

    pub unsafe fn f32_tile(t: Tile<f32>) {
        let b = t.b as *const f32;
        for r in 0..t.mr {
            for j in 0..t.nr {
                let mut s = bias(&t, j);
                for k in 0..t.k {
                    s = (*t.a.add(r * t.lda + k)).mul_add(*b.add(k * NR + j), s);
                }
                store(&t, r, j, s);
            }
        }
    }

    pub unsafe fn bf16_tile(t: Tile<u16>) {
        let b = t.b as *const u16;
        for r in 0..t.mr {
            for j in 0..t.nr {
                let mut s = bias(&t, j);
                for k in 0..t.k {
                    let a = from_bf16(*t.a.add(r * t.lda + k));
                    s += a * from_bf16(*b.add((k / 2) * NR * 2 + j * 2 + k % 2));
                }
                store(&t, r, j, s);
            }
        }
    }

    pub unsafe fn int8_tile(t: Tile<u8>, sc: Int8Scales) {
        let b = t.b as *const i8;
        for r in 0..t.mr {
            for j in 0..t.nr {
                let mut s = 0i32;
                for k in 0..t.k {
                    let w = *b.add((k / 4) * NR * 4 + j * 4 + k % 4);
                    s += *t.a.add(r * t.lda + k) as i32 * w as i32;
                }
                let v = (s - *sc.row_zero.add(r) * *sc.col_sum.add(j)) as f32;
                let scale = *sc.row_scale.add(r) * *sc.col_scale.add(j);
                store(&t, r, j, v.mul_add(scale, bias(&t, j)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 2_654_435_761usize) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn reference(x: &[f32], w: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                    .sum();
                out[r * n + c] = dot + b[c] as f64;
            }
        }
        out
    }

    fn run(
        p: Precision,
        isa: Isa,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
    ) -> Vec<f32> {
        let l = Linear::new(w, (n, k), Some(b), p, isa).unwrap();
        let mut out = vec![f32::NAN; m * n];
        l.forward(x, m, &mut out);
        out
    }

    fn isas() -> Vec<Isa> {
        let best = Isa::detect().unwrap();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }

    /// Odd shapes: partial row tiles, partial panels, k not a multiple of the packing unit,
    /// and more rows than one parallel task.
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (5, 33, 7),
        (13, 64, 30),
        (25, 70, 45),
        (200, 40, 19),
        (97, 32, 384),
    ];

    #[test]
    fn f32_kernels_match_a_float64_reference_on_every_isa() {
        for (i, &shape) in SHAPES.iter().enumerate() {
            let (m, n, k) = shape;
            let (x, w, b) = (values(m * k, i), values(n * k, i + 7), values(n, i + 3));
            let want = reference(&x, &w, &b, shape);
            for isa in isas() {
                let got = run(Precision::F32, isa, &x, &w, &b, shape);
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - e).abs() < 1e-5 * (k as f64).sqrt(),
                        "{isa:?} {shape:?}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn low_precision_kernels_equal_their_portable_reference() {
        let best = Isa::detect().unwrap();
        for p in [Precision::BF16, Precision::Int8] {
            if best < Isa::Avx512 || p.check(best).is_err() {
                eprintln!("skipping the AVX-512 {p:?} kernel: not on this CPU");
                continue;
            }
            for (i, &shape) in SHAPES.iter().enumerate() {
                let (m, n, k) = shape;
                let (x, w, b) = (values(m * k, i), values(n * k, i + 7), values(n, i + 3));
                let fast = run(p, Isa::Avx512, &x, &w, &b, shape);
                let slow = run(p, Isa::Portable, &x, &w, &b, shape);
                for (f, s) in fast.iter().zip(&slow) {
                    // int8 sums are exact integers; bf16 products are exact in f32, only the
                    // order of the f32 additions differs.
                    let tol = if p == Precision::Int8 {
                        1e-6
                    } else {
                        1e-5 * k as f32
                    };
                    assert!(
                        (f - s).abs() <= tol * (1.0 + s.abs()),
                        "{p:?} {shape:?}: {f} vs {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn low_precision_stays_close_to_float64() {
        let shape = (64, 96, 384);
        let (m, n, k) = shape;
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let want = reference(&x, &w, &b, shape);
        let scale = (k as f64).sqrt() * 0.6; // typical magnitude of a dot of k values in [-1, 1)
        for (p, tol) in [(Precision::BF16, 0.01), (Precision::Int8, 0.02)] {
            let got = run(p, Isa::Portable, &x, &w, &b, shape);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, e)| (*g as f64 - e).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < tol * scale,
                "{p:?}: error {worst} against magnitude {scale}"
            );
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        let (n, k) = (50, 40);
        let (x, w, b) = (values(300 * k, 5), values(n * k, 6), values(n, 7));
        for isa in isas() {
            let all = run(Precision::F32, isa, &x, &w, &b, (300, n, k));
            let one = run(Precision::F32, isa, &x[123 * k..124 * k], &w, &b, (1, n, k));
            assert_eq!(&all[123 * n..124 * n], &one[..], "{isa:?}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0); // tie, even stays
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0); // tie, rounds up to even
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }
}
