//! How much memory embedding with a model takes, from its config.json alone: weights, the
//! activations of the largest batch the planner can form, and the attention scores of one block.
//! Nothing but config.json (and the small sentence-transformers files) is read, so an 8B
//! checkpoint can be sized on a laptop before it is downloaded.

use anyhow::{Context, Result};
use serde::Serialize;

use super::attention::{AttentionBlocks, SCORE_BYTES};
use super::batching::BatchBudget;
use super::recipe::{self, Architecture};
use super::source::{self, ModelFiles};
use super::{llama, DType, Device, EncoderOptions, ModelConfig};

/// Memory of one model at one setting. Byte counts are estimates of what the forward pass holds
/// at once; they leave out the runtime itself (CUDA context and cuBLAS workspace, ~0.5-1 GiB on
/// a GPU) and, on the host, the weight files' pages mapped while loading.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryEstimate {
    pub model: String,
    pub architecture: Architecture,
    pub device: Device,
    pub dtype: DType,
    pub max_length: usize,
    pub max_batch_tokens: usize,
    pub max_attention_bytes: usize,
    /// Query rows per attention block; `None`: unblocked.
    pub attention_block_rows: Option<usize>,
    pub layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub heads: usize,
    pub parameters: u64,
    pub weight_bytes: u64,
    /// The batch that needs the most memory, and what it holds.
    #[serde(flatten)]
    pub batch: WorstBatch,
    /// Weights plus activations.
    pub peak_bytes: u64,
}

/// The batch that needs the most memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorstBatch {
    /// The batch that needs the most memory: this many sequences of this many tokens.
    pub batch_sequences: usize,
    pub batch_length: usize,
    /// One `[tokens, hidden]` tensor of that batch.
    pub hidden_state_bytes: u64,
    /// One `[tokens, intermediate]` tensor of that batch (the MLP holds three).
    pub mlp_intermediate_bytes: u64,
    /// f32 scores of one block of query rows, over the whole batch.
    pub attention_block_bytes: u64,
    /// The larger of the attention phase and the MLP phase of a layer.
    pub activation_bytes: u64,
}

/// The sizes the estimate needs, from config.json.
struct Shapes {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    parameters: u64,
}

/// Estimate the memory of embedding with `model` (a folder or hub id in the Hugging Face cache)
/// under `opts`, reading config.json but never the weights.
pub fn estimate_memory(model: &str, opts: &EncoderOptions) -> Result<MemoryEstimate> {
    let dir = source::locate_model_dir(model)?;
    let files = ModelFiles {
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        weights: Vec::new(),
        dir,
    };
    let config = recipe::read_json(&files.config)?;
    let architecture = recipe::detect_architecture(&files.config, &config)?;
    let recipe = recipe::resolve_recipe(&files, &config, architecture, &opts.overrides)?;
    // The same refusals as a load, short of the weights (which are not read).
    ModelConfig::read(&files.config, &config, architecture)?
        .check_length(recipe.max_length)
        .with_context(|| files.config.display().to_string())?;
    let shapes = match architecture {
        Architecture::Bert => bert_shapes(&config),
        _ => llama_shapes(&config),
    }
    .with_context(|| format!("{}", files.config.display()))?;
    let blocks = match architecture {
        Architecture::Bert => AttentionBlocks::UNBLOCKED,
        _ => AttentionBlocks::from_env()?,
    };
    let dtype = super::resolve_dtype(opts.dtype, opts.device, &config);
    let budget = BatchBudget {
        tokens: opts.batch_tokens(),
        attention_bytes: opts.attention_bytes(),
        heads: shapes.heads,
        blocks,
    };
    let mut e = MemoryEstimate {
        model: model.to_string(),
        architecture,
        device: opts.device,
        dtype,
        max_length: recipe.max_length,
        max_batch_tokens: budget.tokens,
        max_attention_bytes: budget.attention_bytes,
        attention_block_rows: blocks.rows,
        layers: shapes.layers,
        hidden_size: shapes.hidden,
        intermediate_size: shapes.intermediate,
        heads: shapes.heads,
        parameters: shapes.parameters,
        weight_bytes: shapes.parameters * dtype.size() as u64,
        batch: WorstBatch::default(),
        peak_bytes: 0,
    };
    worst_batch(&mut e, &shapes, &budget);
    Ok(e)
}

