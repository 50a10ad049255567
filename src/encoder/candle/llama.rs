//! Llama-built embedding forward pass on candle (plain Llama checkpoints,
//! nvidia/llama-embed-nemotron-8b's `LlamaBidirectionalModel`, Qwen3 with its per-head q/k
//! norms, Qwen2, Mistral with its sliding window): a [`Decoder`] built from a [`DecoderShape`].
//!
//! Written from candle-nn pieces because candle-transformers' `Llama` is a generation model:
//! hard-wired causal mask, no padding mask, last-position logits only and a KV cache. An
//! embedder needs the opposite: every hidden state, a padding mask, and optionally no causal
//! triangle at all.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, linear_b, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};

use crate::encoder::attention::{blocked_attention, AttentionBlocks, Masks};
use crate::encoder::backbone::{Backbone, Batch};
use crate::encoder::decoder::DecoderShape;
use crate::encoder::llama::LlamaConfig;
use crate::encoder::{Attention, Checkpoint, Recipe};

/// A Llama-built checkpoint's decoder.
pub fn load(vb: VarBuilder, ck: &Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: LlamaConfig = serde_json::from_value(ck.config.clone()).with_context(|| {
        let arch = ck.architecture;
        format!("{}: not a {arch:?} config", ck.files.config.display())
    })?;
    Ok(Box::new(Decoder::load(vb, cfg.shape()?)?))
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    input_norm: RmsNorm,
    post_attention_norm: RmsNorm,
    /// Qwen3's per-head RMSNorms on queries and keys.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
}

pub struct Decoder {
    shape: DecoderShape,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// RoPE inverse frequencies `[1, 1, head_dim / 2]`, f32, on the device.
    inv_freq: Tensor,
    blocks: AttentionBlocks,
    dtype: DType,
    device: Device,
}

/// What every layer of one forward pass shares: rotary tables, masks, shape.
struct BatchContext {
    /// `[batch, len, head_dim / 2]` in the model's dtype.
    cos: Tensor,
    sin: Tensor,
    masks: Masks,
    batch: usize,
    len: usize,
}

