//! Llama-built embedders on the CPU engine (Llama, Qwen3, Qwen2, Mistral): a [`Decoder`] built
//! from a [`DecoderShape`] (fused QKV and gate/up projections, Qwen3's per-head q/k norms,
//! rotary positions counted per text, unpadded causal or bidirectional attention, Mistral's
//! sliding window, SwiGLU).

use anyhow::{bail, Context, Result};
use candle_nn::VarBuilder;
use std::sync::Mutex;

use super::ops::{self, QkvLayout};
use super::{weights, Engine, Linear, Workspace};
use crate::encoder::backbone::{Backbone, Batch};
use crate::encoder::decoder::DecoderShape;
use crate::encoder::llama::LlamaConfig;
use crate::encoder::{Attention, AttentionBlocks, Checkpoint, Recipe};

/// A Llama-built checkpoint's decoder.
pub fn load(vb: VarBuilder, ck: &Checkpoint, engine: Engine) -> Result<Option<Box<dyn Backbone>>> {
    let cfg: LlamaConfig = serde_json::from_value(ck.config.clone()).with_context(|| {
        let arch = ck.architecture;
        format!("{}: not a {arch:?} config", ck.files.config.display())
    })?;
    Ok(Some(Box::new(Decoder::load(vb, cfg.shape()?, engine)?)))
}

struct Layer {
    qkv: Linear,
    o: Linear,
    gate_up: Linear,
    down: Linear,
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// Qwen3's per-head RMSNorm weights on queries and keys, `[head_dim]` each.
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
}

pub struct Decoder {
    shape: DecoderShape,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    engine: Engine,
    work: Mutex<Workspace>,
}

