//! Llama-family embedding forward pass (plain Llama checkpoints and
//! nvidia/llama-embed-nemotron-8b's `LlamaBidirectionalModel`).
//!
//! Written from candle-nn pieces because candle-transformers' `Llama` is a generation model:
//! hard-wired causal mask, no padding mask, last-position logits only and a KV cache. An
//! embedder needs the opposite: every hidden state, a padding mask, and optionally no causal
//! triangle at all.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, linear_b, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};
use serde::Deserialize;

use super::attention::{blocked_attention, AttentionBlocks, Masks};
use super::Attention;

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn validate(&self) -> Result<()> {
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim()
            );
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                bail!("hidden_act {act:?} is not supported for Llama (only \"silu\")");
            }
        }
        if let Some(s) = &self.rope_scaling {
            if !matches!(s.rope_type.as_str(), "llama3" | "linear" | "default") {
                bail!(
                    "rope_scaling type {:?} is not supported (supported: llama3, linear, default)",
                    s.rope_type
                );
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies, including Llama 3.1's frequency-dependent scaling.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim();
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / dim as f64))
            .collect();
        let Some(scaling) = &self.rope_scaling else {
            return base.iter().map(|&f| f as f32).collect();
        };
        let factor = scaling.factor.unwrap_or(1.0);
        match scaling.rope_type.as_str() {
            "linear" => base.iter().map(|&f| (f / factor) as f32).collect(),
            "llama3" => {
                let low = scaling.low_freq_factor.unwrap_or(1.0);
                let high = scaling.high_freq_factor.unwrap_or(4.0);
                let old_ctx = scaling.original_max_position_embeddings.unwrap_or(8192) as f64;
                let low_wavelen = old_ctx / low;
                let high_wavelen = old_ctx / high;
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        let scaled = if wavelen < high_wavelen {
                            freq
                        } else if wavelen > low_wavelen {
                            freq / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low) / (high - low);
                            (1.0 - smooth) * freq / factor + smooth * freq
                        };
                        scaled as f32
                    })
                    .collect()
            }
            _ => base.iter().map(|&f| f as f32).collect(),
        }
    }
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
}

pub struct LlamaEncoder {
    cfg: LlamaConfig,
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

impl LlamaEncoder {
    pub fn load(vb: VarBuilder, cfg: LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        // Checkpoints saved from `LlamaModel` have bare names; `LlamaForCausalLM` prefixes `model.`.
        let vb = if vb.contains_tensor("model.embed_tokens.weight") {
            vb.pp("model")
        } else {
            vb
        };
        let h = cfg.hidden_size;
        let embed_tokens = embedding(cfg.vocab_size, h, vb.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(h, cfg.rms_norm_eps, vb.pp("norm"))?;
        let freqs = cfg.rope_inv_freq();
        let inv_freq = Tensor::from_vec(freqs, (1, 1, cfg.head_dim() / 2), vb.device())?;
        Ok(Self {
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg,
            embed_tokens,
            layers,
            norm,
            inv_freq,
            blocks: AttentionBlocks::default(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Query rows per attention block (see [`AttentionBlocks`]).
    pub fn set_attention_blocks(&mut self, blocks: AttentionBlocks) {
        self.blocks = blocks;
    }

    pub fn attention_blocks(&self) -> AttentionBlocks {
        self.blocks
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
        let input = Tensor::from_slice(ids, (batch, len), dev)?;
        let mut x = self.embed_tokens.forward(&input)?;
        let (cos, sin) = self.rope_tables(mask, batch, len)?;
        let ctx = BatchContext {
            cos,
            sin,
            masks: Masks::new(mask, batch, len, attention, dev)?,
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
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let (batch, len) = (ctx.batch, ctx.len);
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            Ok(proj
                .forward(x)?
                .reshape((batch, len, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = candle_nn::rotary_emb::rope(&heads(&layer.q, nh)?, &ctx.cos, &ctx.sin)?;
        let k = candle_nn::rotary_emb::rope(&heads(&layer.k, nkv)?, &ctx.cos, &ctx.sin)?;
        let v = heads(&layer.v, nkv)?;
        // Scaling q (len x hidden values) is cheaper than scaling the scores (len x len).
        let q = (q * (1.0 / (hd as f64).sqrt()))?;
        let out = blocked_attention(&q, &k, &v, &ctx.masks, self.blocks)?
            .transpose(1, 2)?
            .reshape((batch, len, nh * hd))?;
        Ok(layer.o.forward(&out)?)
    }
}

impl Layer {
    fn load(cfg: &LlamaConfig, l: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let att = l.pp("self_attn");
        let mlp = l.pp("mlp");
        let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
        let inter = cfg.intermediate_size;
        Ok(Self {
            q: linear_b(h, nh * hd, ab, att.pp("q_proj"))?,
            k: linear_b(h, nkv * hd, ab, att.pp("k_proj"))?,
            v: linear_b(h, nkv * hd, ab, att.pp("v_proj"))?,
            o: linear_b(nh * hd, h, ab, att.pp("o_proj"))?,
            gate: linear_b(h, inter, mb, mlp.pp("gate_proj"))?,
            up: linear_b(h, inter, mb, mlp.pp("up_proj"))?,
            down: linear_b(inter, h, mb, mlp.pp("down_proj"))?,
            input_norm: rms_norm(h, cfg.rms_norm_eps, l.pp("input_layernorm"))?,
            post_attention_norm: rms_norm(h, cfg.rms_norm_eps, l.pp("post_attention_layernorm"))?,
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