/// Fill in the activations of the batch that needs the most memory: for every length up to the
/// maximum, as many sequences of that length as the planner puts in one batch.
fn worst_batch(e: &mut MemoryEstimate, s: &Shapes, budget: &BatchBudget) {
    let b = e.dtype.size() as u64;
    for len in 1..=e.max_length {
        // As many as both budgets allow, and at least one (an over-budget text runs alone).
        let by_scores = budget.attention_bytes / budget.score_bytes(len).max(1);
        let n = (budget.tokens / len).min(by_scores).max(1);
        let tokens = (n * len) as u64;
        let hidden = tokens * s.hidden as u64 * b;
        let qkv = tokens * ((s.heads + 2 * s.kv_heads) * s.head_dim) as u64 * b;
        let inter = tokens * s.intermediate as u64 * b;
        let scores = n as u64 * budget.score_bytes(len) as u64;
        // Scores and probabilities in f32, plus the probabilities in the model's dtype.
        let live_scores = if e.dtype == DType::F32 {
            2 * scores
        } else {
            2 * scores + scores * b / SCORE_BYTES as u64
        };
        let attention_phase = 3 * hidden + 2 * qkv + live_scores;
        let mlp_phase = 2 * hidden + 3 * inter;
        let activations = attention_phase.max(mlp_phase);
        if activations >= e.batch.activation_bytes {
            e.batch = WorstBatch {
                batch_sequences: n,
                batch_length: len,
                hidden_state_bytes: hidden,
                mlp_intermediate_bytes: inter,
                attention_block_bytes: scores,
                activation_bytes: activations,
            };
        }
    }
    e.peak_bytes = e.weight_bytes + e.batch.activation_bytes;
}

/// A Llama-built decoder's sizes and parameter count (Llama, Qwen3, Qwen2, Mistral).
fn llama_shapes(config: &serde_json::Value) -> Result<Shapes> {
    let cfg: llama::LlamaConfig = serde_json::from_value(config.clone())
        .with_context(|| "not a Llama-built decoder's config")?;
    let s = cfg.shape()?;
    let (h, i, hd) = (
        s.hidden_size as u64,
        s.intermediate_size as u64,
        s.head_dim as u64,
    );
    let (nh, nkv) = (s.heads as u64, s.kv_heads as u64);
    let qkv_bias = if s.qkv_bias { (nh + 2 * nkv) * hd } else { 0 };
    let o_bias = if s.o_bias { h } else { 0 };
    let mlp_bias = if s.mlp_bias { 2 * i + h } else { 0 };
    let qk_norm = if s.qk_norm { 2 * hd } else { 0 };
    // q, k, v, o; gate, up, down; two RMSNorm weights.
    let layer = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 3 * h * i + 2 * h;
    let extras = qkv_bias + o_bias + mlp_bias + qk_norm;
    let parameters = s.vocab_size as u64 * h + s.layers as u64 * (layer + extras) + h;
    Ok(Shapes {
        layers: s.layers,
        hidden: s.hidden_size,
        intermediate: s.intermediate_size,
        heads: s.heads,
        kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        parameters,
    })
}

fn bert_shapes(config: &serde_json::Value) -> Result<Shapes> {
    let get = |k: &str| -> Result<u64> {
        config
            .get(k)
            .and_then(|v| v.as_u64())
            .with_context(|| format!("missing \"{k}\""))
    };
    let (h, i, heads) = (
        get("hidden_size")?,
        get("intermediate_size")?,
        get("num_attention_heads")?,
    );
    let layers = get("num_hidden_layers")?;
    let positions = get("max_position_embeddings").unwrap_or(512);
    let types = get("type_vocab_size").unwrap_or(2);
    // q, k, v, o with biases; two LayerNorms; the MLP with biases.
    let layer = 4 * (h * h + h) + 4 * h + 2 * h * i + i + h;
    let embeddings = (get("vocab_size")? + positions + types) * h + 2 * h;
    Ok(Shapes {
        layers: layers as usize,
        hidden: h as usize,
        intermediate: i as usize,
        heads: heads as usize,
        kv_heads: heads as usize,
        head_dim: (h / heads.max(1)) as usize,
        parameters: embeddings + layers * layer,
    })
}
