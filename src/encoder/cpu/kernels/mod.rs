//! Matmul microkernels: one `MR x 32` tile of `C = A * B` per call, where A is row-major
//! activations (f32, or bf16 / int8 copies of them) and B one packed 32-column panel of a weight
//! matrix (see [`super::linear`] for the layouts).
//!
//! [`portable`] holds plain-Rust kernels that build everywhere (the fallback, and the
//! reference the others are tested against); [`x86`] the AVX-512 / AVX2 intrinsic kernels,
//! compiled on x86-64 only. Every kernel writes the first `nr` columns of its tile (the last
//! panel of a matrix whose width is not a multiple of 32 is zero-padded) and starts its sums
//! from the bias or zero.

pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Columns per packed panel (two AVX-512 registers of f32).
pub const NR: usize = 32;
/// Rows per AVX-512 tile: 12 x 2 accumulators + 2 panel registers + a broadcast fit in 32 zmm.
pub const MR_AVX512: usize = 12;
/// Rows per AVX2 tile, over 16 columns at a time: 6 x 2 accumulators in 16 ymm.
pub const MR_AVX2: usize = 6;
/// Rows per portable tile.
pub const MR_PORTABLE: usize = 8;

/// Where one tile's inputs and output live. Raw pointers: tiles of one matrix are written by
/// several threads at once, each to its own rows.
///
/// Every kernel taking a `Tile` is `unsafe` and requires: `a` readable for `mr` rows of `k`
/// values, `lda` apart; `b` readable for one packed panel of `k` (padded) rows; `c` writable
/// for `mr` rows of `nr` values, `ldc` apart, and written by no one else meanwhile; `bias`
/// null or readable for `nr` values.
#[derive(Clone, Copy)]
pub struct Tile<A> {
    /// First row of A for this tile, `lda` elements apart.
    pub a: *const A,
    pub lda: usize,
    /// The packed panel.
    pub b: *const u8,
    /// Inner dimension, padded to the packing unit (1, 2 or 4).
    pub k: usize,
    /// First output element, `ldc` apart per row.
    pub c: *mut f32,
    pub ldc: usize,
    /// Valid rows (<= MR) and columns (<= 32).
    pub mr: usize,
    pub nr: usize,
    /// 32 bias values for these columns, or null.
    pub bias: *const f32,
}

/// What an int8 tile needs besides the tile. Activations are stored unsigned (`vpdpbusd`
/// multiplies unsigned by signed bytes) with a zero point per row: `x = (a - zero) * scale`,
/// so a one-sided row (after GELU) uses all 256 levels. The sum of `a * w` then carries
/// `zero x` the column's sum of `w`, which the epilogue removes. Pointers must be readable for
/// the tile's `mr` rows and `nr` columns.
#[derive(Clone, Copy)]
pub struct Int8Scales {
    pub row_scale: *const f32,
    pub row_zero: *const i32,
    pub col_scale: *const f32,
    pub col_sum: *const i32,
}
