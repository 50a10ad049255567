//! A checkpoint before its weights are loaded: where its files are, its architecture, recipe and
//! identity (fingerprint), and what a manifest records about it.

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::recipe::{self, Architecture, Recipe, RecipeOverrides};
use super::source::{self, ModelFiles};
use super::{resolve_dtype, DType, Device, EncoderOptions, ModelConfig};

/// What `embed info` prints and what every manifest records about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub path: String,
    pub fingerprint: String,
    /// Width of the vectors made: the model's, or `--dim`'s (the recipe's `truncate_dim`).
    pub dim: usize,
    pub vocab_size: usize,
    pub dtype: DType,
    pub device: Device,
    #[serde(flatten)]
    pub recipe: Recipe,
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
    /// What config.json says beyond the shapes, resolved in either layout and checked.
    pub settings: ModelConfig,
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

    /// Like [`Checkpoint::open`], but `check` sees the fingerprint first, before the recipe is
    /// resolved: a manifest refuses another model by its identity, not by a confusing recipe
    /// error. (The fingerprint covers config.json's resolved settings, so a config exemplar
    /// refuses is refused before `check`.)
    pub fn open_checked(
        model: &str,
        overrides: &RecipeOverrides,
        check: impl FnOnce(&str) -> Result<()>,
    ) -> Result<Self> {
        let dir = source::resolve_model_dir(model)?;
        let files = source::locate_files(&dir)?;
        let config = recipe::read_json(&files.config)?;
        let architecture = recipe::detect_architecture(&files.config, &config)?;
        let settings = ModelConfig::read(&files.config, &config, architecture)?;
        let fingerprint = fingerprint(&files, &settings)?;
        check(&fingerprint)?;
        let recipe = recipe::resolve_recipe(&files, &config, architecture, overrides)?;
        settings
            .check_length(recipe.max_length)
            .with_context(|| files.config.display().to_string())?;
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
            settings,
            recipe,
        })
    }

    /// The model description a manifest records for these options (the dtype resolved).
    pub fn info(&self, opts: &EncoderOptions) -> ModelInfo {
        ModelInfo {
            model: self.model.clone(),
            path: self.dir.display().to_string(),
            fingerprint: self.fingerprint.clone(),
            dim: self.recipe.truncate_dim.unwrap_or(self.dim),
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

/// A cheap identity for a checkpoint: config and tokenizer in full, plus each weight file's
/// size, safetensors header and 16 evenly spaced 64 KiB samples. Hashing all 16 GB of an 8B
/// model on every run would cost more than it protects.
///
/// A config in the transformers 5 layout (`rope_parameters`) also hashes the settings exemplar
/// resolved from it: versions before the one config reader read that layout wrongly (theta
/// 10,000, no scaling) under the same file hash, and their vectors must not be mixed with right
/// ones. A config in the older layout was always read right, so its identity stays what it was
/// and extractions and indexes made before keep working.
pub fn fingerprint(files: &ModelFiles, settings: &ModelConfig) -> Result<String> {
    let config = std::fs::read(&files.config)
        .with_context(|| format!("reading {}", files.config.display()))?;
    let mut h = Sha256::new();
    if has_rope_parameters(&config) {
        h.update(b"exemplar resolved config v1\0");
        h.update(serde_json::to_vec(settings)?);
    }
    h.update(&config);
    let tokenizer = std::fs::read(&files.tokenizer)
        .with_context(|| format!("reading {}", files.tokenizer.display()))?;
    h.update(tokenizer);
    for p in &files.weights {
        hash_sampled(&mut h, p)?;
    }
    Ok(format!("sha256:{:x}", h.finalize())[..23].to_string())
}

/// Whether config.json has a top-level `rope_parameters` (the transformers 5 layout).
fn has_rope_parameters(config: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .is_some_and(|v| v.get("rope_parameters").is_some())
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
