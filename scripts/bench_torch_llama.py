#!/usr/bin/env python3
"""Python half of the Llama encoder benchmark: time transformers' LlamaModel (PyTorch, CPU, f32)
embedding a JSONL of {"id", "text"} lines the way exemplar's default decoder recipe does (causal
attention, last-token pooling, L2-normalised), batches of texts sorted by length and left-padded.
Prints ONE JSON line to stdout (logs go to stderr), with the same fields as bench_sentence_transformers.py.

  .cache/venv/bin/python scripts/bench_torch_llama.py --model .cache/models/smollm2-135m --input texts.jsonl
"""
import argparse
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser(description="Benchmark transformers LlamaModel embeddings on CPU.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in open(args.input, encoding="utf-8") if line.strip()]
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        sys.exit(f"bench: {e}; run scripts/bench-venv.sh and use .cache/venv/bin/python")
    torch.set_num_threads(args.threads)
    with contextlib.redirect_stdout(sys.stderr):
        tok = AutoTokenizer.from_pretrained(args.model)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    tokens = sum(len(ids) for ids in tok(texts)["input_ids"])

    def run(indices):
        out = []
        for s in range(0, len(indices), args.batch_size):
            batch = tok([texts[i] for i in indices[s:s + args.batch_size]], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[:, -1]
            out.append(torch.nn.functional.normalize(hidden, dim=-1))
        return out

    with torch.inference_mode():
        run(order[: args.batch_size])  # warm-up
        start = time.perf_counter()
        run(order)
        seconds = time.perf_counter() - start
    print(json.dumps({
        "impl": "transformers LlamaModel", "texts": len(texts), "tokens": tokens,
        "seconds": round(seconds, 4), "texts_per_s": round(len(texts) / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1), "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "batch_size": args.batch_size,
    }))


if __name__ == "__main__":
    main()
