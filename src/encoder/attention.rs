//! Exact attention in blocks of query rows, with masks built on the model's device.
//!
//! Scores for a whole sequence are `[batch, heads, L, L]`: at 32k tokens and 32 heads that is
//! 128 GiB in f32, materialised several times over. Softmax is taken per query row, so the rows
//! can be processed in blocks against all keys and the outputs concatenated: the result is the
//! same, and only `[batch, heads, rows, L]` scores exist at any time. A sequence no longer than
//! one block runs as a single block, which is the plain unblocked computation.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::Attention;

/// Query rows per attention block. Measured on the CPU (toy 3-layer Llama, 8 heads of 16): one
/// 7,800-token document peaked at 4.2 GB unblocked and 0.41 GB in 512-row blocks, and ran
/// faster; from 600 to 2,048 tokens blocked and unblocked ran at the same speed. Inputs of up
/// to 512 tokens run as one block, which is the unblocked computation.
pub const DEFAULT_ATTENTION_BLOCK_ROWS: usize = 512;

/// Environment variable that overrides the block size of every model loaded afterwards:
/// a number of query rows, or `0` / `off` for unblocked attention (for comparisons and tests).
pub const ATTENTION_BLOCK_ENV: &str = "EXEMPLAR_ATTENTION_BLOCK_ROWS";

/// Bytes per attention score: scores and softmax are always computed in f32.
pub const SCORE_BYTES: usize = 4;

/// How many query rows attention processes at once; `None` means all of them (unblocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionBlocks {
    pub rows: Option<usize>,
}

impl Default for AttentionBlocks {
    fn default() -> Self {
        Self {
            rows: Some(DEFAULT_ATTENTION_BLOCK_ROWS),
        }
    }
}

impl AttentionBlocks {
    /// Unblocked attention: every query row at once (the whole `L x L` score matrix).
    pub const UNBLOCKED: Self = Self { rows: None };

    /// The default, or what [`ATTENTION_BLOCK_ENV`] says.
    pub fn from_env() -> Result<Self> {
        match std::env::var(ATTENTION_BLOCK_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Rows per block for a sequence of `len` tokens.
    pub fn rows_for(self, len: usize) -> usize {
        self.rows.map_or(len, |r| r.min(len)).max(1)
    }

    /// Bytes of f32 attention scores one sequence of `len` tokens holds at a time, for `heads`
    /// query heads: `heads x min(len, block) x len x 4`.
    pub fn score_bytes(self, heads: usize, len: usize) -> usize {
        heads
            .saturating_mul(self.rows_for(len))
            .saturating_mul(len)
            .saturating_mul(SCORE_BYTES)
    }
}

impl std::str::FromStr for AttentionBlocks {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "0" | "off" | "none" | "unblocked" => Ok(Self::UNBLOCKED),
            n => match n.parse::<usize>() {
                Ok(rows) => Ok(Self { rows: Some(rows) }),
                Err(_) => anyhow::bail!(
                    "{ATTENTION_BLOCK_ENV}={s:?}: expected a number of query rows, or 0 / off"
                ),
            },
        }
    }
}

/// The attention masks of one batch, kept on the device: which keys are real tokens, and
/// whether a query may see later keys. Block biases are built from them on demand.
pub struct Masks {
    /// `[batch, 1, 1, len]` f32: 0 at real keys, `f32::MIN` at padding; `None` without padding.
    key_bias: Option<Tensor>,
    causal: bool,
    /// Causal attention to at most this many keys, the query's own included (Mistral).
    window: Option<usize>,
    len: usize,
    device: Device,
}

impl Masks {
    /// `mask` is row-major `[batch, len]`, 1 at real tokens.
    pub fn new(
        mask: &[u8],
        batch: usize,
        len: usize,
        attention: Attention,
        dev: &Device,
    ) -> Result<Self> {
        let key_bias = if mask.iter().all(|&m| m != 0) {
            None
        } else {
            let m = Tensor::from_slice(mask, (batch, 1, 1, len), dev)?.to_dtype(DType::F32)?;
            // 1 -> MAX + MIN = 0 exactly; 0 -> MIN.
            Some(m.affine(f32::MAX as f64, f32::MIN as f64)?)
        };
        Ok(Self {
            key_bias,
            causal: attention == Attention::Causal,
            window: None,
            len,
            device: dev.clone(),
        })
    }

    /// The same masks, with causal attention limited to `window` keys (`None`: unlimited).
    /// Padding shifts queries and keys alike, so distances in the padded rows are the real ones.
    pub fn with_window(mut self, window: Option<usize>) -> Self {
        self.window = window;
        self
    }

