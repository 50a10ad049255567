#!/usr/bin/env python3
"""Qwen3 encoder benchmark (never run by the test suite): exemplar's CPU engine against
transformers' Qwen3Model (PyTorch, CPU, f32) on a Qwen3-shaped checkpoint of SmolLM2-135M's size
(hidden 576, 30 layers, 9 heads, 3 KV heads, head_dim 64, intermediate 1536, SmolLM2's 49,152
tokens), random weights, in the same run, interleaved.

Both sides embed the same MATH problems with Qwen3-Embedding's recipe as documents: EOS appended,
left padding, last-token pooling, L2 normalisation; transformers in batches of 32 sorted by
length. The vectors of both sides are compared (lowest cosine printed) before anything is timed.

  .cache/venv/bin/python scripts/bench_qwen3.py [--texts 200] [--repeats 2]

Needs torch and transformers in the running Python (the venv of scripts/bench-venv.sh has them)
and a release build (`cargo build --release`). Prints a Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (texts_file, machine, run_exemplar_encode, cpu_supports)

FIXTURE = bench.REPO / "tests/fixtures/tiny-qwen3-embed"
TOKENIZER = bench.REPO / "tests/fixtures/tiny-llama-embed"
SHAPE = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
             head_dim=64, intermediate_size=1536, vocab_size=49152)


def make_checkpoint(out):
    """Random Qwen3 weights of SmolLM2-135M's size, with the tiny fixture's recipe files."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    cfg = Qwen3Config(**SHAPE, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-6,
                      bos_token_id=1, eos_token_id=0, pad_token_id=0)
    model = Qwen3Model(cfg).to(torch.float32)
    with torch.no_grad():  # weights of order one, as in the fixtures (the default init is tiny)
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 1 if "embed" in name else p.shape[1] ** -0.5)
    model.save_pretrained(out)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(TOKENIZER / f, out / f)
    for f in ["config_sentence_transformers.json", "modules.json"]:
        shutil.copy(FIXTURE / f, out / f)
    shutil.copytree(FIXTURE / "1_Pooling", out / "1_Pooling")
    pooling = json.loads((out / "1_Pooling/config.json").read_text())
    pooling["word_embedding_dimension"] = SHAPE["hidden_size"]
    (out / "1_Pooling/config.json").write_text(json.dumps(pooling))


class Transformers:
    """transformers' Qwen3Model with the same recipe, loaded once."""

    def __init__(self, model_dir, threads):
        import torch
        from tokenizers import Tokenizer
        from transformers import Qwen3Model

        torch.set_num_threads(threads)
        self.torch = torch
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.model = Qwen3Model.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.eos = self.model.config.eos_token_id

    def embed(self, texts, batch_size=32):
        torch = self.torch
        ids = [e.ids + [self.eos] for e in self.tok.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [None] * len(ids)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                part = order[s:s + batch_size]
                n = max(len(ids[i]) for i in part)
                x = torch.full((len(part), n), self.eos, dtype=torch.long)
                mask = torch.zeros((len(part), n), dtype=torch.long)
                for r, i in enumerate(part):
                    x[r, n - len(ids[i]):] = torch.tensor(ids[i])
                    mask[r, n - len(ids[i]):] = 1
                h = self.model(input_ids=x, attention_mask=mask).last_hidden_state[:, -1]
                for r, v in zip(part, torch.nn.functional.normalize(h, dim=-1)):
                    out[r] = v
        return out, sum(len(i) for i in ids)

    def timed(self, texts):
        self.embed(texts[:32])  # warm-up
        start = time.perf_counter()
        _, tokens = self.embed(texts)
        seconds = time.perf_counter() - start
        return {"texts": len(texts), "tokens": tokens, "texts_per_s": len(texts) / seconds,
                "tokens_per_s": tokens / seconds}


def lowest_cosine(ours_jsonl, theirs):
    import torch
    rows = [json.loads(line) for line in open(ours_jsonl, encoding="utf-8")]
    return min(float(torch.dot(torch.tensor(r["embedding"]), t)) for r, t in zip(rows, theirs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    print(f"machine: {bench.machine()}; {args.repeats} interleaved runs each, median")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "qwen3-135m-random"
        make_checkpoint(model)
        texts_path = bench.texts_file(args.texts, tmp)
        texts = [json.loads(line)["text"] for line in open(texts_path, encoding="utf-8")]
        peer = Transformers(model, args.threads)
        # Same vectors first: a fast wrong encoder is no result.
        bench.run_exemplar_encode(model, texts_path)
        theirs, _ = peer.embed(texts)
        cos = lowest_cosine(Path(texts_path).with_suffix(".out.jsonl"), theirs)
        print(f"lowest cosine, exemplar f32 vs transformers: {cos:.7f}")
        runs = [("exemplar f32 (CPU engine)", lambda: bench.run_exemplar_encode(model, texts_path))]
        if bench.cpu_supports("avx512_bf16"):
            runs.append(("exemplar bf16", lambda: bench.run_exemplar_encode(model, texts_path, ("--dtype", "bf16"))))
        runs.append(("transformers Qwen3Model (PyTorch)", lambda: peer.timed(texts)))
        results = {label: [] for label, _ in runs}
        for _ in range(args.repeats):
            for label, run in runs:
                results[label].append(run())
        med = {k: statistics.median(r["texts_per_s"] for r in v) for k, v in results.items()}
        base = med[runs[-1][0]]
        print(f"\n| encoder | texts | tokens | texts/s | tokens/s | vs {runs[-1][0]} |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, rs in results.items():
            tok = statistics.median(r["tokens_per_s"] for r in rs)
            print(f"| {label} | {args.texts} | {rs[0]['tokens']} | {med[label]:.1f} | {tok:.0f} | {med[label] / base:.2f}x |")


if __name__ == "__main__":
    main()
