//! config.json, read in one place: both layouts transformers writes (before 5: `rope_theta` +
//! `rope_scaling` and `torch_dtype`; from 5: `rope_parameters` and `dtype`), for every
//! architecture, resolved into the settings that decide the vectors besides the shapes.
//!
//! A config value that changes the computation and is not implemented is refused with its
//! field name and value, never ignored: a misread config gives no error, only wrong vectors.
//!
//! Every field exemplar knows falls in one of three lists (see docs/models-config.md):
//! - [`READ`]: used as it is (shapes, norms' epsilon, positions, special tokens, the recipe).
//! - [`REFUSED_IF_UNSUPPORTED`]: read, and refused when set to what exemplar does not
//!   implement (checked here, or against the weights by [`ModelConfig::check_weights`], or
//!   against the longest input by [`ModelConfig::check_length`]).
//! - [`IGNORED`]: training or generation settings that do not change an embedding.
//!
//! A field in none of the lists is not read.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

use super::recipe::Architecture;
use super::DType;

mod rope;
#[cfg(test)]
mod tests;

pub use rope::{Llama3Rope, Rope, RopeType};

/// Fields used as they are.
pub const READ: &[&str] = &[
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "layer_norm_eps",
    "max_position_embeddings",
    "type_vocab_size",
    "torch_dtype",
    "dtype",
    "pooling",
    "eos_token_id",
    "pad_token_id",
];

/// Fields read and refused when they ask for what is not implemented.
pub const REFUSED_IF_UNSUPPORTED: &[&str] = &[
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "head_dim",
    "sliding_window",
    "use_sliding_window",
    "layer_types",
    "position_embedding_type",
    "is_decoder",
    "attn_logit_softcapping",
];

/// Fields that do not change an embedding: dropout, initialisation, caching and generation
/// settings, tensor-parallel slicing (`pretraining_tp` computes the same products), the output
/// head's tying (embedding never runs the head), bookkeeping.
pub const IGNORED: &[&str] = &[
    "_name_or_path",
    "transformers_version",
    "attention_dropout",
    "attention_probs_dropout_prob",
    "hidden_dropout_prob",
    "classifier_dropout",
    "initializer_range",
    // Qwen2/Qwen3: which layers slide when `use_sliding_window` is true (refused then).
    "max_window_layers",
    "gradient_checkpointing",
    "use_cache",
    "bos_token_id",
    "tie_word_embeddings",
    "pretraining_tp",
    "chunk_size_feed_forward",
];

/// What config.json says, beyond the shapes, resolved and checked: the settings that decide the
/// vectors. Part of the model's fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_act: String,
    /// Rotary positions (decoders); `None` for absolute position embeddings (BERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope: Option<Rope>,
    /// Tokens a query may look back, when the config limits it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Biases on the attention projections and on the MLP (decoders): as declared for Llama and
    /// Qwen3, always on q/k/v (never on o) for Qwen2, never for Mistral.
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// The dtype the checkpoint declares (`dtype`, or `torch_dtype` before transformers 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_dtype: Option<DType>,
}

impl ModelConfig {
    /// Resolve and check `config` (read from `path`) for `architecture`.
    pub fn read(path: &Path, config: &Value, architecture: Architecture) -> Result<Self> {
        Self::resolve(config, architecture).with_context(|| format!("{}", path.display()))
    }

    /// [`ModelConfig::read`] without a path for its errors.
    pub fn resolve(config: &Value, architecture: Architecture) -> Result<Self> {
        let obj = config
            .as_object()
            .context("config.json is not a JSON object")?;
        let (hidden_act, rope) = match architecture {
            // candle implements relu; the CPU engine runs gelu only (and leaves relu to candle).
            Architecture::Bert => (activation(obj, &["gelu", "relu"])?, None),
            _ => (activation(obj, &["silu"])?, Some(rope::rope(obj)?)),
        };
        refuse_unsupported(obj, architecture)?;
        let (attention_bias, mlp_bias) = match architecture {
            // transformers' Qwen2 has q/k/v biases whatever the config says, Mistral none.
            Architecture::Qwen2 => (true, false),
            Architecture::Mistral => (false, false),
            // Qwen3's MLP has no bias field (and no bias).
            Architecture::Qwen3 => (flag(obj, "attention_bias")?, false),
            _ => (flag(obj, "attention_bias")?, flag(obj, "mlp_bias")?),
        };
        Ok(Self {
            architecture,
            hidden_act,
            rope,
            sliding_window: sliding_window(obj, architecture)?,
            attention_bias,
            mlp_bias,
            checkpoint_dtype: checkpoint_dtype(config),
        })
    }

