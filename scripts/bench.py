#!/usr/bin/env python3
"""Benchmarks that print figures (never run by the test suite). Standard library only; the
sentence-transformers side runs in the venv made by scripts/bench-venv.sh.

  python3 scripts/bench.py encode   # MiniLM: exemplar vs sentence-transformers on the same
                                    # 2,000 MATH problems, plus SmolLM2-135M (Llama) tokens/s
  python3 scripts/bench.py extract  # extraction pipeline vs the encoder alone over all MATH
                                    # problems, and peak RSS at 2,000 and 12,500 rows

Figures go to stdout as a Markdown table, ready for the README. Run on an idle machine.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EXEMPLAR_CACHE", REPO / ".cache"))
EMBED = REPO / "target/release/embed"
MINILM = CACHE / "models/all-MiniLM-L6-v2"
SMOLLM = CACHE / "models/smollm2-135m"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def setup(need_torch):
    sh(str(REPO / "scripts/fetch-models.sh"))
    if need_torch:
        sh(str(REPO / "scripts/bench-venv.sh"))
    sh("cargo", "build", "--release", "--quiet", cwd=REPO)


def math_corpus():
    for p in [REPO / "../shared/datasets/math/problems.jsonl", REPO / "datasets/full/train.jsonl"]:
        if p.is_file():
            return p
    sys.exit("bench: needs ../shared/datasets/math/problems.jsonl (or datasets/full, see datasets/README.md)")


def texts_file(n, tmp):
    """The `problem` field of the first n MATH records as {"id","text"} lines."""
    out = Path(tmp) / f"math-{n}.jsonl"
    with open(math_corpus(), encoding="utf-8") as f, open(out, "w", encoding="utf-8") as w:
        for i, line in enumerate(f):
            if i == n:
                break
            r = json.loads(line)
            w.write(json.dumps({"id": r["id"], "text": r["problem"]}, ensure_ascii=False) + "\n")
    return out


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def run_exemplar_encode(model, texts, extra=()):
    out = Path(texts).with_suffix(".out.jsonl")
    p = sh(str(EMBED), "encode", "--model", str(model), "--input", str(texts), "--output", str(out),
           "--quiet", "--summary-json", *extra, capture_output=True, text=True)
    return json.loads(p.stderr.strip().splitlines()[-1])


def run_st(texts):
    py = CACHE / "venv/bin/python"
    p = sh(str(py), str(REPO / "scripts/bench_sentence_transformers.py"), "--model", str(MINILM),
           "--input", str(texts), "--batch-size", "32", capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_encode(args):
    setup(need_torch=True)
    with tempfile.TemporaryDirectory() as tmp:
        texts = texts_file(2000, tmp)
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            ours.append(run_exemplar_encode(MINILM, texts))
            theirs.append(run_st(texts))
        o = statistics.median(r["texts_per_s"] for r in ours)
        t = statistics.median(r["texts_per_s"] for r in theirs)
        ot = statistics.median(r["tokens_per_s"] for r in ours)
        tt = statistics.median(r["tokens_per_s"] for r in theirs)
        small = texts_file(300, tmp)
        llama = run_exemplar_encode(SMOLLM, small)
    print(f"machine: {machine()}; {args.repeats} interleaved runs each, median\n")
    print("| encoder | texts | tokens | texts/s | tokens/s | vs sentence-transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| exemplar, all-MiniLM-L6-v2 (candle, f32) | 2000 | {ours[0]['tokens']} | {o:.1f} | {ot:.0f} | {o / t:.2f}x |")
    print(f"| sentence-transformers {theirs[0].get('torch_version', '')}, batch 32 | 2000 | {theirs[0]['tokens']} | {t:.1f} | {tt:.0f} | 1.00x |")
    print(f"| exemplar, SmolLM2-135M (Llama, causal+last, f32) | 300 | {llama['tokens']} | {llama['texts_per_s']:.1f} | {llama['tokens_per_s']:.0f} | |")
    print("\nall runs:", json.dumps({"exemplar": ours, "sentence_transformers": theirs}))


def peak_rss_run(cmd):
    """Run cmd, return (seconds, peak RSS in MiB of that child) via wait4's rusage."""
    start = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed:\n{err}")
    return time.time() - start, usage.ru_maxrss / 1024, err


def bench_extract(args):
    setup(need_torch=False)
    corpus = math_corpus()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [2000, 12500]:
            src = Path(tmp) / f"corpus-{n}.jsonl"
            with open(corpus, encoding="utf-8") as f, open(src, "w", encoding="utf-8") as w:
                for i, line in enumerate(f):
                    if i == n:
                        break
                    w.write(line)
            out = Path(tmp) / f"emb-{n}"
            secs, rss, err = peak_rss_run([str(EMBED), "extract", "--model", str(MINILM), "--input", str(src),
                                           "--out", str(out), "--shards", "8", "--quiet"])
            rows[n] = {"seconds": secs, "rss": rss, "log": err.strip().splitlines()[-1]}
            if n == 12500:
                texts = texts_file(12500, tmp)
                esecs, erss, eerr = peak_rss_run([str(EMBED), "encode", "--model", str(MINILM), "--input", str(texts),
                                                  "--output", str(Path(tmp) / "enc.jsonl"), "--quiet"])
                rows["encode"] = {"seconds": esecs, "rss": erss, "log": eerr.strip().splitlines()[-1]}
            shutil.rmtree(out)
    e, x = rows["encode"], rows[12500]
    print(f"machine: {machine()}\n")
    print("| run | rows | wall s | texts/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    print(f"| `embed extract --shards 8` | 2000 | {rows[2000]['seconds']:.1f} | {2000 / rows[2000]['seconds']:.1f} | {rows[2000]['rss']:.0f} |")
    print(f"| `embed extract --shards 8` | 12500 | {x['seconds']:.1f} | {12500 / x['seconds']:.1f} | {x['rss']:.0f} |")
    print(f"| `embed encode` (encoder alone, same texts) | 12500 | {e['seconds']:.1f} | {12500 / e['seconds']:.1f} | {e['rss']:.0f} |")
    print(f"\npipeline / encoder alone: {(12500 / x['seconds']) / (12500 / e['seconds']):.2f}x (wall clock, model load included in both)")
    print("logs:", json.dumps({k: v["log"] for k, v in rows.items()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("encode", help="encoder throughput vs sentence-transformers")
    e.add_argument("--repeats", type=int, default=3)
    sub.add_parser("extract", help="extraction pipeline vs encoder alone, and peak RSS")
    args = ap.parse_args()
    {"encode": bench_encode, "extract": bench_extract}[args.what](args)


if __name__ == "__main__":
    main()
