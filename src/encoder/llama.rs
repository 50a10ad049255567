//! The Llama family's config.json (plain Llama checkpoints and nvidia/llama-embed-nemotron-8b's
//! `LlamaBidirectionalModel`), shared by both engines: what it declares, checked, and turned
//! into the [`DecoderShape`] the engines' decoders are built from.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::decoder::DecoderShape;

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

impl LlamaConfig {
    /// The decoder these settings describe (checked by [`LlamaConfig::validate`] first).
    pub fn shape(&self) -> Result<DecoderShape> {
        self.validate()?;
        Ok(DecoderShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.kv_heads(),
            head_dim: self.head_dim(),
            rms_norm_eps: self.rms_norm_eps,
            inv_freq: self.rope_inv_freq(),
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
        })
    }
}
