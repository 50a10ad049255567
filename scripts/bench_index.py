#!/usr/bin/env python3
"""Our HNSW index (`embed index`, src/index/hnsw.rs) against hnswlib on identical vectors (issue #4).

For every dataset (clustered synthetic unit vectors, fixed seed) the script, in one run:

  1. writes the vectors once as an `embed extract` output folder (manifest.json + one Parquet
     shard + its report) and as a raw little-endian f32 file for hnswlib;
  2. builds our index with `embed index build` and hnswlib's in a child Python process (2 build
     threads each), and takes each build's peak RSS from os.wait4's rusage of that child;
  3. measures recall@10 and single-thread queries/s at each ef on the same queries: the same
     stored vectors spread evenly over the data (row i*n/queries), each query's own row left out,
     exactly as `embed index eval` does. Ours comes from `embed index eval --json` (exact search
     inside the binary), hnswlib's against exact numpy dot products.

Figures go to stdout as a Markdown table. Run on an idle machine with the venv:

  .cache/venv/bin/pip install -r scripts/requirements-index-bench.txt
  cargo build --release
  .cache/venv/bin/python scripts/bench_index.py --quick          # 20k x 384 only (~1 min)
  .cache/venv/bin/python scripts/bench_index.py                  # 100k x 384, 200k x 384, 20k x 4096
  .cache/venv/bin/python scripts/bench_index.py --sizes 100kx384 --m 32 --libs ours
  .cache/venv/bin/python scripts/bench_index.py --sizes 20kx4096 --build-repeats 2   # busy machine

Generated datasets are kept under --workdir (default .cache/index-bench) and reused by later
runs with the same size, seed, clusters and spread; the built indexes are rebuilt every run.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EMBED = REPO / "target/release/embed"
EFS_DEFAULT = "16,32,64,128,256"
SIZES_DEFAULT = "100kx384,200kx384,20kx4096"
MIB = 1024 * 1024
GEN_VERSION = 1  # bump when the generator changes, so cached datasets are regenerated


def parse_size(token):
    """'100kx384' -> (100000, 384); also accepts '100000x384' and '1mx128'."""
    token = token.strip().lower()
    n, _, d = token.partition("x")
    if not d:
        raise argparse.ArgumentTypeError(f"size {token!r}: expected NxDIM, e.g. 100kx384")
    mult = 1
    if n.endswith("k"):
        n, mult = n[:-1], 1000
    elif n.endswith("m"):
        n, mult = n[:-1], 1000_000
    return int(float(n) * mult), int(d)


def size_label(n, dim):
    return f"{n // 1000}k x {dim}" if n % 1000 == 0 else f"{n} x {dim}"


# ----------------------------------------------------------------------------------------------
# Data


def generate(n, dim, clusters, spread, seed):
    """Unit vectors around `clusters` Gaussian centres: centre ~ N(0, I), point = centre +
    spread * N(0, I), then L2-normalised (the recipe of tests/it/index.rs, with random rather than
    round-robin cluster assignment so that evenly spaced query rows hit many clusters)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    assign = rng.integers(0, clusters, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    step = 20_000
    for s in range(0, n, step):
        e = min(n, s + step)
        block = centres[assign[s:e]] + spread * rng.standard_normal((e - s, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s:e] = block
    return out


def write_extraction(folder, vectors):
    """`embed extract` output folder with one shard: the schema of src/extract/shard.rs
    (id utf8 non-null, embedding fixed_size_list<float32 non-null>[dim] non-null, problem utf8)
    and a manifest with every field src/extract/manifest.rs requires (model values are dummies;
    the recipe says normalize: true, which `embed index build` checks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, dim = vectors.shape
    folder.mkdir(parents=True, exist_ok=True)
    name = "shard-00000-of-00001"
    schema = pa.schema(
        [
            pa.field("id", pa.utf8(), nullable=False),
            pa.field(
                "embedding",
                pa.list_(pa.field("item", pa.float32(), nullable=False), dim),
                nullable=False,
            ),
            pa.field("problem", pa.utf8(), nullable=True),
        ]
    )
    tmp = folder / f".{name}.parquet.tmp"
    with pq.ParquetWriter(tmp, schema, compression="snappy") as w:
        step = 8192
        for s in range(0, n, step):
            e = min(n, s + step)
            values = pa.array(vectors[s:e].reshape(-1), type=pa.float32())
            emb = pa.FixedSizeListArray.from_arrays(values, type=schema.field("embedding").type)
            ids = pa.array([f"v{i}" for i in range(s, e)], type=pa.utf8())
            problems = pa.array([f"synthetic vector {i}" for i in range(s, e)], type=pa.utf8())
            w.write_batch(pa.record_batch([ids, emb, problems], schema=schema))
    tmp.rename(folder / f"{name}.parquet")
    (folder / f"{name}.json").write_text(
        json.dumps({"shard": 0, "shards": 1, "rows": n, "file": f"{name}.parquet"}, indent=2)
    )
    manifest = {
        "format": "exemplar.embeddings.v1",
        "model": "synthetic/clustered",
        "model_path": "synthetic/clustered",
        "model_fingerprint": "sha256:0000000000000000",
        "recipe": {
            "architecture": "bert",
            "attention": "bidirectional",
            "pooling": "mean",
            "normalize": True,
            "append_eos": False,
            "max_length": 512,
            "document_template": "{text}",
            "query_template": "{text}",
            "instruction": "",
            "padding_side": "right",
        },
        "dim": dim,
        "dtype": "f32",
        "inputs": [],
        "text": {"id_field": "id", "doc_template": "{problem}"},
        "columns": [{"name": "problem", "type": "utf8"}],
        "shards": 1,
        "rows_per_shard": [n],
        "rows": n,
        "rejected": 0,
        "status": "complete",
        "completed_shards": [0],
        "created_by": "scripts/bench_index.py",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def dataset(workdir, n, dim, args):
    """Generate (or reuse) one dataset; returns (folder, vectors)."""
    import numpy as np

    folder = workdir / f"clustered-{n}x{dim}-c{args.clusters}-s{args.spread}-seed{args.seed}"
    meta = {"n": n, "dim": dim, "clusters": args.clusters, "spread": args.spread,
            "seed": args.seed, "generator": GEN_VERSION}
    emb = folder / "embeddings"
    raw = folder / "vectors.f32"
    meta_path = folder / "dataset.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta and raw.is_file() \
            and (emb / "manifest.json").is_file():
        vectors = np.fromfile(raw, dtype="<f4").reshape(n, dim)
        log(f"{size_label(n, dim)}: reusing {folder}")
        return folder, vectors
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    vectors = generate(n, dim, args.clusters, args.spread, args.seed)
    folder.mkdir(parents=True)
    vectors.astype("<f4").tofile(raw)
    write_extraction(emb, vectors)
    meta_path.write_text(json.dumps(meta))
    log(f"{size_label(n, dim)}: generated in {time.perf_counter() - t:.1f} s -> {folder}")
    return folder, vectors


def query_rows(n, queries):
    q = max(1, min(queries, n))
    return [i * n // q for i in range(q)]


def exact_truth(vectors, rows, k):
    """Top-k by exact dot product for each query row, the row itself left out."""
    import numpy as np

    q = vectors[rows]
    n = len(vectors)
    best_s = np.full((len(rows), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), 0), dtype=np.int64)
    step = 50_000
    for s in range(0, n, step):
        e = min(n, s + step)
        sims = q @ vectors[s:e].T
        top = min(k + 1, e - s)
        part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + s], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, : k + 1]
        best_s = np.take_along_axis(best_s, keep, 1)
        best_i = np.take_along_axis(best_i, keep, 1)
    return [[int(x) for x in ids if x != r][:k] for ids, r in zip(best_i, rows)]


# ----------------------------------------------------------------------------------------------
# Child processes


class Spawner:
    """Runs the measured builds. Linux carries a process's peak RSS across exec, and a child made
    by fork/vfork starts from its parent's RSS (vfork: the parent's peak), so a build launched
    straight from this process, which by then holds the dataset and numpy buffers, would report
    our RSS instead of its own. The spawner is a separate small Python process started before
    anything big is loaded; it runs each command and returns os.wait4's rusage of that child."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, __file__, "_spawner"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def run(self, cmd, log_path):
        """Run `cmd`; returns (wall seconds, peak RSS MiB)."""
        self.p.stdin.write(json.dumps({"cmd": [str(c) for c in cmd], "log": str(log_path)}) + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if r["code"] != 0:
            sys.exit(f"{' '.join(map(str, cmd))} failed ({r['code']}):\n{Path(log_path).read_text()}")
        return r["wall"], r["maxrss_kib"] / 1024

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def spawner_loop():
    for line in sys.stdin:
        job = json.loads(line)
        with open(job["log"], "wb") as out:
            t = time.perf_counter()
            pid = os.posix_spawn(job["cmd"][0], job["cmd"],
                                 os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                                           (os.POSIX_SPAWN_DUP2, out.fileno(), 2)])
            _, status, ru = os.wait4(pid, 0)
            wall = time.perf_counter() - t
        print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall": wall,
                          "maxrss_kib": ru.ru_maxrss}), flush=True)


