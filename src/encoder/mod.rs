//! The embedding engine: loads a Hugging Face checkpoint (Llama-family decoder embedders or BERT
//! encoders), tokenises with the model's own tokenizer.json, runs length-sorted token-budget
//! batches through the forward pass and pools each text into one vector.

pub mod attention;
pub mod batching;
mod bert;
pub mod cpu;
pub mod device;
pub mod estimate;
#[cfg(feature = "hub")]
mod hub;
pub mod llama;
pub mod pooling;
pub mod recipe;
pub mod source;

use anyhow::{bail, Context, Result};
use candle_nn::VarBuilder;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use attention::{AttentionBlocks, ATTENTION_BLOCK_ENV, DEFAULT_ATTENTION_BLOCK_ROWS};
pub use batching::{plan_batches, BatchBudget};
pub use device::{DType, Device};
pub use estimate::{estimate_memory, MemoryEstimate};
pub use recipe::{
    Architecture, Attention, PaddingSide, Pooling, Recipe, RecipeOverrides, TextKind,
    DEFAULT_INSTRUCTION, DEFAULT_QUERY_TEMPLATE,
};
pub use source::ModelFiles;

/// Default token budget per forward pass on a CPU. Measured with all-MiniLM-L6-v2 on 2 cores,
/// 2,000 MATH problems, the CPU engine: 1024 tokens 89 texts/s, 2048 88, 4096 91, 8192 93-95,
/// 16384 94 (peak RSS 263 MB at 2048, 289 MB at 8192, 414 MB at 16384). candle's backend
/// preferred 1024-2048 (64-72 texts/s; 42-53 at 8192, as its intermediates outgrow the caches):
/// `EXEMPLAR_CPU_ENGINE=candle` runs should pass `--max-batch-tokens 2048`. See README,
/// "Benchmarks".
pub const DEFAULT_MAX_BATCH_TOKENS_CPU: usize = 8192;
/// On a GPU bigger batches keep the device busy.
pub const DEFAULT_MAX_BATCH_TOKENS_GPU: usize = 16384;
/// Attention-score budget of one forward pass on a CPU (see [`BatchBudget`]).
pub const DEFAULT_MAX_ATTENTION_BYTES_CPU: usize = 1 << 30;
/// On a GPU: 32 heads x 512 rows x 32k keys x 4 bytes, one 32k-token text of an 8B model.
pub const DEFAULT_MAX_ATTENTION_BYTES_GPU: usize = 2 << 30;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct EncoderOptions {
    pub device: Device,
    /// Weight and activation precision; `None` follows [`resolve_dtype`]'s rule.
    pub dtype: Option<DType>,
    pub overrides: RecipeOverrides,
    /// Padded-token budget per forward pass; `None` picks a default for the device.
    pub max_batch_tokens: Option<usize>,
}

impl EncoderOptions {
    /// The padded-token budget these options resolve to.
    pub fn batch_tokens(&self) -> usize {
        self.max_batch_tokens
            .unwrap_or(if self.device.is_cpu() {
                DEFAULT_MAX_BATCH_TOKENS_CPU
            } else {
                DEFAULT_MAX_BATCH_TOKENS_GPU
            })
            .max(1)
    }

    /// The attention-score budget for this device.
    pub fn attention_bytes(&self) -> usize {
        if self.device.is_cpu() {
            DEFAULT_MAX_ATTENTION_BYTES_CPU
        } else {
            DEFAULT_MAX_ATTENTION_BYTES_GPU
        }
    }
}

/// The precision a model runs in: the one asked for; otherwise f32 on the CPU (bf16 and f16
/// matmuls are slow there) and, on CUDA, the checkpoint's own `torch_dtype` from config.json
/// (`dtype` in newer transformers), which is what its weights are stored in: bf16 for
/// llama-embed-nemotron-8b. A missing or unknown value gives f32.
pub fn resolve_dtype(
    requested: Option<DType>,
    device: Device,
    config: &serde_json::Value,
) -> DType {
    if let Some(d) = requested {
        return d;
    }
    if device.is_cpu() {
        return DType::F32;
    }
    checkpoint_dtype(config).unwrap_or(DType::F32)
}

