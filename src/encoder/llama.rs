//! The config.json of every decoder built like Llama, shared by both engines: Llama itself (plain
//! checkpoints and nvidia/llama-embed-nemotron-8b's `LlamaBidirectionalModel`), Qwen3, Qwen2
//! and Mistral. What it declares, checked, and turned into the [`DecoderShape`] the engines'
//! decoders are built from; the settings beyond the shapes come from [`ModelConfig::resolve`],
//! which knows what each architecture has.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::config::{ModelConfig, Rope};
use super::decoder::DecoderShape;
use super::recipe::Architecture;

/// The sizes and settings of a Llama-built decoder's config.json, in either layout (see
/// [`super::config`]); the architecture is config.json's `model_type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct LlamaConfig {
    pub architecture: Architecture,
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
    /// Tokens a query looks back (Mistral), when the config limits it.
    pub sliding_window: Option<usize>,
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
        let path = std::path::Path::new("config.json");
        let architecture = super::recipe::detect_architecture(path, &config)?;
        if !architecture.is_decoder() {
            bail!("{architecture:?} is not a decoder built like Llama");
        }
        let settings = ModelConfig::resolve(&config, architecture)?;
        let mut s: Sizes = serde_json::from_value(config)?;
        if architecture == Architecture::Qwen3 {
            // Qwen3's default, not hidden_size / heads.
            s.head_dim = s.head_dim.or(Some(128));
        }
        let window = settings
            .implements_sliding_window()
            .then_some(settings.sliding_window)
            .flatten();
        Ok(Self {
            architecture,
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
            sliding_window: window,
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
            // Qwen2's biases are on q, k and v only.
            o_bias: self.attention_bias && self.architecture != Architecture::Qwen2,
            mlp_bias: self.mlp_bias,
            qk_norm: self.architecture == Architecture::Qwen3,
            sliding_window: self.sliding_window,
        })
    }
}
