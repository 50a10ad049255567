//! Llama-family embedding forward pass (plain Llama checkpoints and
//! nvidia/llama-embed-nemotron-8b's `LlamaBidirectionalModel`).
//!
//! Written from candle-nn pieces because candle-transformers' `Llama` is a generation model:
//! hard-wired causal mask, no padding mask, last-position logits only and a KV cache. An
//! embedder needs the opposite: every hidden state, a padding mask, and optionally no causal
//! triangle at all.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, linear_b, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};
use serde::Deserialize;

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
        if self.num_attention_heads % self.kv_heads() != 0 {
            bail!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            );
        }
        if self.head_dim() % 2 != 0 {
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
    inv_freq: Vec<f32>,
    dtype: DType,
    device: Device,
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
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let embed_tokens = embedding(cfg.vocab_size, h, vb.pp("embed_tokens"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("layers.{i}"));
            let att = l.pp("self_attn");
            let mlp = l.pp("mlp");
            let ab = cfg.attention_bias;
            let mb = cfg.mlp_bias;
            layers.push(Layer {
                q: linear_b(h, nh * hd, ab, att.pp("q_proj"))?,
                k: linear_b(h, nkv * hd, ab, att.pp("k_proj"))?,
                v: linear_b(h, nkv * hd, ab, att.pp("v_proj"))?,
                o: linear_b(nh * hd, h, ab, att.pp("o_proj"))?,
                gate: linear_b(h, cfg.intermediate_size, mb, mlp.pp("gate_proj"))?,
                up: linear_b(h, cfg.intermediate_size, mb, mlp.pp("up_proj"))?,
                down: linear_b(cfg.intermediate_size, h, mb, mlp.pp("down_proj"))?,
                input_norm: rms_norm(h, cfg.rms_norm_eps, l.pp("input_layernorm"))?,
                post_attention_norm: rms_norm(
                    h,
                    cfg.rms_norm_eps,
                    l.pp("post_attention_layernorm"),
                )?,
            });
        }
        let norm = rms_norm(h, cfg.rms_norm_eps, vb.pp("norm"))?;
        let inv_freq = cfg.rope_inv_freq();
        Ok(Self {
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg,
            embed_tokens,
            layers,
            norm,
            inv_freq,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
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
        let additive = attention_bias(mask, batch, len, attention, dev)?;

        for layer in &self.layers {
            let residual = &x;
            let h = layer.input_norm.forward(&x)?;
            let h = self.attention(layer, &h, &cos, &sin, &additive, batch, len)?;
            let x1 = (residual + h)?;
            let h = layer.post_attention_norm.forward(&x1)?;
            let h = layer.down.forward(
                &(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?,
            )?;
            x = (x1 + h)?;
        }
        Ok(self.norm.forward(&x)?.to_dtype(DType::F32)?)
    }

    fn rope_tables(&self, mask: &[u8], batch: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = vec![0f32; batch * len * half];
        let mut sin = vec![0f32; batch * len * half];
        for b in 0..batch {
            let mut pos = 0f32;
            for t in 0..len {
                let real = mask[b * len + t] != 0;
                let base = (b * len + t) * half;
                for (j, &f) in self.inv_freq.iter().enumerate() {
                    // f32 product, as the reference computes it, so long positions round alike.
                    let angle = pos * f;
                    cos[base + j] = angle.cos();
                    sin[base + j] = angle.sin();
                }
                if real {
                    pos += 1.0;
                }
            }
        }
        let dev = &self.device;
        let cos = Tensor::from_vec(cos, (batch, len, half), dev)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (batch, len, half), dev)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        additive: &Tensor,
        batch: usize,
        len: usize,
    ) -> Result<Tensor> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let group = nh / nkv;
        let q = layer
            .q
            .forward(x)?
            .reshape((batch, len, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = layer
            .k
            .forward(x)?
            .reshape((batch, len, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = layer
            .v
            .forward(x)?
            .reshape((batch, len, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;

        // Grouped-query attention without copying K/V: the `group` query heads sharing one KV
        // head are stacked along the sequence axis, so one batched matmul serves them all.
        let q = q.reshape((batch, nkv, group * len, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .reshape((batch, nh, len, len))?
            .broadcast_add(additive)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?
            .to_dtype(self.dtype)?
            .reshape((batch, nkv, group * len, len))?;
        let out = probs
            .matmul(&v)?
            .reshape((batch, nh, len, hd))?
            .transpose(1, 2)?
            .reshape((batch, len, nh * hd))?;
        Ok(layer.o.forward(&out)?)
    }
}

/// Additive attention bias `[batch, 1, len, len]`: 0 where a query may attend to a key, the
/// most negative f32 where it may not (padding keys; future keys in causal mode). One value per
/// cell, never a sum of two, so no row can overflow to -inf and turn the softmax into NaN.
fn attention_bias(
    mask: &[u8],
    batch: usize,
    len: usize,
    attention: Attention,
    dev: &Device,
) -> Result<Tensor> {
    let mut bias = vec![0f32; batch * len * len];
    for b in 0..batch {
        let row_mask = &mask[b * len..(b + 1) * len];
        for q in 0..len {
            let row = &mut bias[(b * len + q) * len..(b * len + q + 1) * len];
            for (k, cell) in row.iter_mut().enumerate() {
                let hidden = row_mask[k] == 0 || (attention == Attention::Causal && k > q);
                if hidden {
                    *cell = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(bias, (batch, 1, len, len), dev).context("building the attention mask")
}