/// The `torch_dtype` (or `dtype`) a config.json declares, when it is f32, bf16 or f16.
pub fn checkpoint_dtype(config: &serde_json::Value) -> Option<DType> {
    ["torch_dtype", "dtype"]
        .iter()
        .find_map(|k| config.get(*k).and_then(|v| v.as_str()))
        .and_then(|s| s.parse().ok())
}

/// One text after templating and tokenisation.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// The text was longer than `max_length` and has been cut.
    pub truncated: bool,
}

/// Result of encoding a list of texts: vectors in input order plus counts for reporting.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
    pub truncated: usize,
}

enum Backbone {
    Llama(llama::LlamaEncoder),
    Bert(bert::BertEncoder),
    /// The CPU engine ([`cpu`]): unpadded, our own kernels.
    CpuLlama(cpu::llama::Llama),
    CpuBert(cpu::bert::Bert),
}

/// What `embed info` prints and what every manifest records about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub path: String,
    pub fingerprint: String,
    pub dim: usize,
    pub vocab_size: usize,
    pub dtype: DType,
    pub device: Device,
    #[serde(flatten)]
    pub recipe: Recipe,
}

pub struct Encoder {
    info: ModelInfo,
    recipe: Recipe,
    /// Truncates at the recipe's length.
    tokenizer: Tokenizer,
    /// The same, one token longer: tells whether a text was cut (see [`Encoder::tokenize`]).
    probe: Tokenizer,
    backbone: Backbone,
    eos_id: Option<u32>,
    pad_id: u32,
    vocab_size: usize,
    budget: BatchBudget,
}

/// What a checkpoint says about itself, read without touching the weights: enough to write or
/// check a manifest (fingerprint, recipe, dim) before paying for a model load.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// As given (folder or hub id).
    pub model: String,
    pub dir: std::path::PathBuf,
    pub files: ModelFiles,
    pub config: serde_json::Value,
    pub architecture: Architecture,
    pub recipe: Recipe,
    pub fingerprint: String,
    pub dim: usize,
    pub vocab_size: usize,
}

impl Checkpoint {
    /// Locate a model folder (see [`source::resolve_model_dir`]) and resolve its recipe.
    pub fn open(model: &str, overrides: &RecipeOverrides) -> Result<Self> {
        Self::open_checked(model, overrides, |_| Ok(()))
    }

    /// Like [`Checkpoint::open`], but `check` sees the fingerprint first, before anything else
    /// is read: a manifest refuses another model by its identity, not by a confusing recipe error.
    pub fn open_checked(
        model: &str,
        overrides: &RecipeOverrides,
        check: impl FnOnce(&str) -> Result<()>,
    ) -> Result<Self> {
        let dir = source::resolve_model_dir(model)?;
        let files = source::locate_files(&dir)?;
        let fingerprint = fingerprint(&files)?;
        check(&fingerprint)?;
        let config = recipe::read_json(&files.config)?;
        let architecture = recipe::detect_architecture(&files.config, &config)?;
        let recipe = recipe::resolve_recipe(&files, &config, architecture, overrides)?;
        let number = |key: &str| -> Result<usize> {
            config
                .get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .with_context(|| format!("{}: missing \"{key}\"", files.config.display()))
        };
        Ok(Self {
            model: model.to_string(),
            fingerprint,
            dim: number("hidden_size")?,
            vocab_size: number("vocab_size")?,
            dir,
            files,
            config,
            architecture,
            recipe,
        })
    }

    /// The model description a manifest records for these options (the dtype resolved).
    pub fn info(&self, opts: &EncoderOptions) -> ModelInfo {
        ModelInfo {
            model: self.model.clone(),
            path: self.dir.display().to_string(),
            fingerprint: self.fingerprint.clone(),
            dim: self.dim,
            vocab_size: self.vocab_size,
            dtype: self.dtype(opts),
            device: opts.device,
            recipe: self.recipe.clone(),
        }
    }

    /// The precision these options run this checkpoint in (see [`resolve_dtype`]).
    pub fn dtype(&self, opts: &EncoderOptions) -> DType {
        resolve_dtype(opts.dtype, opts.device, &self.config)
    }

