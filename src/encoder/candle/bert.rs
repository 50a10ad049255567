//! BERT-family encoders (all-MiniLM-L6-v2, bge, ...) through candle-transformers' `BertModel`,
//! which returns every hidden state and takes a padding mask, exactly what embedding needs.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use crate::encoder::backbone::{Backbone, Batch};
use crate::encoder::{AttentionBlocks, Checkpoint, Recipe};

/// A BERT checkpoint's encoder.
pub fn load(vb: VarBuilder, ck: &Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: Config = serde_json::from_value(ck.config.clone())
        .with_context(|| format!("{}: not a BERT config", ck.files.config.display()))?;
    Ok(Box::new(Bert {
        hidden_size: cfg.hidden_size,
        model: BertModel::load(vb, &cfg)?,
    }))
}

pub struct Bert {
    model: BertModel,
    hidden_size: usize,
}

impl Bert {
    /// Final hidden states `[batch, len, hidden]` in f32. Rows must be right-padded: positions are
    /// absolute from 0 (the recipe refuses left padding for BERT).
    pub fn forward(&self, ids: &[u32], mask: &[u8], batch: usize, len: usize) -> Result<Tensor> {
        let dev = &self.model.device;
        let input = Tensor::from_slice(ids, (batch, len), dev)?;
        let type_ids = input.zeros_like()?;
        let mask: Vec<u32> = mask.iter().map(|&m| m as u32).collect();
        let mask = Tensor::from_vec(mask, (batch, len), dev)?;
        let hidden = self.model.forward(&input, &type_ids, Some(&mask))?;
        Ok(hidden.to_dtype(DType::F32)?)
    }
}

impl Backbone for Bert {
    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn wants_padding(&self) -> bool {
        true
    }

    /// candle-transformers' BERT attends all at once; its inputs stop at 512 tokens.
    fn attention_blocks(&self) -> AttentionBlocks {
        AttentionBlocks::UNBLOCKED
    }

    fn embed(&self, batch: &Batch, recipe: &Recipe) -> Result<Vec<Vec<f32>>> {
        let p = batch.padded()?;
        let hidden = self.forward(&p.ids, &p.mask, p.rows, p.len)?;
        super::pool(&hidden, p, recipe)
    }
}