def build_ours(spawner, folder, idx, args):
    shutil.rmtree(idx, ignore_errors=True)
    return spawner.run(
        [args.embed, "index", "build", "--embeddings", folder / "embeddings", "--out", idx,
         "--m", str(args.m), "--ef-construction", str(args.ef_construction), "--quiet"],
        folder / "ours-build.log",
    )


def build_hnswlib(spawner, folder, out, n, dim, args):
    return spawner.run(
        [sys.executable, __file__, "_hnswlib-build", "--raw", folder / "vectors.f32", "--out", out,
         "--n", str(n), "--dim", str(dim), "--m", str(args.m), "--ef-construction",
         str(args.ef_construction), "--threads", str(args.threads), "--space", args.space],
        folder / "hnswlib-build.log",
    )


def extra_builds(spawner, folder, n, dim, libs, args):
    """--build-repeats: builds before the measured ones, alternating the libraries, so that a
    change of machine load between two builds shows up in both; returns {lib: [(wall, rss)]}."""
    runs = {lib: [] for lib in libs}
    for _ in range(args.build_repeats - 1):
        for lib in libs:
            if lib == "ours":
                idx = folder / "ours-repeat"
                runs[lib].append(build_ours(spawner, folder, idx, args))
                shutil.rmtree(idx)
            else:
                out = folder / "hnswlib-repeat.bin"
                runs[lib].append(build_hnswlib(spawner, folder, out, n, dim, args))
                out.unlink()
                Path(str(out) + ".json").unlink()
    return runs


