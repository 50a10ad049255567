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
