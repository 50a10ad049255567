//! BERT encoder (all-MiniLM-L6-v2, bge, e5, ...) on the CPU engine: fused QKV projection,
//! unpadded attention per text, post-norm residuals, exact GELU.

use anyhow::{bail, Context, Result};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::sync::Mutex;

use super::ops::{self, QkvLayout};
use super::{weights, Isa, Linear, Precision, Workspace};
use crate::encoder::Pooling;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Why this engine cannot run the config (the caller then uses candle), if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Some(format!("hidden_act {act:?}"));
        }
        if let Some(p) = self
            .position_embedding_type
            .as_deref()
            .filter(|p| *p != "absolute")
        {
            return Some(format!("position_embedding_type {p:?}"));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Some("hidden_size not a multiple of num_attention_heads".into());
        }
        None
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    ffn_norm: Norm,
}

pub struct Bert {
    cfg: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    isa: Isa,
    work: Mutex<Workspace>,
}

impl Bert {
    pub fn load(vb: VarBuilder, cfg: BertConfig, precision: Precision, isa: Isa) -> Result<Self> {
        if let Some(why) = cfg.unsupported() {
            bail!("the CPU engine does not support {why}");
        }
        let vb = ["", "bert.", "model."]
            .iter()
            .find(|p| vb.contains_tensor(&format!("{p}embeddings.word_embeddings.weight")))
            .map(|p| {
                if p.is_empty() {
                    vb.clone()
                } else {
                    vb.pp(p.trim_end_matches('.'))
                }
            })
            .context("no embeddings.word_embeddings.weight in the checkpoint")?;
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let emb_norm = Norm::load(&e.pp("LayerNorm"), h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&cfg, vb.pp(format!("encoder.layer.{i}")), precision, isa))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: weights(&e, "word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: weights(
                &e,
                "position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: weights(
                &e,
                "token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            emb_norm,
            layers,
            isa,
            work: Mutex::new(Workspace::default()),
            cfg,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// One pooled vector per text.
    pub fn embed(
        &self,
        texts: &[&[u32]],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let (h, eps) = (self.cfg.hidden_size, self.cfg.layer_norm_eps as f32);
        let spans = super::spans(texts);
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let mut w = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *w;
        let x = self.lookup(texts, &mut w.x)?;
        ops::layer_norm(self.isa, x, &self.emb_norm.gamma, &self.emb_norm.beta, eps);
        let lay = QkvLayout {
            stride: 3 * h,
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_attention_heads,
            head_dim: h / self.cfg.num_attention_heads,
            causal: false,
        };
        for l in &self.layers {
            let qkv = Workspace::take(&mut w.qkv, t * 3 * h);
            l.qkv.forward(x, t, qkv);
            let ctx = Workspace::take(&mut w.ctx, t * h);
            ops::attention(self.isa, qkv, lay, &spans, ctx);
            let proj = Workspace::take(&mut w.proj, t * h);
            l.out.forward(ctx, t, proj);
            ops::add_layer_norm(
                self.isa,
                proj,
                x,
                &l.attn_norm.gamma,
                &l.attn_norm.beta,
                eps,
            );
            let ffn = Workspace::take(&mut w.ffn, t * self.cfg.intermediate_size);
            l.up.forward(proj, t, ffn);
            ops::gelu(self.isa, ffn);
            l.down.forward(ffn, t, x);
            ops::add_layer_norm(self.isa, x, proj, &l.ffn_norm.gamma, &l.ffn_norm.beta, eps);
        }
        Ok(super::pool(x, h, texts, pooling, normalize))
    }

    /// Word + position + token-type (0) embeddings into the workspace.
    fn lookup<'a>(&self, texts: &[&[u32]], buf: &'a mut Vec<f32>) -> Result<&'a mut [f32]> {
        let h = self.cfg.hidden_size;
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let x = Workspace::take(buf, t * h);
        let mut row = 0;
        for ids in texts {
            if ids.len() > self.cfg.max_position_embeddings {
                bail!(
                    "a text of {} tokens is longer than the model's {} positions",
                    ids.len(),
                    self.cfg.max_position_embeddings
                );
            }
            for (pos, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.cfg.vocab_size {
                    bail!(
                        "token id {id} is outside the vocabulary ({})",
                        self.cfg.vocab_size
                    );
                }
                let out = &mut x[row * h..(row + 1) * h];
                let (w, p) = (&self.word[id * h..][..h], &self.position[pos * h..][..h]);
                for (((o, w), p), t) in out.iter_mut().zip(w).zip(p).zip(&self.token_type[..h]) {
                    *o = w + p + t;
                }
                row += 1;
            }
        }
        Ok(x)
    }
}

impl Norm {
    fn load(vb: &VarBuilder, h: usize) -> Result<Self> {
        Ok(Self {
            gamma: weights(vb, "weight", &[h])?,
            beta: weights(vb, "bias", &[h])?,
        })
    }
}

impl Layer {
    fn load(cfg: &BertConfig, l: VarBuilder, p: Precision, isa: Isa) -> Result<Self> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let a = l.pp("attention");
        let s = a.pp("self");
        let mut w = Vec::with_capacity(3 * h * h);
        let mut b = Vec::with_capacity(3 * h);
        for name in ["query", "key", "value"] {
            w.extend(weights(&s, &format!("{name}.weight"), &[h, h])?);
            b.extend(weights(&s, &format!("{name}.bias"), &[h])?);
        }
        let linear = |vb: &VarBuilder, n: usize, k: usize, p: Precision| -> Result<Linear> {
            let w = weights(vb, "weight", &[n, k])?;
            let b = weights(vb, "bias", &[n])?;
            Linear::new(&w, (n, k), Some(&b), p, isa)
        };
        Ok(Self {
            qkv: Linear::new(&w, (3 * h, h), Some(&b), p, isa)?,
            out: linear(&a.pp("output.dense"), h, h, p)?,
            attn_norm: Norm::load(&a.pp("output.LayerNorm"), h)?,
            up: linear(&l.pp("intermediate.dense"), inter, h, p)?,
            down: linear(&l.pp("output.dense"), h, inter, p.for_down_projection())?,
            ffn_norm: Norm::load(&l.pp("output.LayerNorm"), h)?,
        })
    }
}
