//! Matmul throughput of the CPU engine's kernels against candle's CPU matmul (the `gemm`
//! crate) at the shapes of an embedding model's linear layers, same process, same threads.
//!
//!   cargo run --release --example matmul_bench [-- ROWS]
//!
//! Prints GFLOP/s per shape and precision. ROWS (default 2048) is the tokens of one batch.

use candle_core::{Device, Tensor};
use exemplar::encoder::cpu::{Isa, Linear, Precision};
use std::time::Instant;

fn gflops(rows: usize, n: usize, k: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut reps = 0;
    while start.elapsed().as_secs_f64() < 1.0 {
        f();
        reps += 1;
    }
    2.0 * (rows * n * k * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::args().nth(1).map_or(Ok(2048), |s| s.parse())?;
    let best = Isa::detect()?;
    println!(
        "rows {rows}, threads {}, best ISA {best:?}",
        rayon::current_num_threads()
    );
    println!("| n x k | candle f32 | ours f32 AVX2 | ours f32 | ours bf16 | ours int8 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (n, k) in [
        (1152, 384),
        (384, 384),
        (1536, 384),
        (384, 1536),
        (1536, 576),
    ] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 104729 % 997) as f32 - 498.0) * 1e-3)
            .collect();
        let mut out = vec![0f32; rows * n];
        let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu)?.t()?;
        let xt = Tensor::from_slice(&x, (rows, k), &Device::Cpu)?;
        let candle = gflops(rows, n, k, || {
            xt.matmul(&wt).unwrap();
        });
        let mut row = format!("| {n} x {k} | {candle:.0} |");
        for (p, isa) in [
            (Precision::F32, Isa::Avx2),
            (Precision::F32, best),
            (Precision::BF16, best),
            (Precision::Int8, best),
        ] {
            match Linear::new(&w, (n, k), None, p, isa.min(best)) {
                Ok(l) => {
                    let g = gflops(rows, n, k, || l.forward(&x, rows, &mut out));
                    row += &format!(" {g:.0} |");
                }
                Err(_) => row += " - |",
            }
        }
        println!("{row}");
    }
    Ok(())
}
