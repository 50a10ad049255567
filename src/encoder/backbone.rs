//! One interface for every model body, whichever engine runs it: the encoder tokenises and
//! batches, a [`Backbone`] turns one batch of token ids into pooled vectors.
//!
//! Implementations: one file per architecture per engine, `cpu/{bert,llama}.rs` (our kernels,
//! unpadded) and `candle/{bert,llama}.rs` (candle's tensors, padded batches, CUDA). Adding an
//! architecture means one such file per engine, one line in each engine's `load`, and its
//! detection in [`super::recipe`].

use anyhow::{Context, Result};

use super::{config, cpu, AttentionBlocks, Checkpoint, EncoderOptions, PaddingSide, Recipe};

/// A loaded model body.
pub trait Backbone: Send + Sync {
    /// Width of the vectors (config.json's `hidden_size`, as the weights give it).
    fn hidden_size(&self) -> usize;

    /// Whether [`Backbone::embed`] reads `batch.padded` (rectangular `[texts, len]` ids with a
    /// mask) rather than the texts' ids alone.
    fn wants_padding(&self) -> bool;

    /// Query rows of attention scores held at once, for the batch planner's budget.
    fn attention_blocks(&self) -> AttentionBlocks;

    /// Compute attention in blocks of this many query rows, where the backbone blocks at all
    /// (the others keep theirs; see [`Backbone::attention_blocks`]).
    fn set_attention_blocks(&mut self, _blocks: AttentionBlocks) {}

    /// One f32 vector per text, in batch order, pooled (and normalised) as `recipe` says.
    fn embed(&self, batch: &Batch, recipe: &Recipe) -> Result<Vec<Vec<f32>>>;
}

/// The input of one forward pass.
pub struct Batch<'a> {
    /// Each text's token ids, unpadded.
    pub texts: Vec<&'a [u32]>,
    /// The same, padded into rows, when the backbone [wants it](Backbone::wants_padding).
    pub padded: Option<Padded>,
}

/// Texts padded to one length: row-major `[rows, len]` ids, and a mask with 1 at real tokens.
pub struct Padded {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub rows: usize,
    pub len: usize,
}

impl<'a> Batch<'a> {
    /// `texts` as they are, or also padded with `pad` on `side`.
    pub fn new(texts: Vec<&'a [u32]>, padding: Option<(PaddingSide, u32)>) -> Self {
        let padded = padding.map(|(side, pad)| Padded::new(&texts, side, pad));
        Self { texts, padded }
    }

    /// The padded form, which backbones that want padding are given.
    pub fn padded(&self) -> Result<&Padded> {
        self.padded
            .as_ref()
            .context("this backbone needs a padded batch")
    }
}

impl Padded {
    fn new(texts: &[&[u32]], side: PaddingSide, pad: u32) -> Self {
        let rows = texts.len();
        let len = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut ids = vec![pad; rows * len];
        let mut mask = vec![0u8; rows * len];
        for (b, t) in texts.iter().enumerate() {
            let offset = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => len - t.len(),
            };
            let row = b * len + offset;
            ids[row..row + t.len()].copy_from_slice(t);
            mask[row..row + t.len()].fill(1);
        }
        Self {
            ids,
            mask,
            rows,
            len,
        }
    }
}

/// The backbone for a checkpoint: the CPU engine where it runs the model, else candle. First,
/// what config.json declares is checked against the weights' headers.
pub fn load(ck: &Checkpoint, opts: &EncoderOptions) -> Result<Box<dyn Backbone>> {
    let shapes = config::tensor_shapes(&ck.files.weights)?;
    ck.settings
        .check_weights(&ck.config, &shapes)
        .with_context(|| {
            let (config, dir) = (ck.files.config.display(), ck.dir.display());
            format!("loading weights from {dir}: {config} does not match them")
        })?;
    match cpu::load(ck, opts)? {
        Some(backbone) => Ok(backbone),
        None => super::candle::load(ck, opts),
    }
}