    /// Additive bias for query rows `start..start + rows`, broadcastable to
    /// `[batch, heads, rows, len]` (`None`: nothing is hidden). One value per cell, 0 or
    /// `f32::MIN`, never a sum of two, so no row overflows to -inf and turns softmax into NaN.
    pub fn block(&self, start: usize, rows: usize) -> Result<Option<Tensor>> {
        if !self.causal {
            return Ok(self.key_bias.clone());
        }
        let dev = &self.device;
        let q = Tensor::arange(start as u32, (start + rows) as u32, dev)?.reshape((rows, 1))?;
        let k = Tensor::arange(0u32, self.len as u32, dev)?.reshape((1, self.len))?;
        // Future keys (k > q) are hidden: 1 * MIN = MIN, 0 * MIN = -0.0.
        let mut future = k
            .broadcast_gt(&q)?
            .to_dtype(DType::F32)?
            .affine(f32::MIN as f64, 0.0)?
            .reshape((1, 1, rows, self.len))?;
        if let Some(w) = self.window {
            // Keys `w` or more behind the query are hidden too: k + w <= q.
            let len = self.len as u32;
            let shifted = Tensor::arange(w as u32, len + w as u32, dev)?.reshape((1, self.len))?;
            let old = shifted
                .broadcast_le(&q)?
                .to_dtype(DType::F32)?
                .affine(f32::MIN as f64, 0.0)?
                .reshape((1, 1, rows, self.len))?;
            future = future.minimum(&old)?;
        }
        Ok(Some(match &self.key_bias {
            Some(keys) => keys.broadcast_minimum(&future)?,
            None => future,
        }))
    }
}

/// Scaled dot-product attention of `q` `[batch, heads, len, hd]` (already multiplied by the
/// scale) over `k`, `v` `[batch, kv_heads, len, hd]`, in blocks of query rows. Returns
/// `[batch, heads, len, hd]` in `v`'s dtype.
pub fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    masks: &Masks,
    blocks: AttentionBlocks,
) -> Result<Tensor> {
    let (batch, heads, len, hd) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let kt = k.t()?;
    let rows = blocks.rows_for(len);
    let mut outs = Vec::with_capacity(len.div_ceil(rows));
    for start in (0..len).step_by(rows) {
        let n = rows.min(len - start);
        // Grouped-query attention without copying K/V: the `group` query heads sharing one KV
        // head are stacked along the row axis, so one batched matmul serves them all.
        let qb = q
            .narrow(2, start, n)?
            .contiguous()?
            .reshape((batch, kv_heads, group * n, hd))?;
        let mut scores = qb.matmul(&kt)?.to_dtype(DType::F32)?;
        if let Some(bias) = masks.block(start, n)? {
            scores = scores
                .reshape((batch, heads, n, len))?
                .broadcast_add(&bias)?
                .reshape((batch, kv_heads, group * n, len))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        drop(scores);
        let probs = probs.to_dtype(v.dtype())?;
        outs.push(probs.matmul(v)?.reshape((batch, heads, n, hd))?);
    }
    Ok(Tensor::cat(&outs, 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_and_score_memory() {
        let b = AttentionBlocks::default();
        assert_eq!(b.rows_for(100), 100);
        assert_eq!(b.rows_for(5000), DEFAULT_ATTENTION_BLOCK_ROWS);
        assert_eq!(AttentionBlocks::UNBLOCKED.rows_for(5000), 5000);
        assert_eq!(b.score_bytes(32, 32768), 32 * 512 * 32768 * 4);
        assert_eq!(
            "off".parse::<AttentionBlocks>().unwrap(),
            AttentionBlocks::UNBLOCKED
        );
        assert_eq!(
            "0".parse::<AttentionBlocks>().unwrap(),
            AttentionBlocks::UNBLOCKED
        );
        assert_eq!("64".parse::<AttentionBlocks>().unwrap().rows, Some(64));
        assert!("x".parse::<AttentionBlocks>().is_err());
    }

    fn random(shape: (usize, usize, usize, usize), seed: f32) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.547).fract())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn blocks_equal_unblocked_with_padding_and_causal_mask() {
        let (batch, heads, kv, len, hd) = (2, 4, 2, 37, 8);
        let q = random((batch, heads, len, hd), 1.0);
        let k = random((batch, kv, len, hd), 2.0);
        let v = random((batch, kv, len, hd), 3.0);
        let mut mask = vec![1u8; batch * len];
        mask[len..len + 9].fill(0); // second row left-padded
        for attention in [Attention::Causal, Attention::Bidirectional] {
            let masks = Masks::new(&mask, batch, len, attention, &Device::Cpu).unwrap();
            let full = blocked_attention(&q, &k, &v, &masks, AttentionBlocks::UNBLOCKED).unwrap();
            for rows in [1, 5, 16, 36, 37, 100] {
                let blocks = AttentionBlocks { rows: Some(rows) };
                let got = blocked_attention(&q, &k, &v, &masks, blocks).unwrap();
                let diff = (&got - &full)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-6, "{attention:?} rows {rows}: {diff}");
            }
        }
    }
}
