//! Llama-family embedder on the CPU engine: fused QKV and gate/up projections, rotary
//! positions counted per text, unpadded causal or bidirectional attention, SwiGLU.

use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use std::sync::Mutex;

use super::ops::{self, QkvLayout};
use super::{weights, Isa, Linear, Precision, Workspace};
use crate::encoder::llama::LlamaConfig;
use crate::encoder::{Attention, Pooling};

struct Layer {
    qkv: Linear,
    o: Linear,
    gate_up: Linear,
    down: Linear,
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    inv_freq: Vec<f32>,
    isa: Isa,
    work: Mutex<Workspace>,
}

impl Llama {
    pub fn load(vb: VarBuilder, cfg: LlamaConfig, precision: Precision, isa: Isa) -> Result<Self> {
        cfg.validate()?;
        let vb = if vb.contains_tensor("model.embed_tokens.weight") {
            vb.pp("model")
        } else {
            vb
        };
        let h = cfg.hidden_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(&cfg, vb.pp(format!("layers.{i}")), precision, isa))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: weights(&vb, "embed_tokens.weight", &[cfg.vocab_size, h])?,
            norm: weights(&vb, "norm.weight", &[h])?,
            inv_freq: cfg.rope_inv_freq(),
            layers,
            isa,
            work: Mutex::new(Workspace::default()),
            cfg,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// One pooled vector per text (from the hidden states after the last RMSNorm).
    pub fn embed(
        &self,
        texts: &[&[u32]],
        attention: Attention,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let (h, hd, eps) = (c.hidden_size, c.head_dim(), c.rms_norm_eps as f32);
        let (nh, nkv) = (c.num_attention_heads, c.kv_heads());
        let spans = super::spans(texts);
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let (cos, sin) = self.rope_tables(texts);
        let mut w = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *w;
        let x = Workspace::take(&mut w.x, t * h);
        for (row, &id) in texts.iter().flat_map(|s| s.iter()).enumerate() {
            if id as usize >= c.vocab_size {
                bail!("token id {id} is outside the vocabulary ({})", c.vocab_size);
            }
            x[row * h..(row + 1) * h].copy_from_slice(&self.embed[id as usize * h..][..h]);
        }
        let lay = QkvLayout {
            stride: (nh + 2 * nkv) * hd,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            causal: attention == Attention::Causal,
        };
        for l in &self.layers {
            let normed = Workspace::take(&mut w.proj, t * h);
            ops::rms_norm(self.isa, x, normed, &l.input_norm, eps);
            let qkv = Workspace::take(&mut w.qkv, t * lay.stride);
            l.qkv.forward(normed, t, qkv);
            for (row, chunk) in qkv.chunks_exact_mut(lay.stride).enumerate() {
                let (cs, sn) = (
                    &cos[row * hd / 2..][..hd / 2],
                    &sin[row * hd / 2..][..hd / 2],
                );
                for head in chunk[..(nh + nkv) * hd].chunks_exact_mut(hd) {
                    ops::rope(head, cs, sn);
                }
            }
            let ctx = Workspace::take(&mut w.ctx, t * nh * hd);
            ops::attention(self.isa, qkv, lay, &spans, ctx);
            l.o.forward(ctx, t, normed);
            ops::add(self.isa, x, normed);
            ops::rms_norm(self.isa, x, normed, &l.post_norm, eps);
            let inter = c.intermediate_size;
            let gu = Workspace::take(&mut w.ffn, t * 2 * inter);
            l.gate_up.forward(normed, t, gu);
            let act = Workspace::take(&mut w.act, t * inter);
            ops::silu_mul(self.isa, gu, act, inter);
            l.down.forward(act, t, normed);
            ops::add(self.isa, x, normed);
        }
        let out = Workspace::take(&mut w.proj, t * h);
        ops::rms_norm(self.isa, x, out, &self.norm, eps);
        Ok(super::pool(out, h, texts, pooling, normalize))
    }

    /// cos / sin `[tokens, head_dim / 2]`; positions count from 0 in each text, and the angle
    /// is an f32 product as the reference computes it.
    fn rope_tables(&self, texts: &[&[u32]]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let t: usize = texts.iter().map(|s| s.len()).sum();
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for s in texts {
            for pos in 0..s.len() {
                for &f in &self.inv_freq {
                    let a = pos as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        (cos, sin)
    }
}

impl Layer {
    fn load(cfg: &LlamaConfig, l: VarBuilder, p: Precision, isa: Isa) -> Result<Self> {
        let (h, hd, inter) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let a = l.pp("self_attn");
        let m = l.pp("mlp");
        let qkv = [
            ("q_proj", nh * hd),
            ("k_proj", nkv * hd),
            ("v_proj", nkv * hd),
        ];
        let (qkv_w, qkv_b) = stack(&a, &qkv, h, cfg.attention_bias)?;
        let (gu_w, gu_b) = stack(
            &m,
            &[("gate_proj", inter), ("up_proj", inter)],
            h,
            cfg.mlp_bias,
        )?;
        let single_as = |vb: VarBuilder, n: usize, k: usize, bias: bool, p| -> Result<Linear> {
            let (w, b) = stack(&vb, &[("", n)], k, bias)?;
            Linear::new(&w, (n, k), b.as_deref(), p, isa)
        };
        let single = |vb, n, k, bias| single_as(vb, n, k, bias, p);
        Ok(Self {
            qkv: Linear::new(&qkv_w, ((nh + 2 * nkv) * hd, h), qkv_b.as_deref(), p, isa)?,
            o: single(a.pp("o_proj"), h, nh * hd, cfg.attention_bias)?,
            gate_up: Linear::new(&gu_w, (2 * inter, h), gu_b.as_deref(), p, isa)?,
            down: single_as(
                m.pp("down_proj"),
                h,
                inter,
                cfg.mlp_bias,
                p.for_down_projection(),
            )?,
            input_norm: weights(&l, "input_layernorm.weight", &[h])?,
            post_norm: weights(&l, "post_attention_layernorm.weight", &[h])?,
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