    /// Whether the engines run this architecture's sliding window (Mistral's, on every layer).
    pub fn implements_sliding_window(&self) -> bool {
        self.architecture == Architecture::Mistral
    }

    /// Refuse a sliding window shorter than the longest input (`max_length` tokens) where it is
    /// not implemented: up to the window it equals full attention.
    pub fn check_length(&self, max_length: usize) -> Result<()> {
        if self.implements_sliding_window() {
            return Ok(());
        }
        match self.sliding_window {
            Some(w) if w < max_length => bail!(
                "sliding_window {w} is shorter than the longest input ({max_length} tokens) and \
                 sliding-window attention is not implemented: pass --max-length {w} or less"
            ),
            _ => Ok(()),
        }
    }

    /// Refuse what config.json declares but the weights contradict: biases declared but absent
    /// (or present but undeclared, which would be dropped), and a `head_dim` the projections do
    /// not have. `shapes` maps tensor names (prefix `model.` removed) to shapes; a checkpoint
    /// without layer 0's projections is left to the loader to refuse.
    pub fn check_weights(
        &self,
        config: &Value,
        shapes: &HashMap<String, Vec<usize>>,
    ) -> Result<()> {
        if !self.architecture.is_decoder() {
            return Ok(());
        }
        let Some(q) = shapes.get("layers.0.self_attn.q_proj.weight") else {
            return Ok(());
        };
        let get = |k: &str| config.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let heads = get("num_attention_heads").unwrap_or(1).max(1);
        let hidden = get("hidden_size").unwrap_or(0);
        let head_dim = get("head_dim").unwrap_or(hidden / heads);
        if q.first() != Some(&(heads * head_dim)) {
            bail!(
                "head_dim {head_dim} ({}) does not match the weights: \
                 layers.0.self_attn.q_proj.weight is {q:?}, not [{} x {hidden}] for {heads} heads",
                if get("head_dim").is_some() {
                    "from config.json"
                } else {
                    "hidden_size / num_attention_heads"
                },
                heads * head_dim
            );
        }
        let declared = [
            ("attention_bias", self.attention_bias, "self_attn.q_proj"),
            ("mlp_bias", self.mlp_bias, "mlp.gate_proj"),
        ];
        // Per-head q/k norms are Qwen3's; weights that carry them elsewhere would be dropped.
        let qk_norm = "layers.0.self_attn.q_norm.weight";
        match (self.architecture, shapes.contains_key(qk_norm)) {
            (Architecture::Qwen3, false) => bail!("a qwen3 checkpoint without {qk_norm}"),
            (arch, true) if arch != Architecture::Qwen3 => bail!(
                "the weights have {qk_norm} (Qwen3's q/k norms) but config.json declares \
                 {arch:?}: they would be ignored"
            ),
            _ => {}
        }
        for (field, declared, proj) in declared {
            let bias = format!("layers.0.{proj}.bias");
            match (declared, shapes.contains_key(&bias)) {
                (true, false) => bail!("{field} is true but the weights have no {bias}"),
                (false, true) => bail!(
                    "the weights have {bias} but {field} is false (or absent): the bias would be \
                     ignored"
                ),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `hidden_act`, which must be one of `allowed` (the first is the default when absent).
fn activation(obj: &Map<String, Value>, allowed: &[&str]) -> Result<String> {
    let act = match obj.get("hidden_act") {
        None | Some(Value::Null) => return Ok(allowed[0].to_string()),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => bail!("hidden_act {other} is not a string"),
    };
    if !allowed.contains(&act) {
        bail!(
            "hidden_act {act:?} is not supported for this architecture (supported: {})",
            allowed.join(", ")
        );
    }
    Ok(act.to_string())
}

/// `sliding_window`, unless `use_sliding_window` is false (Qwen2 writes a window it does not
/// use) or it is null. Mistral's default, when the key is absent, is 4096 tokens; Qwen2 and
/// Qwen3 use a window only with `use_sliding_window` true, and then on some layers only
/// (`max_window_layers`), which is refused.
fn sliding_window(obj: &Map<String, Value>, architecture: Architecture) -> Result<Option<usize>> {
    let uses = obj.get("use_sliding_window").and_then(Value::as_bool);
    if matches!(architecture, Architecture::Qwen2 | Architecture::Qwen3) {
        if uses == Some(true) && obj.get("sliding_window").is_some_and(|v| !v.is_null()) {
            bail!(
                "use_sliding_window true is not supported for {architecture:?} (sliding windows \
                 on the layers from max_window_layers on)"
            );
        }
        return Ok(None);
    }
    if uses == Some(false) {
        return Ok(None);
    }
    match obj.get("sliding_window") {
        None if architecture == Architecture::Mistral => Ok(Some(4096)),
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(
            v.as_u64()
                .with_context(|| format!("sliding_window {v} is not a number of tokens"))?
                as usize,
        )),
    }
}

/// A boolean field, false when absent.
fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v
            .as_bool()
            .with_context(|| format!("{key} {v} is not true or false")),
    }
}

/// The remaining fields that change the computation, each refused unless at its one
/// implemented value.
fn refuse_unsupported(obj: &Map<String, Value>, architecture: Architecture) -> Result<()> {
    let value = |k: &str| obj.get(k).filter(|v| !v.is_null());
    if let Some(v) = value("partial_rotary_factor").filter(|v| v.as_f64() != Some(1.0)) {
        bail!("partial_rotary_factor {v} is not supported (rotary embeddings on whole heads only)");
    }
    if let Some(v) = value("attn_logit_softcapping") {
        bail!("attn_logit_softcapping {v} is not supported");
    }
    if let Some(types) = value("layer_types") {
        let full = types
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_str() == Some("full_attention")));
        if !full {
            bail!("layer_types {types} is not supported (full_attention layers only)");
        }
    }
    if architecture == Architecture::Bert {
        if let Some(v) = value("position_embedding_type").filter(|v| v.as_str() != Some("absolute"))
        {
            bail!("position_embedding_type {v} is not supported (absolute only)");
        }
        if let Some(v) = value("is_decoder").filter(|v| v.as_bool() == Some(true)) {
            bail!("is_decoder {v} is not supported (BERT as an encoder only)");
        }
    }
    Ok(())
}

