//! The Llama family's config.json (plain Llama checkpoints and nvidia/llama-embed-nemotron-8b's
//! `LlamaBidirectionalModel`), shared by both engines: what it declares, checked, and turned
//! into the [`DecoderShape`] the engines' decoders are built from.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::config::{ModelConfig, Rope};
use super::decoder::DecoderShape;
use super::recipe::Architecture;

/// The sizes and settings of a Llama config.json, in either layout (see [`super::config`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// Rotary settings, from `rope_parameters` or `rope_theta` + `rope_scaling`.
    pub rope: Rope,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

/// The sizes, as config.json spells them.
#[derive(Deserialize)]
struct Sizes {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
}

fn default_rms_eps() -> f64 {
    1e-6
}

impl TryFrom<serde_json::Value> for LlamaConfig {
    type Error = anyhow::Error;

    /// The sizes, and the settings resolved (and refused when unsupported) by
    /// [`ModelConfig::resolve`].
    fn try_from(config: serde_json::Value) -> Result<Self> {
        let settings = ModelConfig::resolve(&config, Architecture::Llama)?;
        let s: Sizes = serde_json::from_value(config)?;
        Ok(Self {
            vocab_size: s.vocab_size,
            hidden_size: s.hidden_size,
            intermediate_size: s.intermediate_size,
            num_hidden_layers: s.num_hidden_layers,
            num_attention_heads: s.num_attention_heads,
            num_key_value_heads: s.num_key_value_heads,
            head_dim: s.head_dim,
            rms_norm_eps: s.rms_norm_eps,
            rope: settings
                .rope
                .context("a Llama config without rotary settings")?,
            attention_bias: settings.attention_bias,
            mlp_bias: settings.mlp_bias,
        })
    }
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
        Ok(())
    }

    /// RoPE inverse frequencies, including Llama 3.1's frequency-dependent scaling.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        self.rope.inv_freq(self.head_dim())
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