impl Decoder {
    pub fn load(vb: VarBuilder, shape: DecoderShape, engine: Engine) -> Result<Self> {
        // Checkpoints saved from `LlamaModel` have bare names; `LlamaForCausalLM` prefixes `model.`.
        let vb = if vb.contains_tensor("model.embed_tokens.weight") {
            vb.pp("model")
        } else {
            vb
        };
        let h = shape.hidden_size;
        let layers = (0..shape.layers)
            .map(|i| Layer::load(&shape, vb.pp(format!("layers.{i}")), engine))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: weights(&vb, "embed_tokens.weight", &[shape.vocab_size, h])?,
            norm: weights(&vb, "norm.weight", &[h])?,
            layers,
            engine,
            work: Mutex::new(Workspace::default()),
            shape,
        })
    }

    /// Final hidden states (after the last RMSNorm) of the concatenated texts, `[tokens, h]`,
    /// in the workspace `w`.
    fn forward<'w>(
        &self,
        texts: &[&[u32]],
        attention: Attention,
        w: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        let s = &self.shape;
        let (h, hd, eps) = (s.hidden_size, s.head_dim, s.rms_norm_eps as f32);
        let isa = self.engine.isa;
        let spans = super::spans(texts);
        let t: usize = texts.iter().map(|s| s.len()).sum();
        s.check_window(attention, texts.iter().map(|t| t.len()).max().unwrap_or(0))?;
        let (cos, sin) = self.rope_tables(texts);
        let x = self.lookup(texts, &mut w.x)?;
        let lay = QkvLayout {
            stride: s.qkv_width(),
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: hd,
            causal: attention == Attention::Causal,
            window: s.sliding_window,
        };
        for l in &self.layers {
            let normed = Workspace::take(&mut w.proj, t * h);
            ops::rms_norm(isa, x, normed, &l.input_norm, eps);
            let qkv = Workspace::take(&mut w.qkv, t * lay.stride);
            l.qkv.forward(normed, t, qkv);
            for (row, chunk) in qkv.chunks_exact_mut(lay.stride).enumerate() {
                let (cs, sn) = (
                    &cos[row * hd / 2..][..hd / 2],
                    &sin[row * hd / 2..][..hd / 2],
                );
                if let Some((qn, kn)) = &l.qk_norm {
                    let (q, k) = chunk.split_at_mut(s.heads * hd);
                    ops::rms_norm_in_place(isa, q, qn, eps);
                    ops::rms_norm_in_place(isa, &mut k[..s.kv_heads * hd], kn, eps);
                }
                for head in chunk[..(s.heads + s.kv_heads) * hd].chunks_exact_mut(hd) {
                    ops::rope(head, cs, sn);
                }
            }
            let ctx = Workspace::take(&mut w.ctx, t * s.heads * hd);
            ops::attention(isa, qkv, lay, &spans, ctx);
            l.o.forward(ctx, t, normed);
            ops::add(isa, x, normed);
            ops::rms_norm(isa, x, normed, &l.post_norm, eps);
            let inter = s.intermediate_size;
            let gu = Workspace::take(&mut w.ffn, t * 2 * inter);
            l.gate_up.forward(normed, t, gu);
            let act = Workspace::take(&mut w.act, t * inter);
            ops::silu_mul(isa, gu, act, inter);
            l.down.forward(act, t, normed);
            ops::add(isa, x, normed);
        }
        let out = Workspace::take(&mut w.proj, t * h);
        ops::rms_norm(isa, x, out, &self.norm, eps);
        Ok(out)
    }

    /// The texts' token embeddings, concatenated, into the workspace.
    fn lookup<'a>(&self, texts: &[&[u32]], buf: &'a mut Vec<f32>) -> Result<&'a mut [f32]> {
        let (h, vocab) = (self.shape.hidden_size, self.shape.vocab_size);
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let x = Workspace::take(buf, t * h);
        for (row, &id) in texts.iter().flat_map(|s| s.iter()).enumerate() {
            if id as usize >= vocab {
                bail!("token id {id} is outside the vocabulary ({vocab})");
            }
            x[row * h..(row + 1) * h].copy_from_slice(&self.embed[id as usize * h..][..h]);
        }
        Ok(x)
    }

    /// cos / sin `[tokens, head_dim / 2]`; positions count from 0 in each text, and the angle
    /// is an f32 product as the reference computes it.
    fn rope_tables(&self, texts: &[&[u32]]) -> (Vec<f32>, Vec<f32>) {
        let inv_freq = &self.shape.inv_freq;
        let half = inv_freq.len();
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for s in texts {
            for pos in 0..s.len() {
                for &f in inv_freq {
                    let a = pos as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        (cos, sin)
    }
}

impl Backbone for Decoder {
    fn hidden_size(&self) -> usize {
        self.shape.hidden_size
    }

    fn wants_padding(&self) -> bool {
        false
    }

    /// At most 128 query rows of scores per thread (see `ops::attention`): not worth budgeting.
    fn attention_blocks(&self) -> AttentionBlocks {
        AttentionBlocks { rows: Some(1) }
    }

    fn embed(&self, batch: &Batch, recipe: &Recipe) -> Result<Vec<Vec<f32>>> {
        let mut w = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let hidden = self.forward(&batch.texts, recipe.attention, &mut w)?;
        let h = self.shape.hidden_size;
        Ok(super::pool(
            hidden,
            h,
            &batch.texts,
            recipe.pooling,
            recipe.normalize,
        ))
    }
}

impl Layer {
    fn load(s: &DecoderShape, l: VarBuilder, engine: Engine) -> Result<Self> {
        let (h, hd, inter) = (s.hidden_size, s.head_dim, s.intermediate_size);
        let (nh, nkv) = (s.heads, s.kv_heads);
        let a = l.pp("self_attn");
        let m = l.pp("mlp");
        let qkv = [
            ("q_proj", nh * hd),
            ("k_proj", nkv * hd),
            ("v_proj", nkv * hd),
        ];
        let (qkv_w, qkv_b) = stack(&a, &qkv, h, s.qkv_bias)?;
        let gate_up = [("gate_proj", inter), ("up_proj", inter)];
        let (gu_w, gu_b) = stack(&m, &gate_up, h, s.mlp_bias)?;
        let (o_w, o_b) = stack(&a.pp("o_proj"), &[("", h)], nh * hd, s.o_bias)?;
        let (d_w, d_b) = stack(&m.pp("down_proj"), &[("", h)], inter, s.mlp_bias)?;
        Ok(Self {
            qkv: engine.linear(&qkv_w, (s.qkv_width(), h), qkv_b.as_deref())?,
            o: engine.linear(&o_w, (h, nh * hd), o_b.as_deref())?,
            gate_up: engine.linear(&gu_w, (2 * inter, h), gu_b.as_deref())?,
            down: engine.down_linear(&d_w, (h, inter), d_b.as_deref())?,
            input_norm: weights(&l, "input_layernorm.weight", &[h])?,
            post_norm: weights(&l, "post_attention_layernorm.weight", &[h])?,
            qk_norm: match s.qk_norm {
                true => Some((
                    weights(&a, "q_norm.weight", &[hd])?,
                    weights(&a, "k_norm.weight", &[hd])?,
                )),
                false => None,
            },
        })
    }
}

/// Weights (and biases) of several projections of the same input, stacked along the output
/// dimension so one matmul computes them all. `""` names `vb` itself.
#[allow(clippy::type_complexity)]
fn stack(
    vb: &VarBuilder,
    parts: &[(&str, usize)],
    k: usize,
    bias: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let mut w = Vec::new();
    let mut b = Vec::new();
    for &(name, n) in parts {
        let p = if name.is_empty() {
            vb.clone()
        } else {
            vb.pp(name)
        };
        w.extend(weights(&p, "weight", &[n, k])?);
        if bias {
            b.extend(weights(&p, "bias", &[n])?);
        }
    }
    Ok((w, bias.then_some(b)))
}
