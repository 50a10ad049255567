//! The CPU engine: BERT and Llama forward passes over plain f32 buffers, with matmul kernels of
//! our own (AVX-512 f32 / bf16 / int8, AVX2 f32, and a portable fallback).
//!
//! Why not candle on the CPU: its matmul is the `gemm` crate, whose AVX-512 kernels need a
//! nightly compiler (so on stable it runs AVX2 at about a third of this CPU's peak), every op
//! allocates and zero-fills a fresh tensor, GELU calls a scalar `erf`, and padded batches compute
//! on padding. Here weights are packed once for the kernels, texts run unpadded (attention per
//! text), buffers are reused across layers, and GELU / softmax use vectorisable polynomial
//! `erf` / `exp`. candle remains the engine on CUDA, and on the CPU with
//! `EXEMPLAR_CPU_ENGINE=candle` (for comparisons).

#[macro_use]
mod simd {
    /// Define `pub fn name(isa, args)` that runs the body compiled for AVX-512, AVX2 or baseline.
    macro_rules! simd_fn {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name(isa: Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) { generic($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) { generic($($arg),*) }
            match isa {
                // SAFETY: `isa` was detected on this CPU (see `Isa::detect`).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => generic($($arg),*),
            }
        }
    };
}
}

pub mod bert;
mod kernels;
pub mod linear;
pub mod llama;
pub mod ops;

use anyhow::{bail, Result};
use std::sync::OnceLock;

pub use linear::Linear;

/// Environment variable that caps the instruction set the CPU kernels use: `avx2` or
/// `portable` (for tests and comparisons; it never raises what the CPU has).
pub const ISA_ENV: &str = "EXEMPLAR_CPU_ISA";
/// Environment variable that selects candle's CPU backend instead of this engine (`candle`).
pub const ENGINE_ENV: &str = "EXEMPLAR_CPU_ENGINE";

/// The instruction set the kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best the CPU offers (AVX-512F, else AVX2 + FMA), capped by [`ISA_ENV`].
    pub fn detect() -> Result<Isa> {
        let cap = match std::env::var(ISA_ENV) {
            Ok(v) => Some(v.parse::<Isa>()?),
            Err(_) => None,
        };
        let best = Self::best();
        Ok(cap.map_or(best, |c| c.min(best)))
    }

    fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }
}

impl std::str::FromStr for Isa {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "avx512" => Ok(Isa::Avx512),
            "avx2" => Ok(Isa::Avx2),
            "portable" => Ok(Isa::Portable),
            other => bail!("{ISA_ENV}={other:?}: expected avx512, avx2 or portable"),
        }
    }
}

/// Matmul precision of the CPU engine. Everything else (norms, softmax, attention, pooling)
/// stays f32, and every matmul accumulates in f32 (int8: exact i32 sums, then scaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Weights and activations rounded to bf16, products summed in f32 (AVX512_BF16).
    BF16,
    /// Weights int8 per output channel, activations int8 per row, quantised on the fly
    /// (AVX512_VNNI).
    Int8,
}

impl Precision {
    /// k values packed together per column: what one dot-product instruction consumes.
    fn k_unit(self) -> usize {
        match self {
            Precision::F32 => 1,
            Precision::BF16 => 2,
            Precision::Int8 => 4,
        }
    }

    /// The precision of the projection that reads the MLP's activation (BERT's `output.dense`,
    /// Llama's `down_proj`): int8 runs it in bf16, because those inputs are heavy-tailed and
    /// per-row int8 loses them (measured on all-MiniLM-L6-v2, 500 MATH problems: min cosine to
    /// f32 0.9983 all-int8, 0.9989 with this one in bf16; smoothing by LayerNorm ranges gave
    /// nothing).
    pub fn for_down_projection(self) -> Precision {
        match self {
            Precision::Int8 => Precision::BF16,
            p => p,
        }
    }

    /// Low precision is only worth it with its instructions: refuse instead of running a slow
    /// emulation. The portable ISA (tests) runs the reference kernels.
    pub fn check(self, isa: Isa) -> Result<()> {
        // int8 also runs the MLP's down projection in bf16 (see `for_down_projection`).
        let needs: &[&str] = match self {
            Precision::F32 => return Ok(()),
            Precision::BF16 => &["avx512bf16"],
            Precision::Int8 => &["avx512vnni", "avx512bf16"],
        };
        let name = if self == Precision::BF16 {
            "bf16"
        } else {
            "int8"
        };
        match isa {
            Isa::Portable => Ok(()),
            Isa::Avx2 => bail!(
                "--dtype {name} on the CPU needs AVX-512 ({}); this CPU (or {ISA_ENV}) allows AVX2 only",
                needs.join(", ")
            ),
            Isa::Avx512 => match needs.iter().find(|f| !has_feature(f)) {
                None => Ok(()),
                Some(f) => bail!(
                    "--dtype {name} on the CPU needs the {f} instructions, which this CPU lacks; use --dtype f32"
                ),
            },
        }
    }
}

fn has_feature(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// One tensor of a checkpoint as f32 values, checked against the expected shape.
fn weights(vb: &candle_nn::VarBuilder, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    use anyhow::Context;
    let t = vb
        .get(shape, name)
        .with_context(|| format!("weight {}.{name}", vb.prefix()))?;
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// First row and length of each text in the concatenated token rows.
fn spans(texts: &[&[u32]]) -> Vec<(usize, usize)> {
    let mut start = 0;
    texts
        .iter()
        .map(|s| {
            let span = (start, s.len());
            start += s.len();
            span
        })
        .collect()
}

/// Activation buffers kept across layers and batches: a forward pass reuses memory that is
/// already mapped instead of faulting in fresh zeroed pages for every op.
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    proj: Vec<f32>,
    ffn: Vec<f32>,
    act: Vec<f32>,
}

impl Workspace {
    /// The first `len` values of `buf`, grown if needed; contents are stale, callers overwrite.
    fn take(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        &mut buf[..len]
    }
}

/// One vector per text from the concatenated hidden states `[tokens, h]`, f32 throughout.
pub fn pool(
    hidden: &[f32],
    h: usize,
    texts: &[&[u32]],
    pooling: crate::encoder::Pooling,
    normalize: bool,
) -> Vec<Vec<f32>> {
    use crate::encoder::Pooling;
    spans(texts)
        .into_iter()
        .map(|(start, len)| {
            let rows = &hidden[start * h..(start + len) * h];
            let mut v = match pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Last => rows[(len - 1) * h..].to_vec(),
                Pooling::Mean => {
                    let mut acc = vec![0f32; h];
                    for row in rows.chunks_exact(h) {
                        for (a, x) in acc.iter_mut().zip(row) {
                            *a += x;
                        }
                    }
                    acc.iter_mut().for_each(|a| *a /= len as f32);
                    acc
                }
            };
            if normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}