    /// Query heads per layer, from config.json.
    pub fn heads(&self) -> usize {
        self.config
            .get("num_attention_heads")
            .and_then(|v| v.as_u64())
            .map_or(1, |v| v as usize)
    }
}

impl Encoder {
    /// Load a model from a folder or hub id.
    pub fn load(model: &str, opts: &EncoderOptions) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(model, &opts.overrides)?, opts)
    }

    /// Load the tokenizer and weights of an opened checkpoint.
    pub fn from_checkpoint(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Self> {
        let (tokenizer, probe) = load_tokenizers(ck)?;
        let mut backbone = load_backbone(ck, opts)?;
        let blocks = match &mut backbone {
            Backbone::Llama(m) => {
                m.set_attention_blocks(AttentionBlocks::from_env()?);
                m.attention_blocks()
            }
            // candle-transformers' BERT attends all at once; its inputs stop at 512 tokens.
            Backbone::Bert(_) => AttentionBlocks::UNBLOCKED,
            // The CPU engine holds at most 128 query rows of scores per thread (cpu::ops): not
            // worth budgeting.
            Backbone::CpuLlama(_) | Backbone::CpuBert(_) => AttentionBlocks { rows: Some(1) },
        };
        let dim = match &backbone {
            Backbone::Llama(m) => m.hidden_size(),
            Backbone::Bert(m) => m.hidden_size(),
            Backbone::CpuLlama(m) => m.hidden_size(),
            Backbone::CpuBert(m) => m.hidden_size(),
        };
        if dim != ck.dim {
            bail!(
                "{}: hidden_size {} but the weights give {dim}",
                ck.files.config.display(),
                ck.dim
            );
        }
        let eos_id = special_token_id(&ck.files, &ck.config, &tokenizer, "eos");
        if ck.recipe.append_eos && eos_id.is_none() {
            bail!(
                "--append-eos: no eos_token_id in {} and no eos_token in tokenizer_config.json",
                ck.files.config.display()
            );
        }
        let pad_id = special_token_id(&ck.files, &ck.config, &tokenizer, "pad")
            .or(eos_id)
            .unwrap_or(0);
        Ok(Self {
            info: ck.info(opts),
            recipe: ck.recipe.clone(),
            tokenizer,
            probe,
            backbone,
            eos_id,
            pad_id,
            vocab_size: ck.vocab_size,
            budget: BatchBudget {
                tokens: opts.batch_tokens(),
                attention_bytes: opts.attention_bytes(),
                heads: ck.heads(),
                blocks,
            },
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }
    /// Put another task instruction into the query template (a binding's per-call
    /// `instruction=`); documents do not use it.
    pub fn set_instruction(&mut self, instruction: &str) {
        self.recipe.instruction = instruction.to_string();
        self.info.recipe.instruction = instruction.to_string();
    }
    pub fn dim(&self) -> usize {
        self.info.dim
    }
    pub fn max_batch_tokens(&self) -> usize {
        self.budget.tokens
    }
    /// The budgets batches are planned under.
    pub fn batch_budget(&self) -> BatchBudget {
        self.budget
    }

    /// Compute attention in blocks of query rows (the default, or [`ATTENTION_BLOCK_ENV`]), or
    /// unblocked with [`AttentionBlocks::UNBLOCKED`]. Vectors are the same either way; only the
    /// memory differs. BERT models always attend unblocked.
    pub fn set_attention_blocks(&mut self, blocks: AttentionBlocks) {
        if let Backbone::Llama(m) = &mut self.backbone {
            m.set_attention_blocks(blocks);
            self.budget.blocks = blocks;
        }
    }

    /// Apply the template for `kind` and tokenise. Texts that are empty (or only whitespace) are
    /// refused with their position, since an empty text has no meaningful vector.
    ///
    /// tokenizers stops tokenising once the truncation length is reached, so whether a text was
    /// cut cannot be read from the overflow it reports. Texts are tokenised with a limit one
    /// token longer: those that reach it are over the length, and are tokenised again with the
    /// real limit.
    pub fn tokenize(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Tokenized>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            bail!("text #{} is empty", i + 1);
        }
        let inputs: Vec<String> = texts.iter().map(|t| self.recipe.format(t, kind)).collect();
        let limit = self.recipe.max_length - usize::from(self.recipe.append_eos);
        let encode = |tokenizer: &Tokenizer, inputs: Vec<&str>| {
            tokenizer
                .encode_batch(inputs, true)
                .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))
        };
        let mut ids: Vec<Vec<u32>> =
            encode(&self.probe, inputs.iter().map(|s| s.as_str()).collect())?
                .iter()
                .map(|e| e.get_ids().to_vec())
                .collect();
        let long: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].len() > limit).collect();
        let cut = encode(
            &self.tokenizer,
            long.iter().map(|&i| inputs[i].as_str()).collect(),
        )?;
        for (&i, enc) in long.iter().zip(&cut) {
            ids[i] = enc.get_ids().to_vec();
        }
        let mut out = Vec::with_capacity(ids.len());
        for (i, ids) in ids.into_iter().enumerate() {
            out.push(Tokenized {
                ids: self.checked_ids(i, ids)?,
                truncated: long.binary_search(&i).is_ok(),
            });
        }
        Ok(out)
    }

    /// Append EOS if the recipe says so; refuse ids outside the vocabulary and empty results.
    fn checked_ids(&self, i: usize, mut ids: Vec<u32>) -> Result<Vec<u32>> {
        if self.recipe.append_eos {
            ids.push(self.eos_id.expect("checked at load"));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            bail!(
                "text #{}: token id {bad} is outside the model's vocabulary ({})",
                i + 1,
                self.vocab_size
            );
        }
        if ids.is_empty() {
            bail!("text #{} produced no tokens", i + 1);
        }
        Ok(ids)
    }

    /// Embed a batch of tokenised texts in one forward pass; vectors come back in batch order.
    pub fn embed_batch(&self, batch: &[&Tokenized]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(out) = self.embed_unpadded(batch)? {
            return Ok(out);
        }
        let n = batch.len();
        let len = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; n * len];
        let mut mask = vec![0u8; n * len];
        for (b, t) in batch.iter().enumerate() {
            let offset = match self.recipe.padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => len - t.ids.len(),
            };
            let row = b * len + offset;
            ids[row..row + t.ids.len()].copy_from_slice(&t.ids);
            mask[row..row + t.ids.len()].fill(1);
        }
        let hidden = match &self.backbone {
            Backbone::Llama(m) => m.forward(&ids, &mask, n, len, self.recipe.attention)?,
            Backbone::Bert(m) => m.forward(&ids, &mask, n, len)?,
            Backbone::CpuLlama(_) | Backbone::CpuBert(_) => unreachable!("embedded unpadded"),
        };
        let pooled = match self.recipe.pooling {
            Pooling::Mean => pooling::mean_pool(&hidden, &mask, n, len)?,
            Pooling::Last => pooling::last_token_pool(&hidden, &mask, n, len)?,
            Pooling::Cls => pooling::first_token_pool(&hidden, &mask, n, len)?,
        };
        let pooled = if self.recipe.normalize {
            pooling::l2_normalize(&pooled)?
        } else {
            pooled
        };
        Ok(pooled.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
    }

    /// The CPU engine's path: texts concatenated without padding. `None` for candle backbones.
    fn embed_unpadded(&self, batch: &[&Tokenized]) -> Result<Option<Vec<Vec<f32>>>> {
        let texts: Vec<&[u32]> = batch.iter().map(|t| t.ids.as_slice()).collect();
        let (pooling, normalize) = (self.recipe.pooling, self.recipe.normalize);
        Ok(Some(match &self.backbone {
            Backbone::CpuLlama(m) => m.embed(&texts, self.recipe.attention, pooling, normalize)?,
            Backbone::CpuBert(m) => m.embed(&texts, pooling, normalize)?,
            _ => return Ok(None),
        }))
    }

    /// Tokenise, batch by length under the token budget, embed; results in input order.
    pub fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Encoded> {
        let tokenized = self.tokenize(texts, kind)?;
        self.encode_tokenized(&tokenized, |_, _| {})
    }

    /// Embed already tokenised texts; `progress(texts, tokens)` is called after each batch.
    pub fn encode_tokenized(
        &self,
        tokenized: &[Tokenized],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Encoded> {
        let lengths: Vec<usize> = tokenized.iter().map(|t| t.ids.len()).collect();
        let mut vectors = vec![Vec::new(); tokenized.len()];
        for batch in plan_batches(&lengths, &self.budget) {
            let items: Vec<&Tokenized> = batch.iter().map(|&i| &tokenized[i]).collect();
            let out = self.embed_batch(&items)?;
            let tokens: usize = items.iter().map(|t| t.ids.len()).sum();
            for (&i, v) in batch.iter().zip(out) {
                vectors[i] = v;
            }
            progress(batch.len(), tokens);
        }
        Ok(Encoded {
            vectors,
            tokens: lengths.iter().sum(),
            truncated: tokenized.iter().filter(|t| t.truncated).count(),
        })
    }
}

