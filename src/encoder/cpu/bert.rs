//! BERT encoder (all-MiniLM-L6-v2, bge, e5, ...) on the CPU engine: fused QKV projection,
//! unpadded attention per text, post-norm residuals, exact GELU.

use anyhow::{bail, Context, Result};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::sync::Mutex;

use super::ops::{self, QkvLayout};
use super::{weights, Engine, Linear, Precision, Workspace};
use crate::encoder::backbone::{Backbone, Batch};
use crate::encoder::{AttentionBlocks, Checkpoint, Recipe};

/// A BERT checkpoint's encoder; `None` (candle runs it) for an f32 config this engine lacks.
pub fn load(vb: VarBuilder, ck: &Checkpoint, engine: Engine) -> Result<Option<Box<dyn Backbone>>> {
    let cfg: BertConfig = serde_json::from_value(ck.config.clone())
        .with_context(|| format!("{}: not a BERT config", ck.files.config.display()))?;
    match cfg.unsupported() {
        None => Ok(Some(Box::new(Bert::load(vb, cfg, engine)?))),
        Some(_) if engine.precision == Precision::F32 => Ok(None),
        // candle has no bf16 / int8 CPU path worth running.
        Some(why) => bail!(
            "--dtype {} on the CPU: the CPU engine does not support {why}",
            engine.precision.name()
        ),
    }
}

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
    engine: Engine,
    work: Mutex<Workspace>,
}

impl Bert {
    pub fn load(vb: VarBuilder, cfg: BertConfig, engine: Engine) -> Result<Self> {
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
            .map(|i| Layer::load(&cfg, vb.pp(format!("encoder.layer.{i}")), engine))
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
            engine,
            work: Mutex::new(Workspace::default()),
            cfg,
        })
    }

    /// Final hidden states of the concatenated texts, `[tokens, h]`, in the workspace `w`.
    fn forward<'w>(&self, texts: &[&[u32]], w: &'w mut Workspace) -> Result<&'w [f32]> {
        let (h, eps) = (self.cfg.hidden_size, self.cfg.layer_norm_eps as f32);
        let isa = self.engine.isa;
        let spans = super::spans(texts);
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let x = self.lookup(texts, &mut w.x)?;
        ops::layer_norm(isa, x, &self.emb_norm.gamma, &self.emb_norm.beta, eps);
        let lay = QkvLayout {
            stride: 3 * h,
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_attention_heads,
            head_dim: h / self.cfg.num_attention_heads,
            causal: false,
            window: None,
        };
        for l in &self.layers {
            let qkv = Workspace::take(&mut w.qkv, t * 3 * h);
            l.qkv.forward(x, t, qkv);
            let ctx = Workspace::take(&mut w.ctx, t * h);
            ops::attention(isa, qkv, lay, &spans, ctx);
            let proj = Workspace::take(&mut w.proj, t * h);
            l.out.forward(ctx, t, proj);
            let attn_norm = &l.attn_norm;
            ops::add_layer_norm(isa, proj, x, &attn_norm.gamma, &attn_norm.beta, eps);
            let ffn = Workspace::take(&mut w.ffn, t * self.cfg.intermediate_size);
            l.up.forward(proj, t, ffn);
            ops::gelu(isa, ffn);
            l.down.forward(ffn, t, x);
            ops::add_layer_norm(isa, x, proj, &l.ffn_norm.gamma, &l.ffn_norm.beta, eps);
        }
        Ok(x)
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

impl Backbone for Bert {
    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    fn wants_padding(&self) -> bool {
        false
    }

    /// At most 128 query rows of scores per thread (see `ops::attention`): not worth budgeting.
    fn attention_blocks(&self) -> AttentionBlocks {
        AttentionBlocks { rows: Some(1) }
    }

    /// Always bidirectional: the recipe refuses causal attention for BERT.
    fn embed(&self, batch: &Batch, recipe: &Recipe) -> Result<Vec<Vec<f32>>> {
        let mut w = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let hidden = self.forward(&batch.texts, &mut w)?;
        let h = self.cfg.hidden_size;
        Ok(super::pool(
            hidden,
            h,
            &batch.texts,
            recipe.pooling,
            recipe.normalize,
        ))
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
    fn load(cfg: &BertConfig, l: VarBuilder, engine: Engine) -> Result<Self> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let a = l.pp("attention");
        let s = a.pp("self");
        let mut w = Vec::with_capacity(3 * h * h);
        let mut b = Vec::with_capacity(3 * h);
        for name in ["query", "key", "value"] {
            w.extend(weights(&s, &format!("{name}.weight"), &[h, h])?);
            b.extend(weights(&s, &format!("{name}.bias"), &[h])?);
        }
        let tensors = |vb: &VarBuilder, n: usize, k: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((weights(vb, "weight", &[n, k])?, weights(vb, "bias", &[n])?))
        };
        let (out_w, out_b) = tensors(&a.pp("output.dense"), h, h)?;
        let (up_w, up_b) = tensors(&l.pp("intermediate.dense"), inter, h)?;
        let (down_w, down_b) = tensors(&l.pp("output.dense"), h, inter)?;
        Ok(Self {
            qkv: engine.linear(&w, (3 * h, h), Some(&b))?,
            out: engine.linear(&out_w, (h, h), Some(&out_b))?,
            attn_norm: Norm::load(&a.pp("output.LayerNorm"), h)?,
            up: engine.linear(&up_w, (inter, h), Some(&up_b))?,
            down: engine.down_linear(&down_w, (h, inter), Some(&down_b))?,
            ffn_norm: Norm::load(&l.pp("output.LayerNorm"), h)?,
        })
    }
}
