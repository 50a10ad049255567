//! A linear layer `y = x W^T + b` with its weights packed once, at load, into the layout the
//! matmul kernels stream: 32-column panels, `[panel][k][32]` for f32, `[panel][k/2][32][2]` for
//! bf16 and `[panel][k/4][32][4]` for int8 (zero-padded), so each kernel step reads one
//! contiguous 128-byte row of the panel.

/// Call `$f::<MR>` for the tile's row count (1..=12): each row count is its own unrolled kernel,
/// so a kernel never reads rows past the matrix. The intrinsic kernels are x86-64 only.
#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
use super::kernels::x86;
use super::kernels::{portable, Int8Scales, Tile, MR_AVX2, MR_AVX512, MR_PORTABLE, NR};
use super::{Isa, Precision};

mod pack;
#[cfg(test)]
mod tests;

pub use pack::{bf16_rows, from_bf16, quantize_rows, to_bf16};

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

/// A linear layer packed for the kernels of one instruction set.
pub struct Linear {
    /// Output and input sizes; `kp` is `k` padded to the packing unit.
    n: usize,
    k: usize,
    kp: usize,
    packed: Packed,
    /// Padded to a whole number of panels.
    bias: Option<Vec<f32>>,
    /// Checked against this CPU at construction: the kernels' `unsafe` calls rely on it.
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
        precision.check_kernels(isa)?;
        let unit = precision.k_unit();
        let kp = k.div_ceil(unit) * unit;
        let packed = match precision {
            Precision::F32 => Packed::F32(pack::pack(w, n, k, kp, 1, |x| x, 0.0)),
            Precision::BF16 => Packed::Bf16(pack::pack(w, n, k, kp, 2, to_bf16, 0)),
            Precision::Int8 => pack::pack_int8(w, n, k, kp),
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
                    self.tiles(&job, r0, c, |t, r, p| {
                        let s = Int8Scales {
                            row_scale: row_scale[r0 + r..].as_ptr(),
                            row_zero: row_zero[r0 + r..].as_ptr(),
                            col_scale: scale[p * NR..].as_ptr(),
                            col_sum: sum[p * NR..].as_ptr(),
                        };
                        // SAFETY: `for_tiles` builds tiles inside this task's rows and the
                        // packed panels; the scales cover every row of the input and every
                        // (padded) column; `new` checked the ISA and its instructions.
                        unsafe { int8_tile(self.isa, t, s) }
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
        // SAFETY: as in `f32_rows`; `new` checked the ISA and its bf16 instructions.
        self.tiles(job, r0, c, |t, _, _| unsafe { bf16_tile(self.isa, t) })
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
                // SAFETY: row r < rows and column p * NR < n of the output `out` describes.
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
    // SAFETY: `for_tiles` builds tiles inside `out` and the job's operands (this function's
    // contract); `isa` is supported, as required.
    for_tiles(job, r0, out, |t, _, _| unsafe { f32_tile(isa, t) })
}

/// One f32 tile with the kernel of `isa`.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, and this CPU supports `isa`.
unsafe fn f32_tile(isa: Isa, t: Tile<f32>) {
    // SAFETY: the caller's contract is the kernels' contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => dispatch_mr!(t.mr, x86::f32_avx512, t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                for half in 0..2 {
                    dispatch_mr_avx2!(t.mr, x86::f32_avx2, t, half)
                }
            }
            _ => portable::f32_tile(t),
        }
    }
}

/// One bf16 tile: AVX512_BF16 on AVX-512, else the reference kernel.
///
/// # Safety
/// The [`Tile`] contract holds for `t`; with `isa` AVX-512 this CPU has AVX512_BF16.
unsafe fn bf16_tile(isa: Isa, t: Tile<u16>) {
    // SAFETY: the caller's contract is the kernels' contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => dispatch_mr!(t.mr, x86::bf16_avx512, t),
            _ => portable::bf16_tile(t),
        }
    }
}

/// One int8 tile: AVX512_VNNI on AVX-512, else the reference kernel.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, `s` covers its rows and columns; with `isa` AVX-512
/// this CPU has AVX512_VNNI.
unsafe fn int8_tile(isa: Isa, t: Tile<u8>, s: Int8Scales) {
    // SAFETY: the caller's contract is the kernels' contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => dispatch_mr!(t.mr, x86::int8_avx512, t, s),
            _ => portable::int8_tile(t, s),
        }
    }
}

fn mr_max(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 if cfg!(target_arch = "x86_64") => MR_AVX512,
        Isa::Avx2 if cfg!(target_arch = "x86_64") => MR_AVX2,
        _ => MR_PORTABLE,
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
    /// `c` must be writable for `rows` rows of `n` values, `ldc` apart, and written by no one
    /// else meanwhile.
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
        assert!(isa <= Isa::best(), "{isa} kernels on a CPU without them");
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
        // SAFETY: the caller guarantees `c`; A was checked above and the panels are ours.
        unsafe { run_f32(isa, &job, 0, &out) }
    }
}

// SAFETY: the raw panel pointer of a job points into weights the job's owner borrows
// immutably for the job's life; tasks only read through it.
unsafe impl<A: Sync> Sync for Job<'_, A> {}
