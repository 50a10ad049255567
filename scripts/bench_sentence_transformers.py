#!/usr/bin/env python3
"""Python half of the encoder benchmark: time sentence-transformers on CPU over a JSONL of
{"id": ..., "text": ...} lines, and print ONE JSON line to stdout (all logs go to stderr):
  {"impl","texts","tokens","seconds","texts_per_s","tokens_per_s","torch_threads","torch_version",
   "batch_size","max_seq_length"}
"tokens" = real (non-padding) tokens per text after truncation to --max-seq-length, special
tokens ([CLS]/[SEP]) included, i.e. the sum of the attention mask the model sees.

Run it with the venv made by scripts/bench-venv.sh:
  .cache/venv/bin/python scripts/bench_sentence_transformers.py --model DIR --input texts.jsonl
"""
import argparse
import contextlib
import json
import os
import sys
import time

# The model is a local folder; never let transformers / huggingface_hub try the (unreachable) hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def read_texts(path):
    texts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                texts.append(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"bench: {path}:{n}: expected a JSON object with a \"text\" field ({e})")
    if not texts:
        sys.exit(f"bench: {path} has no texts")
    return texts


def main():
    ap = argparse.ArgumentParser(description="Benchmark sentence-transformers encode() on CPU.")
    ap.add_argument("--model", required=True, help="local sentence-transformers model folder")
    ap.add_argument("--input", required=True, help="JSONL with {\"id\", \"text\"} per line")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.model, "modules.json")):
        sys.exit(f"bench: {args.model} is not a sentence-transformers folder (no modules.json); "
                 "run scripts/fetch-models.sh")
    texts = read_texts(args.input)

    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        sys.exit(f"bench: {e}; run scripts/bench-venv.sh and use .cache/venv/bin/python")

    torch.set_num_threads(args.threads)
    # Libraries sometimes print to stdout; keep stdout for our single JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        model = SentenceTransformer(args.model, device="cpu")
        model.max_seq_length = args.max_seq_length
        enc = model.tokenizer(texts, truncation=True, max_length=args.max_seq_length)
        tokens = sum(len(ids) for ids in enc["input_ids"])

        # Warm-up: first-call allocations, lazy init, etc. stay out of the timing.
        model.encode(texts[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False)
        with torch.inference_mode():
            start = time.perf_counter()
            emb = model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
            seconds = time.perf_counter() - start
    assert len(emb) == len(texts)

    print(json.dumps({
        "impl": "sentence-transformers",
        "texts": len(texts),
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "texts_per_s": round(len(texts) / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
    }))


if __name__ == "__main__":
    main()
