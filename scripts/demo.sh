#!/usr/bin/env bash
# The main job on the bundled sample corpus with the default model (all-MiniLM-L6-v2), end to end:
#   fetch the model -> build -> embed extract --shards 2 -> embed index build -> embed index query
#   -> solve --rag k=4 (dry run, or real when --endpoint URL / $EXEMPLAR_ENDPOINT is given)
#   -> embed plot (2D and 3D, when this build has it).
# Works on a fresh machine with Rust and Python's pip; no Hugging Face hub access needed.
# Usage: scripts/demo.sh [--endpoint http://127.0.0.1:8000/v1] [--model NAME]
set -euo pipefail
cd "$(dirname "$0")/.."

endpoint=${EXEMPLAR_ENDPOINT:-}
solver_model=nvidia/Llama-3_3-Nemotron-Super-49B-v1
while [[ $# -gt 0 ]]; do
  case $1 in
    --endpoint) endpoint=$2; shift 2 ;;
    --model) solver_model=$2; shift 2 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
embed=${CARGO_TARGET_DIR:-target}/release/embed
solve=${CARGO_TARGET_DIR:-target}/release/solve
work=${EXEMPLAR_DEMO_DIR:-demo-output}
mkdir -p "$work"

step "model: scripts/fetch-models.sh"
scripts/fetch-models.sh

step "build: cargo build --release"
cargo build --release --quiet

step "embed extract --shards 2 (datasets/sample/train.jsonl, 2,500 solved problems)"
$embed extract --input datasets/sample/train.jsonl --out "$work/embeddings" --shards 2 --workers 1

step "embed index build"
$embed index build --embeddings "$work/embeddings" --out indexes/sample

step "embed index query (three sample test problems)"
head -n 3 datasets/sample/test.jsonl \
  | python3 -c 'import json,sys; [print(json.dumps({"id": r["id"], "text": r["problem"]})) for r in map(json.loads, sys.stdin)]' \
  > "$work/queries.jsonl"
$embed index query --index indexes/sample --input "$work/queries.jsonl" -k 4

head -n 5 datasets/sample/test.jsonl > "$work/test-5.jsonl"
if [[ -n $endpoint ]]; then
  step "solve --rag k=4 against $endpoint"
  $solve --input "$work/test-5.jsonl" --index indexes/sample --rag k=4 --endpoint "$endpoint" \
    --model "$solver_model" --out "$work/submission.csv" --samples 4 --eval
else
  step "solve --rag k=4 --dry-run (no endpoint given: writes the messages it would send)"
  $solve --input "$work/test-5.jsonl" --index indexes/sample --rag k=4 --dry-run \
    --out "$work/submission.csv"
fi

if $embed plot --help >/dev/null 2>&1; then
  step "embed plot (2D PCA and 3D views)"
  $embed plot --index indexes/sample --method pca --dims 2 --color-by subject \
    --out "$work/map-2d.png" --formats png,svg,html
  $embed plot --index indexes/sample --method pca --dims 3 --views 4 --color-by subject \
    --out "$work/map-3d.png"
fi

step "artefacts"
echo "embeddings:  $work/embeddings (manifest.json, shard-*.parquet)"
echo "index:       indexes/sample"
echo "solve:       $work/traces.jsonl${endpoint:+ and $work/submission.csv}"
ls "$work"/map-* 2>/dev/null | sed 's/^/plots:       /' || true
