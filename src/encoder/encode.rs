//! The encoder: a checkpoint's tokenizer and backbone, turning texts into vectors in
//! length-sorted token-budget batches.

use anyhow::{bail, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::backbone::{self, Backbone, Batch};
use super::batching::{plan_batches, BatchBudget};
use super::recipe::{self, Recipe, TextKind};
use super::source::ModelFiles;
#[cfg(doc)]
use super::ATTENTION_BLOCK_ENV;
use super::{AttentionBlocks, Checkpoint, EncoderOptions, ModelConfig, ModelInfo};

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

pub struct Encoder {
    info: ModelInfo,
    settings: ModelConfig,
    recipe: Recipe,
    /// Truncates at the recipe's length.
    tokenizer: Tokenizer,
    /// The same, one token longer: tells whether a text was cut (see [`Encoder::tokenize`]).
    probe: Tokenizer,
    backbone: Box<dyn Backbone>,
    eos_id: Option<u32>,
    pad_id: u32,
    vocab_size: usize,
    budget: BatchBudget,
}

impl Encoder {
    /// Load a model from a folder or hub id.
    pub fn load(model: &str, opts: &EncoderOptions) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(model, &opts.overrides)?, opts)
    }

    /// Load the tokenizer and weights of an opened checkpoint.
    pub fn from_checkpoint(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Self> {
        let (tokenizer, probe) = load_tokenizers(ck)?;
        let backbone = backbone::load(ck, opts)?;
        let blocks = backbone.attention_blocks();
        let dim = backbone.hidden_size();
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
            settings: ck.settings.clone(),
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
    /// What config.json says beyond the shapes, as resolved (see [`ModelConfig`]).
    pub fn settings(&self) -> &ModelConfig {
        &self.settings
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
    /// Width of the vectors made (`--dim`'s, when it truncates).
    pub fn dim(&self) -> usize {
        self.info.dim
    }
    /// Width of the model's own vectors (its hidden size).
    pub fn model_dim(&self) -> usize {
        self.backbone.hidden_size()
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
    /// memory differs. Only candle's decoders block: BERT on candle always attends unblocked,
    /// and the CPU engine keeps its own small blocks.
    pub fn set_attention_blocks(&mut self, blocks: AttentionBlocks) {
        self.backbone.set_attention_blocks(blocks);
        self.budget.blocks = self.backbone.attention_blocks();
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
        let texts = batch.iter().map(|t| t.ids.as_slice()).collect();
        let padding = self.backbone.wants_padding();
        let batch = Batch::new(
            texts,
            padding.then_some((self.recipe.padding_side, self.pad_id)),
        );
        let vectors = self.backbone.embed(&batch, &self.recipe)?;
        Ok(match self.recipe.truncate_dim {
            Some(n) => vectors
                .into_iter()
                .map(|v| truncate(v, n, self.recipe.normalize))
                .collect(),
            None => vectors,
        })
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

/// Matryoshka truncation: the first `n` components, normalised again when the recipe
/// normalises (the prefix of a unit vector is not one).
fn truncate(mut v: Vec<f32>, n: usize, normalize: bool) -> Vec<f32> {
    v.truncate(n);
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
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