/// The model's tokenizer with our padding and truncation (never the ones stored in the file),
/// and a copy that truncates one token later (see [`Encoder::tokenize`]).
fn load_tokenizers(ck: &Checkpoint) -> Result<(Tokenizer, Tokenizer)> {
    let path = &ck.files.tokenizer;
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
    let tok_vocab = tokenizer.get_vocab_size(true);
    if tok_vocab > ck.vocab_size {
        bail!(
            "{} has {tok_vocab} tokens but {} says vocab_size {}: \
             the tokenizer does not belong to this model",
            path.display(),
            ck.files.config.display(),
            ck.vocab_size
        );
    }
    // Padding and truncation stored in tokenizer.json (all-MiniLM-L6-v2 ships Fixed(128))
    // would silently change vectors: we pad ourselves and truncate at the recipe's length.
    tokenizer.with_padding(None);
    let limit = ck.recipe.max_length - usize::from(ck.recipe.append_eos);
    let mut probe = tokenizer.clone();
    for (t, max_length) in [(&mut tokenizer, limit), (&mut probe, limit + 1)] {
        t.with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| anyhow::anyhow!("setting truncation: {e}"))?;
    }
    Ok((tokenizer, probe))
}

fn load_backbone(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Backbone> {
    if let Some(native) = load_cpu_engine(ck, opts)? {
        return Ok(native);
    }
    let device = opts.device.open()?;
    let dtype = ck.dtype(opts).to_candle()?;
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&ck.files.weights, dtype, &device) }
        .with_context(|| format!("opening weights in {}", ck.dir.display()))?;
    Ok(match ck.architecture {
        Architecture::Llama => {
            let cfg: llama::LlamaConfig = serde_json::from_value(ck.config.clone())
                .with_context(|| format!("{}: not a Llama config", ck.files.config.display()))?;
            Backbone::Llama(
                llama::LlamaEncoder::load(vb, cfg)
                    .with_context(|| format!("loading Llama weights from {}", ck.dir.display()))?,
            )
        }
        Architecture::Bert => Backbone::Bert(
            bert::BertEncoder::load(vb, &ck.config)
                .with_context(|| format!("loading BERT weights from {}", ck.dir.display()))?,
        ),
    })
}