def bench_ours(spawner, folder, n, dim, args, efs):
    idx = folder / f"ours-m{args.m}-efc{args.ef_construction}"
    wall, rss = build_ours(spawner, folder, idx, args)
    manifest = json.loads((idx / "manifest.json").read_text())
    out = subprocess.run(
        [args.embed, "index", "eval", "--index", idx, "--queries", str(args.queries), "--k", str(args.k),
         "--ef", ",".join(map(str, efs)), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = {r["ef"]: (r["recall"], r["qps"]) for r in json.loads(out)["rows"]}
    disk = sum(f.stat().st_size for f in idx.iterdir() if f.is_file())
    graph = sum((idx / f).stat().st_size for f in ("graph.hnsw.graph", "graph.hnsw.data"))
    if not args.keep_indexes:
        shutil.rmtree(idx)
    return {"build_s": wall, "insert_s": manifest["build_seconds"], "rss": rss,
            "disk": disk / MIB, "graph": graph / MIB, "rows": rows}


def hnswlib_child(a):
    """Hidden subcommand: build hnswlib's index from the raw f32 file, save it, report timings.
    Vectors are read in blocks (as `embed index build` reads Parquet batches), so the process's
    peak RSS is the index plus one block, not index plus a second full copy of the data."""
    import hnswlib
    import numpy as np

    t0 = time.perf_counter()
    index = hnswlib.Index(space=a.space, dim=a.dim)
    index.init_index(max_elements=a.n, M=a.m, ef_construction=a.ef_construction, random_seed=100)
    index.set_num_threads(a.threads)
    block = 4096
    buf = np.empty((block, a.dim), dtype="<f4")
    with open(a.raw, "rb") as f:
        for s in range(0, a.n, block):
            e = min(a.n, s + block)
            view = buf[: e - s]
            f.readinto(memoryview(view).cast("B"))
            index.add_items(view, np.arange(s, e), num_threads=a.threads)
    t1 = time.perf_counter()
    index.save_index(str(a.out))
    Path(str(a.out) + ".json").write_text(json.dumps({"insert_s": t1 - t0}))


def bench_hnswlib(spawner, folder, n, dim, vectors, truth, rows, args, efs):
    import hnswlib
    import numpy as np

    out = folder / f"hnswlib-m{args.m}-efc{args.ef_construction}.bin"
    wall, rss = build_hnswlib(spawner, folder, out, n, dim, args)
    insert_s = json.loads(Path(str(out) + ".json").read_text())["insert_s"]
    index = hnswlib.Index(space=args.space, dim=dim)
    index.load_index(str(out), max_elements=n)
    index.set_num_threads(1)
    q = np.ascontiguousarray(vectors[rows])
    results = {}
    for ef in efs:
        index.set_ef(max(ef, args.k + 1))
        t = time.perf_counter()
        labels, _ = index.knn_query(q, k=args.k + 1, num_threads=1)
        secs = time.perf_counter() - t
        hit = total = 0
        for found, r, want in zip(labels, rows, truth):
            found = [int(x) for x in found if x != r][: args.k]
            hit += len(set(found) & set(want))
            total += len(want)
        results[ef] = (hit / max(total, 1), len(rows) / max(secs, 1e-9))
    disk = out.stat().st_size
    del index
    if not args.keep_indexes:
        out.unlink()
    Path(str(out) + ".json").unlink()
    return {"build_s": wall, "insert_s": insert_s, "rss": rss, "disk": disk / MIB,
            "graph": disk / MIB, "rows": results}


# ----------------------------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_hnswlib-build":
        p = argparse.ArgumentParser()
        for name in ("--raw", "--out", "--space"):
            p.add_argument(name, required=True)
        for name in ("--n", "--dim", "--m", "--ef-construction", "--threads"):
            p.add_argument(name, type=int, required=True)
        hnswlib_child(p.parse_args(sys.argv[2:]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_spawner":
        spawner_loop()
        return

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=SIZES_DEFAULT,
                   help=f"comma-separated NxDIM datasets (default {SIZES_DEFAULT})")
    p.add_argument("--quick", action="store_true", help="20k x 384 only (same as --sizes 20kx384)")
    p.add_argument("--libs", default="ours,hnswlib", help="ours, hnswlib or both (default)")
    p.add_argument("--m", type=int, default=16, help="M for both libraries (default 16)")
    p.add_argument("--ef-construction", type=int, default=200, help="both libraries (default 200)")
    p.add_argument("--ef", default=EFS_DEFAULT, help=f"query ef values (default {EFS_DEFAULT})")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="hnswlib build threads (default 2)")
    p.add_argument("--space", default="l2", choices=["l2", "ip"], help="hnswlib space (default l2)")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--spread", type=float, default=0.9,
                   help="per-component noise around a centre, relative to the centre's N(0,1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", type=Path, default=REPO / ".cache/index-bench")
    p.add_argument("--keep-indexes", action="store_true", help="keep the built indexes in --workdir")
    p.add_argument("--embed", type=Path, default=EMBED,
                   help="the embed binary (default target/release/embed; pass a copy if others rebuild)")
    p.add_argument("--build-repeats", type=int, default=1,
                   help="builds per library, alternating (ours, hnswlib, ours, ...); the table "
                        "shows the fastest build and the highest peak RSS (default 1)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = p.parse_args()
    args.embed = args.embed.resolve()
    spawner = Spawner()  # before numpy and the data are loaded: see Spawner

    sizes = [parse_size(s) for s in ("20kx384" if args.quick else args.sizes).split(",") if s]
    efs = [int(x) for x in args.ef.split(",")]
    libs = [x.strip() for x in args.libs.split(",")]
    if not set(libs) <= {"ours", "hnswlib"}:
        sys.exit(f"--libs {args.libs!r}: expected ours and/or hnswlib")
    if "ours" in libs and not args.embed.is_file():
        sys.exit(f"{args.embed} missing: run `cargo build --release` first")
    if "hnswlib" in libs:
        try:
            import hnswlib  # noqa: F401
        except ImportError:
            sys.exit("hnswlib missing: .cache/venv/bin/pip install -r scripts/requirements-index-bench.txt")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    table = []
    for n, dim in sizes:
        folder, vectors = dataset(args.workdir, n, dim, args)
        rows = query_rows(n, args.queries)
        extra = extra_builds(spawner, folder, n, dim, libs, args)
        for lib in libs:
            t = time.perf_counter()
            if lib == "ours":
                r = bench_ours(spawner, folder, n, dim, args, efs)
            else:
                truth = exact_truth(vectors, rows, args.k)
                r = bench_hnswlib(spawner, folder, n, dim, vectors, truth, rows, args, efs)
            runs = extra[lib] + [(r["build_s"], r["rss"])]
            r.update(dataset=size_label(n, dim), n=n, dim=dim, library=lib,
                     raw=n * dim * 4 / MIB, build_runs=[w for w, _ in runs],
                     build_s=min(w for w, _ in runs), rss=max(m for _, m in runs))
            table.append(r)
            log(f"{size_label(n, dim)} {lib}: build {r['build_s']:.1f} s "
                f"({'/'.join(f'{w:.1f}' for w in r['build_runs'])}), RSS {r['rss']:.0f} MiB, "
                + ", ".join(f"ef {ef}: {rec:.4f}/{qps:.0f}" for ef, (rec, qps) in r["rows"].items())
                + f" ({time.perf_counter() - t:.0f} s)")
        del vectors
    spawner.close()

    from importlib.metadata import version

    names = {"ours": "exemplar (src/index/hnsw.rs)"}
    if "hnswlib" in libs:
        names["hnswlib"] = f"hnswlib {version('hnswlib')}"
    print(f"Clustered synthetic unit vectors ({args.clusters} Gaussian clusters, spread {args.spread}, "
          f"seed {args.seed}); M={args.m}, ef_construction={args.ef_construction}, 2 build threads; "
          f"recall@{args.k} / single-thread queries per second on {args.queries} stored vectors "
          f"(self excluded); {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{datetime.date.today()}.\n")
    head = ["dataset", "library", "build s", "peak RSS MiB", "raw vectors MiB", "index on disk MiB"]
    head += [f"ef={ef} recall / QPS" for ef in efs]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    for r in table:
        cells = [r["dataset"], names[r["library"]], f"{r['build_s']:.1f}", f"{r['rss']:.0f}",
                 f"{r['raw']:.0f}", f"{r['disk']:.0f}"]
        cells += [f"{r['rows'][ef][0]:.4f} / {r['rows'][ef][1]:.0f}" for ef in efs]
        print("| " + " | ".join(cells) + " |")
    print(f"\nbuild s: wall time of the build process (reading the vectors, inserting, writing the "
          f"index), the fastest of {args.build_repeats} alternated build(s) per library; peak RSS: "
          f"ru_maxrss of that process (os.wait4), the highest. Our index on disk includes "
          f"vectors.f32 and records.parquet. Total run {time.perf_counter() - started:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": table}, indent=2, default=str))


if __name__ == "__main__":
    main()
