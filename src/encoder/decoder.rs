//! The shape of a pre-norm decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU
//! MLP): Llama, and the families built like it. Each family's config turns into one of these,
//! and each engine builds its decoder from it, so a new family of this kind needs its config
//! and its recipe detection, not a new forward pass.

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
}

impl DecoderShape {
    /// Width of the fused q/k/v projection's output.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}
