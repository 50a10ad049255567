//! Plain-Rust kernels with the same inputs and outputs as the intrinsic ones: the fallback on
//! every CPU, and the reference the intrinsic kernels are tested against.

use super::{Int8Scales, Tile, NR};
use crate::encoder::cpu::linear::from_bf16;

/// # Safety
/// `c` of `t` is writable at row `r`, column `j` (the [`Tile`] contract, `r < mr`, `j < nr`).
unsafe fn store(t: &Tile<impl Copy>, r: usize, j: usize, v: f32) {
    // SAFETY: in bounds by this function's contract.
    unsafe { *t.c.add(r * t.ldc + j) = v }
}

/// # Safety
/// `bias` of `t` is null or readable at column `j < nr`.
unsafe fn bias(t: &Tile<impl Copy>, j: usize) -> f32 {
    if t.bias.is_null() {
        0.0
    } else {
        // SAFETY: not null, and in bounds by this function's contract.
        unsafe { *t.bias.add(j) }
    }
}

/// f32 tile: `mr` rows, `nr` columns.
///
/// # Safety
/// The [`Tile`] contract holds for `t`.
pub unsafe fn f32_tile(t: Tile<f32>) {
    let b = t.b as *const f32;
    for r in 0..t.mr {
        for j in 0..t.nr {
            // SAFETY: r < mr, j < nr and k < t.k index inside the tile (the contract).
            unsafe {
                let mut s = bias(&t, j);
                for k in 0..t.k {
                    s = (*t.a.add(r * t.lda + k)).mul_add(*b.add(k * NR + j), s);
                }
                store(&t, r, j, s);
            }
        }
    }
}

/// bf16 tile: A in bf16, the panel `[k/2][32][2]`, sums in f32.
///
/// # Safety
/// The [`Tile`] contract holds for `t`.
pub unsafe fn bf16_tile(t: Tile<u16>) {
    let b = t.b as *const u16;
    for r in 0..t.mr {
        for j in 0..t.nr {
            // SAFETY: r < mr, j < nr and k < t.k index inside the tile (the contract).
            unsafe {
                let mut s = bias(&t, j);
                for k in 0..t.k {
                    let a = from_bf16(*t.a.add(r * t.lda + k));
                    s += a * from_bf16(*b.add((k / 2) * NR * 2 + j * 2 + k % 2));
                }
                store(&t, r, j, s);
            }
        }
    }
}

/// int8 tile: A in u8 with a zero point per row, the panel `[k/4][32][4]` signed bytes.
///
/// # Safety
/// The [`Tile`] contract holds for `t`, and `sc`'s pointers are readable for its rows and
/// columns.
pub unsafe fn int8_tile(t: Tile<u8>, sc: Int8Scales) {
    let b = t.b as *const i8;
    for r in 0..t.mr {
        for j in 0..t.nr {
            // SAFETY: r < mr, j < nr and k < t.k index inside the tile and the scales (the
            // contract).
            unsafe {
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
