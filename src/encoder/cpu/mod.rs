//! The CPU engine: BERT and Llama-built decoder (Llama, Qwen3, Qwen2, Mistral) forward passes over plain f32 buffers, with matmul kernels of
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
    /// Define `pub fn name(isa, args)` that runs the body compiled for AVX-512, AVX2 or baseline
    /// (on targets other than x86-64, baseline only).
    macro_rules! simd_fn {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name(isa: Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            /// # Safety
            /// The CPU has the enabled features.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) { generic($($arg),*) }
            /// # Safety
            /// The CPU has the enabled features.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) { generic($($arg),*) }
            match isa {
                // SAFETY: an `Isa` above portable comes from `Isa::detect` on this CPU (and
                // `Linear::new` refuses one the CPU lacks), so its features are there.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 if isa <= Isa::best() => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 if isa <= Isa::best() => unsafe { avx2($($arg),*) },
                _ => generic($($arg),*),
            }
        }
    };
}
}

pub mod bert;
mod isa;
mod kernels;
pub mod linear;
pub mod llama;
pub mod ops;

use anyhow::{Context, Result};
use candle_nn::VarBuilder;

pub use isa::{Isa, Precision, ISA_ENV};
pub use linear::Linear;

use super::backbone::Backbone;
use super::{Architecture, Checkpoint, DType, EncoderOptions};

/// Environment variable that selects candle's CPU backend instead of this engine (`candle`).
pub const ENGINE_ENV: &str = "EXEMPLAR_CPU_ENGINE";

/// The CPU engine for f32, bf16 and int8 on the CPU (unless [`ENGINE_ENV`] asks for candle, or
/// the config uses something the engine lacks); `None` means candle runs it.
pub fn load(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Option<Box<dyn Backbone>>> {
    let precision = match ck.dtype(opts) {
        DType::F32 => Precision::F32,
        DType::BF16 => Precision::BF16,
        DType::Int8 => Precision::Int8,
        DType::F16 => return Ok(None),
    };
    let candle = std::env::var(ENGINE_ENV).is_ok_and(|v| v == "candle");
    if !opts.device.is_cpu() || (candle && precision == Precision::F32) {
        return Ok(None);
    }
    let isa = Isa::detect()?;
    precision.check(isa)?;
    // SAFETY: the weight files are mapped read-only and exemplar never writes them; like every
    // safetensors reader, this assumes no other process truncates them while they are read
    // (the engine copies every tensor out before returning).
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &ck.files.weights,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
    }
    .with_context(|| format!("opening weights in {}", ck.dir.display()))?;
    let engine = Engine { precision, isa };
    let backbone = match ck.architecture {
        Architecture::Bert => bert::load(vb, ck, engine),
        // Qwen3, Qwen2 and Mistral are built like Llama: one decoder, switched by its shape.
        _ => llama::load(vb, ck, engine),
    };
    backbone.with_context(|| format!("loading weights from {}", ck.dir.display()))
}

/// What every CPU backbone is built for.
#[derive(Debug, Clone, Copy)]
pub struct Engine {
    pub precision: Precision,
    pub isa: Isa,
}

impl Engine {
    /// A linear layer `[n, k]` (PyTorch's layout) at the engine's precision.
    fn linear(&self, w: &[f32], nk: (usize, usize), bias: Option<&[f32]>) -> Result<Linear> {
        Linear::new(w, nk, bias, self.precision, self.isa)
    }

    /// The MLP's down projection (see [`Precision::for_down_projection`]).
    fn down_linear(&self, w: &[f32], nk: (usize, usize), bias: Option<&[f32]>) -> Result<Linear> {
        Linear::new(w, nk, bias, self.precision.for_down_projection(), self.isa)
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
