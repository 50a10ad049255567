//! Pooling of final hidden states into one vector per text, and L2 normalisation.

use anyhow::{Context, Result};
use candle_core::{Tensor, D};

/// Mean of the hidden states at real tokens, per row.
pub fn mean_pool(hidden: &Tensor, mask: &[u8], batch: usize, len: usize) -> Result<Tensor> {
    let m: Vec<f32> = mask.iter().map(|&v| v as f32).collect();
    let m = Tensor::from_vec(m, (batch, len, 1), hidden.device())?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// Hidden state of each row's last real token (works for left and right padding).
pub fn last_token_pool(hidden: &Tensor, mask: &[u8], batch: usize, len: usize) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(batch);
    for b in 0..batch {
        let last = (0..len)
            .rev()
            .find(|&t| mask[b * len + t] != 0)
            .context("a row with no real tokens")?;
        rows.push(hidden.get(b)?.get(last)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Hidden state of each row's first real token ([CLS] for BERT).
pub fn first_token_pool(hidden: &Tensor, mask: &[u8], batch: usize, len: usize) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(batch);
    for b in 0..batch {
        let first = (0..len)
            .find(|&t| mask[b * len + t] != 0)
            .context("a row with no real tokens")?;
        rows.push(hidden.get(b)?.get(first)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// L2-normalise each row: `v / max(||v||, 1e-12)`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
