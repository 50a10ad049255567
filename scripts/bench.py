#!/usr/bin/env python3
"""Benchmarks that print figures (never run by the test suite). Standard library only; the
sentence-transformers side runs in the venv made by scripts/bench-venv.sh.

  python3 scripts/bench.py encode   # MiniLM: exemplar (f32, bf16, int8, candle) vs sentence-transformers on the same
                                    # 2,000 MATH problems; SmolLM2-135M vs transformers LlamaModel on 300
  python3 scripts/bench.py extract  # extraction pipeline vs the encoder alone over all MATH
                                    # problems, and peak RSS at 2,000 and 12,500 rows

Figures go to stdout as a Markdown table, ready for docs/benchmarks.md. Run on an idle machine.
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


def run_exemplar_encode(model, texts, extra=(), env=None):
    out = Path(texts).with_suffix(".out.jsonl")
    p = sh(str(EMBED), "encode", "--model", str(model), "--input", str(texts), "--output", str(out),
           "--quiet", "--summary-json", *extra, capture_output=True, text=True,
           env={**os.environ, **(env or {})})
    return json.loads(p.stderr.strip().splitlines()[-1])


def run_python(script, model, texts):
    py = CACHE / "venv/bin/python"
    p = sh(str(py), str(REPO / "scripts" / script), "--model", str(model), "--input", str(texts),
           "--batch-size", "32", capture_output=True, text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_supports(flag):
    try:
        return flag in open("/proc/cpuinfo").read()
    except OSError:
        return False


def contenders(model, peer_script):
    """(label, run) pairs for one model: the CPU engine in each precision the CPU has, candle's
    CPU backend, and the Python peer."""
    runs = [("exemplar f32 (CPU engine)", lambda t: run_exemplar_encode(model, t))]
    if cpu_supports("avx512_bf16"):
        runs.append(("exemplar bf16", lambda t: run_exemplar_encode(model, t, ("--dtype", "bf16"))))
        if cpu_supports("avx512_vnni"):
            runs.append(("exemplar int8", lambda t: run_exemplar_encode(model, t, ("--dtype", "int8"))))
    # candle's backend at the budget it runs best with (src/encoder/mod.rs).
    runs.append(("exemplar f32, candle backend", lambda t: run_exemplar_encode(
        model, t, ("--max-batch-tokens", "2048"), env={"EXEMPLAR_CPU_ENGINE": "candle"})))
    runs.append((peer_script[1], lambda t: run_python(peer_script[0], model, t)))
    return runs


def table(title, n, runs, repeats, texts):
    results = {label: [] for label, _ in runs}
    for _ in range(repeats):  # interleaved, so drifting machine load hits all alike
        for label, run in runs:
            results[label].append(run(texts))
    peer = runs[-1][0]
    med = {k: statistics.median(r["texts_per_s"] for r in v) for k, v in results.items()}
    print(f"\n{title}\n")
    print(f"| encoder | texts | tokens | texts/s | tokens/s | vs {peer} |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rs in results.items():
        tok = statistics.median(r["tokens_per_s"] for r in rs)
        print(f"| {label} | {n} | {rs[0]['tokens']} | {med[label]:.1f} | {tok:.0f} | {med[label] / med[peer]:.2f}x |")
    return results


def bench_encode(args):
    setup(need_torch=True)
    print(f"machine: {machine()}; {args.repeats} interleaved runs each, median")
    with tempfile.TemporaryDirectory() as tmp:
        texts = texts_file(2000, tmp)
        bert = table("all-MiniLM-L6-v2, 2,000 MATH problems", 2000,
                     contenders(MINILM, ("bench_sentence_transformers.py", "sentence-transformers (PyTorch)")),
                     args.repeats, texts)
        small = texts_file(300, tmp)
        llama = table("SmolLM2-135M (Llama: causal attention, last-token pooling), 300 MATH problems", 300,
                      contenders(SMOLLM, ("bench_torch_llama.py", "transformers LlamaModel (PyTorch)")),
                      args.repeats, small)
    print("\nall runs:", json.dumps({"minilm": bert, "smollm2": llama}))


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