/// The CPU engine for f32, bf16 and int8 on the CPU (unless [`cpu::ENGINE_ENV`] asks for
/// candle, or the config uses something the engine lacks); `None` means candle runs it.
fn load_cpu_engine(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Option<Backbone>> {
    let precision = match ck.dtype(opts) {
        DType::F32 => cpu::Precision::F32,
        DType::BF16 => cpu::Precision::BF16,
        DType::Int8 => cpu::Precision::Int8,
        DType::F16 => return Ok(None),
    };
    let candle = std::env::var(cpu::ENGINE_ENV).is_ok_and(|v| v == "candle");
    if !opts.device.is_cpu() || (candle && precision == cpu::Precision::F32) {
        return Ok(None);
    }
    let isa = cpu::Isa::detect()?;
    precision.check(isa)?;
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &ck.files.weights,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
    }
    .with_context(|| format!("opening weights in {}", ck.dir.display()))?;
    let context = || format!("loading weights from {}", ck.dir.display());
    let config_error = || {
        format!(
            "{}: not a {:?} config",
            ck.files.config.display(),
            ck.architecture
        )
    };
    Ok(match ck.architecture {
        Architecture::Llama => {
            let cfg = serde_json::from_value(ck.config.clone()).with_context(config_error)?;
            Some(Backbone::CpuLlama(
                cpu::llama::Llama::load(vb, cfg, precision, isa).with_context(context)?,
            ))
        }
        Architecture::Bert => {
            let cfg: cpu::bert::BertConfig =
                serde_json::from_value(ck.config.clone()).with_context(config_error)?;
            match cfg.unsupported() {
                Some(_) if precision == cpu::Precision::F32 => None,
                Some(why) => bail!(
                    "--dtype {} on the CPU: the CPU engine does not support {why}",
                    ck.dtype(opts)
                ),
                None => Some(Backbone::CpuBert(
                    cpu::bert::Bert::load(vb, cfg, precision, isa).with_context(context)?,
                )),
            }
        }
    })
}

