//! `--model` and the recipe flags shared by `embed encode`, `info` and `extract`.

use anyhow::Result;
use clap::Args;
use std::path::Path;

use super::names;
use crate::encoder::{
    Attention, DType, Device, Encoder, EncoderOptions, PaddingSide, Pooling, RecipeOverrides,
    DEFAULT_INSTRUCTION,
};

/// Which model, where it runs, and how texts become vectors. Every recipe flag defaults to what
/// the checkpoint's own files say.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model folder (config.json, tokenizer.json, *.safetensors) or hub id `org/name` found in
    /// the Hugging Face cache. Default: $EXEMPLAR_MODEL, else the all-MiniLM-L6-v2 folder that
    /// scripts/fetch-models.sh installs under .cache/models/.
    #[arg(long, value_name = "DIR|ORG/NAME")]
    pub model: Option<String>,
    /// `cpu`, or `cuda:N` with a build that has the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Weight and activation precision: f32, bf16 or f16; on the CPU also int8 (int8 weights,
    /// per-row int8 activations; needs AVX512_VNNI and AVX512_BF16). bf16 on the CPU needs
    /// AVX512_BF16. Pooling is always done in f32
    /// [default: f32 on CPU; on CUDA the checkpoint's torch_dtype from config.json].
    #[arg(long, visible_alias = "precision")]
    pub dtype: Option<DType>,
    /// Attention mask [default: from the checkpoint].
    #[arg(long, value_parser = names::<Attention>(Attention::NAMES))]
    pub attention: Option<Attention>,
    /// Pooling: mean over real tokens, last real token, or the first ([CLS]) token
    /// [default: from the checkpoint].
    #[arg(long, value_parser = names::<Pooling>(Pooling::NAMES))]
    pub pooling: Option<Pooling>,
    /// Do not L2-normalise the vectors (normalised by default, for cosine search).
    #[arg(long)]
    pub no_normalize: bool,
    /// Append the EOS token to every input (recipes that pool the last token on an EOS).
    #[arg(long)]
    pub append_eos: bool,
    /// Truncate inputs to this many tokens, special tokens included [default: the model's].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Task instruction inserted into the query template.
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    pub instruction: String,
    /// Query template with {instruction} and {text}; `\n` is a newline
    /// [default: from config_sentence_transformers.json, else "Instruct: {instruction}\nQuery: {text}"].
    #[arg(long)]
    pub query_template: Option<String>,
    /// Document template with {text} [default: the text as it is].
    #[arg(long)]
    pub document_template: Option<String>,
    /// Pad batches on the left or right [default: left for decoders, right for BERT]; the
    /// vectors do not depend on it.
    #[arg(long, value_parser = names::<PaddingSide>(PaddingSide::NAMES))]
    pub padding_side: Option<PaddingSide>,
    /// Matryoshka truncation: keep the first N components of each vector and re-normalise
    /// (for models trained for it, such as Qwen3-Embedding); recorded in the manifest, so an
    /// index embeds its queries the same way [default: the whole vector].
    #[arg(long, value_name = "N")]
    pub dim: Option<usize>,
    /// Padded-token budget of one forward pass; texts are sorted by length and packed under it
    /// [default: 8192 on CPU, 16384 on GPU].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
}

impl ModelArgs {
    pub fn model_spec(&self) -> Result<String> {
        match &self.model {
            Some(m) => Ok(m.clone()),
            None => default_model(),
        }
    }

    pub fn options(&self) -> EncoderOptions {
        let unescape = |s: &String| s.replace("\\n", "\n");
        EncoderOptions {
            device: self.device,
            dtype: self.dtype,
            max_batch_tokens: self.max_batch_tokens,
            overrides: RecipeOverrides {
                attention: self.attention,
                pooling: self.pooling,
                normalize: self.no_normalize.then_some(false),
                append_eos: self.append_eos.then_some(true),
                max_length: self.max_length,
                document_template: self.document_template.as_ref().map(unescape),
                query_template: self.query_template.as_ref().map(unescape),
                instruction: Some(self.instruction.clone()),
                padding_side: self.padding_side,
                truncate_dim: self.dim,
            },
        }
    }

    pub fn load(&self) -> Result<Encoder> {
        Encoder::load(&self.model_spec()?, &self.options())
    }
}

/// The model used when `--model` is not given.
pub fn default_model() -> Result<String> {
    if let Ok(m) = std::env::var("EXEMPLAR_MODEL") {
        return Ok(m);
    }
    let cache = std::env::var("EXEMPLAR_CACHE").unwrap_or_else(|_| ".cache".into());
    let dir = Path::new(&cache).join("models/all-MiniLM-L6-v2");
    if dir.is_dir() {
        return Ok(dir.display().to_string());
    }
    anyhow::bail!(
        "no --model given and the default model is not installed at {}: run scripts/fetch-models.sh \
         (or set EXEMPLAR_MODEL)",
        dir.display()
    )
}
