//! The candle engine: forward passes on candle's tensors, over padded batches. It runs every
//! model on CUDA, f16 anywhere, and on the CPU when [`crate::encoder::cpu::ENGINE_ENV`] asks
//! for it (or for a config the CPU engine lacks).

mod bert;
mod llama;
pub mod pooling;

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::backbone::{Backbone, Padded};
use super::{Architecture, Checkpoint, EncoderOptions, Pooling, Recipe};

/// Load the checkpoint's weights on the device and dtype `opts` resolve to.
pub fn load(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Box<dyn Backbone>> {
    let device = opts.device.open()?;
    let dtype = ck.dtype(opts).to_candle()?;
    // SAFETY: the weight files are mapped read-only and exemplar never writes them; like every
    // safetensors reader, this assumes no other process truncates them while the model is
    // loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&ck.files.weights, dtype, &device) }
        .with_context(|| format!("opening weights in {}", ck.dir.display()))?;
    let backbone = match ck.architecture {
        Architecture::Bert => bert::load(vb, ck),
        // Qwen3, Qwen2 and Mistral are built like Llama: one decoder, switched by its shape.
        _ => llama::load(vb, ck),
    };
    backbone.with_context(|| {
        let arch = ck.architecture;
        format!("loading {arch:?} weights from {}", ck.dir.display())
    })
}

/// One vector per row of padded hidden states `[rows, len, hidden]`, pooled and normalised as
/// `recipe` says, in f32.
fn pool(hidden: &Tensor, p: &Padded, recipe: &Recipe) -> Result<Vec<Vec<f32>>> {
    let (mask, n, len) = (&p.mask, p.rows, p.len);
    let pooled = match recipe.pooling {
        Pooling::Mean => pooling::mean_pool(hidden, mask, n, len)?,
        Pooling::Last => pooling::last_token_pool(hidden, mask, n, len)?,
        Pooling::Cls => pooling::first_token_pool(hidden, mask, n, len)?,
    };
    let pooled = if recipe.normalize {
        pooling::l2_normalize(&pooled)?
    } else {
        pooled
    };
    Ok(pooled.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}