/// Token id of `eos`/`pad` from config.json, else from tokenizer_config.json's token string.
fn special_token_id(
    files: &ModelFiles,
    config: &serde_json::Value,
    tokenizer: &Tokenizer,
    which: &str,
) -> Option<u32> {
    let from_config = config.get(format!("{which}_token_id")).and_then(|v| {
        v.as_u64().or_else(|| {
            v.as_array()
                .and_then(|a| a.first())
                .and_then(|x| x.as_u64())
        })
    });
    if let Some(id) = from_config {
        return Some(id as u32);
    }
    let tc = recipe::read_json(&files.optional("tokenizer_config.json")?).ok()?;
    let token = tc.get(format!("{which}_token"))?;
    let text = token
        .as_str()
        .or_else(|| token.get("content").and_then(|c| c.as_str()))?;
    tokenizer.token_to_id(text)
}

/// A cheap identity for a checkpoint: config and tokenizer in full, plus each weight file's
/// size, safetensors header and 16 evenly spaced 64 KiB samples. Hashing all 16 GB of an 8B
/// model on every run would cost more than it protects.
pub fn fingerprint(files: &ModelFiles) -> Result<String> {
    let mut h = Sha256::new();
    for p in [&files.config, &files.tokenizer] {
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    for p in &files.weights {
        hash_sampled(&mut h, p)?;
    }
    Ok(format!("sha256:{:x}", h.finalize())[..23].to_string())
}

fn hash_sampled(h: &mut Sha256, path: &Path) -> Result<()> {
    const CHUNK: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f.metadata()?.len();
    h.update(size.to_le_bytes());
    let mut header_len = [0u8; 8];
    f.read_exact(&mut header_len)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let header_len = u64::from_le_bytes(header_len).min(size);
    let mut buf = vec![0u8; header_len.min(100 << 20) as usize];
    f.read_exact(&mut buf)
        .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    h.update(&buf);
    let mut chunk = vec![0u8; CHUNK as usize];
    for i in 0..16u64 {
        let at = size.saturating_sub(CHUNK) * i / 15;
        f.seek(SeekFrom::Start(at))?;
        let n = f.read(&mut chunk)?;
        h.update(&chunk[..n]);
    }
    Ok(())
}

/// Cosine similarity of two vectors (for tests and diagnostics).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dtype_follows_the_flag_then_the_device_then_the_checkpoint() {
        let bf16 = json!({"torch_dtype": "bfloat16"});
        let cuda = Device::Cuda(0);
        assert_eq!(resolve_dtype(None, Device::Cpu, &bf16), DType::F32);
        assert_eq!(resolve_dtype(None, cuda, &bf16), DType::BF16);
        assert_eq!(resolve_dtype(Some(DType::F16), cuda, &bf16), DType::F16);
        assert_eq!(
            resolve_dtype(Some(DType::BF16), Device::Cpu, &bf16),
            DType::BF16
        );
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"dtype": "float16"})),
            DType::F16
        );
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"torch_dtype": "float32"})),
            DType::F32
        );
        // Missing or unusable: f32.
        assert_eq!(resolve_dtype(None, cuda, &json!({})), DType::F32);
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"torch_dtype": "float64"})),
            DType::F32
        );
    }
}
