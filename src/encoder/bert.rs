//! BERT-family encoders (all-MiniLM-L6-v2, bge, ...) through candle-transformers' `BertModel`,
//! which returns every hidden state and takes a padding mask, exactly what embedding needs.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

pub struct BertEncoder {
    model: BertModel,
    hidden_size: usize,
}

impl BertEncoder {
    pub fn load(vb: VarBuilder, config: &serde_json::Value) -> Result<Self> {
        let cfg: Config =
            serde_json::from_value(config.clone()).context("config.json is not a BERT config")?;
        let hidden_size = cfg.hidden_size;
        Ok(Self {
            model: BertModel::load(vb, &cfg)?,
            hidden_size,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

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
