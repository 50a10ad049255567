//! The shape of a pre-norm decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU
//! MLP): Llama, and the families built like it (Qwen3, Qwen2, Mistral). Each family's config
//! turns into one of these (see [`super::llama::LlamaConfig::shape`]), and each engine builds
//! its one decoder from it (`cpu/llama.rs`, `candle/llama.rs`), so a new family of this kind
//! needs its config fields and its recipe detection, plus a switch here for what it adds
//! (Qwen3's q/k norms, Mistral's window), not a new forward pass.

use anyhow::{bail, Result};

use super::Attention;

/// Sizes and options of a decoder, engine-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    /// Query heads, key-value heads (grouped-query attention) and the width of one head.
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling already applied.
    pub inv_freq: Vec<f32>,
    /// Biases on the q/k/v projections, on the output projection, on the MLP (Llama declares
    /// the first two together as `attention_bias`; Qwen2 has q/k/v biases only).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// An RMSNorm over each query and key head before the rotary embedding (Qwen3's
    /// `q_norm` / `k_norm`, one `[head_dim]` weight each per layer).
    pub qk_norm: bool,
    /// Each query attends to at most this many keys, itself included (Mistral), in causal
    /// attention; `None` for no limit.
    pub sliding_window: Option<usize>,
}

impl DecoderShape {
    /// Width of the fused q/k/v projection's output.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Refuse bidirectional attention over a text (of `longest` tokens) longer than the sliding
    /// window: the window is implemented for causal attention, how its reference runs it.
    pub fn check_window(&self, attention: Attention, longest: usize) -> Result<()> {
        match self.sliding_window {
            Some(w) if attention == Attention::Bidirectional && longest > w => bail!(
                "sliding_window {w} with bidirectional attention is not implemented (a text has \
                 {longest} tokens): use causal attention or --max-length {w}"
            ),
            _ => Ok(()),
        }
    }
}
