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
        /// Per output column (padded to whole panels): the weight scale, and `128 x` the
        /// column's sum of `q`, which the unsigned activations add and the epilogue removes.
        scale: Vec<f32>,
        offset: Vec<i32>,
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
                let a: Vec<u16> = padded_rows(x, m, self.k, self.kp, to_bf16, 0);
                let job = self.job(&a, self.kp, b.as_ptr() as _, 2);
                self.par_rows(out, m, |r0, c| self.bf16_rows(&job, r0, c));
            }
            Packed::Int8 { q, scale, offset } => {
                let (a, row_scale) = quantize_rows(x, m, self.k, self.kp);
                let job = self.job(&a, self.kp, q.as_ptr() as _, 1);
                self.par_rows(out, m, |r0, c| {
                    self.tiles(&job, r0, c, |t, r, p| unsafe {
                        let s = Int8Scales {
                            row_scale: row_scale[r0 + r..].as_ptr(),
                            col_scale: scale[p * NR..].as_ptr(),
                            col_offset: offset[p * NR..].as_ptr(),
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
        let mr_max = match self.isa {
            Isa::Avx512 => MR_AVX512,
            Isa::Avx2 => MR_AVX2,
            Isa::Portable => 8,
        };
        Job {
            rows: Rows { data: a, stride },
            panels,
            panel_bytes: self.kp * NR * size,
            mr_max,
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

    /// Run `kernel(tile, row_in_task, panel)` over every tile of the rows `c` holds (starting
    /// at row `r0`), panel-major so one panel stays in L1 across all the row tiles.
    fn tiles<A>(
        &self,
        job: &Job<A>,
        r0: usize,
        c: &mut [f32],
        mut kernel: impl FnMut(Tile<A>, usize, usize),
    ) {
        let rows = c.len() / self.n;
        for p in 0..self.n.div_ceil(NR) {
            let mut r = 0;
            while r < rows {
                let mr = job.mr_max.min(rows - r);
                let tile = Tile {
                    a: job.rows.data[(r0 + r) * job.rows.stride..].as_ptr(),
                    lda: job.rows.stride,
                    // SAFETY: p < panels, each panel_bytes long.
                    b: unsafe { job.panels.add(p * job.panel_bytes) },
                    k: self.kp,
                    c: c[r * self.n + p * NR..].as_mut_ptr(),
                    ldc: self.n,
                    mr,
                    nr: (self.n - p * NR).min(NR),
                    bias: self
                        .bias
                        .as_ref()
                        .map_or(std::ptr::null(), |v| v[p * NR..].as_ptr()),
                };
                kernel(tile, r, p);
                r += mr;
            }
        }
    }

    fn f32_rows(&self, job: &Job<f32>, r0: usize, c: &mut [f32]) {
        // SAFETY (all three): tiles point inside `job` and `c`, with the shapes checked above;
        // the ISA was detected before this layer was built.
        match self.isa {
            Isa::Avx512 => self.tiles(job, r0, c, |t, _, _| unsafe {
                dispatch_mr!(t.mr, kernels::f32_avx512, t)
            }),
            Isa::Avx2 => self.tiles(job, r0, c, |t, _, _| unsafe {
                for half in 0..2 {
                    dispatch_mr_avx2!(t.mr, kernels::f32_avx2, t, half)
                }
            }),
            Isa::Portable => self.tiles(job, r0, c, |t, _, _| unsafe { portable::f32_tile(t) }),
        }
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
    let mut offset = vec![0i32; padded];
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
        offset[col] = 128 * sum;
    }
    let q = pack(&qw, n, k, kp, 4, |x| x as i8, 0i8);
    Packed::Int8 { q, scale, offset }
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

/// Rows of `x` converted by `conv`, each padded from `k` to `kp` values with `zero`.
fn padded_rows<T: Copy>(
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    conv: impl Fn(f32) -> T,
    zero: T,
) -> Vec<T> {
    let mut out = vec![zero; m * kp];
    for (o, row) in out.chunks_exact_mut(kp).zip(x.chunks_exact(k)) {
        for (d, &s) in o.iter_mut().zip(row) {
            *d = conv(s);
        }
    }
    out
}

/// Dynamic per-row int8 quantisation of activations, stored as `q + 128` (unsigned).
fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize) -> (Vec<u8>, Vec<f32>) {
    let scales: Vec<f32> = x.chunks_exact(k).map(scale_for).collect();
    let mut out = vec![128u8; m * kp];
    for ((o, row), &s) in out.chunks_exact_mut(kp).zip(x.chunks_exact(k)).zip(&scales) {
        for (d, &v) in o.iter_mut().zip(row) {
            *d = (quantize(v, s) as i16 + 128) as u8;
        }
    }
    (out, scales)
}

/// f32 to bf16, rounding to nearest even (what `vcvtneps2bf16` does); NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return 0x7FC0;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
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
                let v = (s - *sc.col_offset.add(j)) as f32;
                let scale = *sc.row_scale.add(r) * *sc.col_scale.add(j);
                store(&t, r, j, v.mul_add(scale, bias(&t, j)));
            }
        }
    }
}