/// The `dtype` (transformers 5) or `torch_dtype` a config.json declares, when it is f32, bf16
/// or f16.
pub fn checkpoint_dtype(config: &Value) -> Option<DType> {
    ["dtype", "torch_dtype"]
        .iter()
        .find_map(|k| config.get(*k).and_then(|v| v.as_str()))
        .and_then(|s| s.parse().ok())
}

/// Each tensor's shape, from the weight files' safetensors headers (nothing else is read), by
/// name with a leading `model.` removed.
pub fn tensor_shapes(weights: &[std::path::PathBuf]) -> Result<HashMap<String, Vec<usize>>> {
    use std::io::Read;
    let mut shapes = HashMap::new();
    for path in weights {
        let read = || -> Result<Map<String, Value>> {
            let mut f = std::fs::File::open(path)?;
            let mut len = [0u8; 8];
            f.read_exact(&mut len)?;
            let len = u64::from_le_bytes(len).min(100 << 20) as usize;
            let mut header = vec![0u8; len];
            f.read_exact(&mut header)?;
            Ok(serde_json::from_slice(&header)?)
        };
        let header =
            read().with_context(|| format!("{}: not a safetensors file", path.display()))?;
        for (name, t) in header {
            let shape = t.get("shape").and_then(Value::as_array).map(|s| {
                s.iter()
                    .filter_map(Value::as_u64)
                    .map(|d| d as usize)
                    .collect::<Vec<_>>()
            });
            if let Some(shape) = shape {
                let name = name.strip_prefix("model.").unwrap_or(&name).to_string();
                shapes.insert(name, shape);
            }
        }
    }
    Ok(shapes)
}