impl Decoder {
    pub fn load(vb: VarBuilder, shape: DecoderShape) -> Result<Self> {
        // Checkpoints saved from `LlamaModel` have bare names; `LlamaForCausalLM` prefixes `model.`.
        let vb = if vb.contains_tensor("model.embed_tokens.weight") {
            vb.pp("model")
        } else {
            vb
        };
        let h = shape.hidden_size;
        let embed_tokens = embedding(shape.vocab_size, h, vb.pp("embed_tokens"))?;
        let layers = (0..shape.layers)
            .map(|i| Layer::load(&shape, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(h, shape.rms_norm_eps, vb.pp("norm"))?;
        let freqs = shape.inv_freq.clone();
        let inv_freq = Tensor::from_vec(freqs, (1, 1, shape.head_dim / 2), vb.device())?;
        Ok(Self {
            dtype: vb.dtype(),
            device: vb.device().clone(),
            shape,
            embed_tokens,
            layers,
            norm,
            inv_freq,
            blocks: AttentionBlocks::from_env()?,
        })
    }

    /// Final hidden states `[batch, len, hidden]` (after the last RMSNorm), in f32.
    ///
    /// `ids` and `mask` are row-major `[batch, len]`; `mask[i] = 1` marks a real token. Position
    /// ids count real tokens only, so left and right padding give the same vectors.
    pub fn forward(
        &self,
        ids: &[u32],
        mask: &[u8],
        batch: usize,
        len: usize,
        attention: Attention,
    ) -> Result<Tensor> {
        let dev = &self.device;
        let longest = mask
            .chunks_exact(len.max(1))
            .map(|m| m.iter().filter(|&&x| x != 0).count())
            .max();
        self.shape.check_window(attention, longest.unwrap_or(0))?;
        let input = Tensor::from_slice(ids, (batch, len), dev)?;
        let mut x = self.embed_tokens.forward(&input)?;
        let (cos, sin) = self.rope_tables(mask, batch, len)?;
        let ctx = BatchContext {
            cos,
            sin,
            masks: Masks::new(mask, batch, len, attention, dev)?
                .with_window(self.shape.sliding_window),
            batch,
            len,
        };
        for layer in &self.layers {
            // Reassigning one binding (rather than shadowing) frees each intermediate as soon as
            // the next exists: at long lengths these are the largest tensors besides the scores.
            let mut h = layer.input_norm.forward(&x)?;
            h = self.attention(layer, &h, &ctx)?;
            x = (x + h)?;
            let mut h = layer.post_attention_norm.forward(&x)?;
            h = layer.mlp(&h)?;
            x = (x + h)?;
        }
        Ok(self.norm.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// cos/sin tables `[batch, len, head_dim / 2]`, computed on the device from the position
    /// ids (a `[batch, len]` u32 upload, like the token ids). The angle is an f32 product, as the
    /// reference computes it, so long positions round alike.
    fn rope_tables(&self, mask: &[u8], batch: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let positions = position_ids(mask, batch, len);
        let angles = Tensor::from_vec(positions, (batch, len, 1), &self.device)?
            .to_dtype(DType::F32)?
            .broadcast_mul(&self.inv_freq)?;
        let cos = angles.cos()?.to_dtype(self.dtype)?;
        let sin = angles.sin()?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    fn attention(&self, layer: &Layer, x: &Tensor, ctx: &BatchContext) -> Result<Tensor> {
        let (nh, nkv, hd) = (self.shape.heads, self.shape.kv_heads, self.shape.head_dim);
        let (batch, len) = (ctx.batch, ctx.len);
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            Ok(proj
                .forward(x)?
                .reshape((batch, len, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (mut q, mut k) = (heads(&layer.q, nh)?, heads(&layer.k, nkv)?);
        if let Some((qn, kn)) = &layer.qk_norm {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let q = candle_nn::rotary_emb::rope(&q, &ctx.cos, &ctx.sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &ctx.cos, &ctx.sin)?;
        let v = heads(&layer.v, nkv)?;
        // Scaling q (len x hidden values) is cheaper than scaling the scores (len x len).
        let q = (q * (1.0 / (hd as f64).sqrt()))?;
        let out = blocked_attention(&q, &k, &v, &ctx.masks, self.blocks)?
            .transpose(1, 2)?
            .reshape((batch, len, nh * hd))?;
        Ok(layer.o.forward(&out)?)
    }
}

impl Backbone for Decoder {
    fn hidden_size(&self) -> usize {
        self.shape.hidden_size
    }

    fn wants_padding(&self) -> bool {
        true
    }

    fn attention_blocks(&self) -> AttentionBlocks {
        self.blocks
    }

    fn set_attention_blocks(&mut self, blocks: AttentionBlocks) {
        self.blocks = blocks;
    }

    fn embed(&self, batch: &Batch, recipe: &Recipe) -> Result<Vec<Vec<f32>>> {
        let p = batch.padded()?;
        let hidden = self.forward(&p.ids, &p.mask, p.rows, p.len, recipe.attention)?;
        super::pool(&hidden, p, recipe)
    }
}

impl Layer {
    fn load(shape: &DecoderShape, l: VarBuilder) -> Result<Self> {
        let (h, hd) = (shape.hidden_size, shape.head_dim);
        let (nh, nkv) = (shape.heads, shape.kv_heads);
        let att = l.pp("self_attn");
        let mlp = l.pp("mlp");
        let (qkv_b, o_b, mb) = (shape.qkv_bias, shape.o_bias, shape.mlp_bias);
        let inter = shape.intermediate_size;
        let eps = shape.rms_norm_eps;
        Ok(Self {
            q: linear_b(h, nh * hd, qkv_b, att.pp("q_proj"))?,
            k: linear_b(h, nkv * hd, qkv_b, att.pp("k_proj"))?,
            v: linear_b(h, nkv * hd, qkv_b, att.pp("v_proj"))?,
            o: linear_b(nh * hd, h, o_b, att.pp("o_proj"))?,
            gate: linear_b(h, inter, mb, mlp.pp("gate_proj"))?,
            up: linear_b(h, inter, mb, mlp.pp("up_proj"))?,
            down: linear_b(inter, h, mb, mlp.pp("down_proj"))?,
            input_norm: rms_norm(h, eps, l.pp("input_layernorm"))?,
            post_attention_norm: rms_norm(h, eps, l.pp("post_attention_layernorm"))?,
            qk_norm: match shape.qk_norm {
                true => Some((
                    rms_norm(hd, eps, att.pp("q_norm"))?,
                    rms_norm(hd, eps, att.pp("k_norm"))?,
                )),
                false => None,
            },
        })
    }

    /// SwiGLU MLP, holding at most three `[batch, len, intermediate]` tensors at a time.
    fn mlp(&self, h: &Tensor) -> Result<Tensor> {
        let gated = candle_nn::ops::silu(&self.gate.forward(h)?)?;
        let product = (gated * self.up.forward(h)?)?;
        Ok(self.down.forward(&product)?)
    }
}

/// Position ids that count real tokens only: the number of real tokens before each position.
fn position_ids(mask: &[u8], batch: usize, len: usize) -> Vec<u32> {
    let mut out = vec![0u32; batch * len];
    for b in 0..batch {
        let mut pos = 0u32;
        for t in 0..len {
            out[b * len + t] = pos;
            pos += u32::from(mask[b * len + t] != 0);
        }
    }
    out
}
