#!/usr/bin/env bash
# Does retrieval help YOUR model? One command from a served model to a verdict with statistics
# (docs/retrieval-experiments.md): held-out AIME-style problems, a solved-problem corpus that
# excludes them, and four arms on the same problems, seeds and share of the time budget:
#   k=0 (no retrieval) | k=3,format=chat | k=3,format=insight | k=0 + the search tool
# It prints the --compare-rag tables and writes OUT/verdict.json.
#
#   scripts/experiment-rag.sh --endpoint http://127.0.0.1:8000/v1 --model MODEL \
#     --embed-model DIR --test aime.jsonl --corpus math.jsonl [--corpus more.jsonl ...] \
#     [--test-years 2022-2024] [--out DIR] [--samples 8] [--time-budget 10h] [-- SOLVE ARGS...]
#
# With the shared datasets (not in a fresh clone): --datasets ../shared/datasets is short for
# --test DIR/aime_1983_2024/problems.jsonl --corpus DIR/math/problems.jsonl
# --corpus DIR/olympiadbench_math_en/problems.jsonl. Every step is resumable: rerun the same
# command after a kill and finished steps are skipped (solve resumes from its traces).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${EXEMPLAR_BIN:-$repo/target/release}
endpoint= model= embed_model= test= out=experiment-rag years=2022-2024 samples=8 budget=
corpora=() extra=()
die() { echo "experiment-rag.sh: $*" >&2; exit 1; }
while (($#)); do
  case $1 in
    --endpoint) endpoint=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --embed-model) embed_model=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    --corpus) corpora+=("$2"); shift 2 ;;
    --datasets)
      test=$2/aime_1983_2024/problems.jsonl
      corpora+=("$2/math/problems.jsonl" "$2/olympiadbench_math_en/problems.jsonl"); shift 2 ;;
    --test-years) years=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --time-budget) budget=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (see the header of this script)" ;;
  esac
done
[[ -n $endpoint && -n $model && -n $embed_model && -n $test && ${#corpora[@]} -gt 0 ]] \
  || die "needs --endpoint, --model, --embed-model, --test (or --datasets) and --corpus"
for f in "$test" "${corpora[@]}"; do [[ -f $f ]] || die "$f: no such file"; done
[[ -x $bin/solve && -x $bin/embed ]] || die "no solve/embed in $bin: cargo build --release"
mkdir -p "$out"

# 1. The test problems: the held-out years, integer answers only.
python3 - "$test" "$years" "$out/test.jsonl" <<'EOF'
import json, sys
src, years, dst = sys.argv[1], sys.argv[2], sys.argv[3]
lo, _, hi = years.partition("-")
lo, hi = int(lo), int(hi or lo)
n = 0
with open(src) as f, open(dst, "w") as o:
    for line in f:
        r = json.loads(line)
        year = (r.get("meta") or {}).get("year")
        a = r.get("answer_int", r.get("answer"))
        if year is None or not lo <= int(year) <= hi or a is None or not str(a).isdigit():
            continue
        o.write(json.dumps({"id": r["id"], "problem": r["problem"], "answer": str(a),
                            "source": r.get("source") or "test"}) + "\n")
        n += 1
print(f"test: {n} problems from {years} -> {dst}", file=sys.stderr)
if n == 0:
    sys.exit("no test problem in those years")
EOF

# 2. The corpus: records with a solution, without any test problem (same normalised text).
python3 - "$out/test.jsonl" "$out/corpus.jsonl" "${corpora[@]}" <<'EOF'
import json, re, sys
test, dst, srcs = sys.argv[1], sys.argv[2], sys.argv[3:]
norm = lambda t: re.sub(r"[\s$]+", " ", t).strip().lower()
held = {norm(json.loads(l)["problem"]) for l in open(test)}
kept = dropped = 0
with open(dst, "w") as o:
    for src in srcs:
        for line in open(src):
            r = json.loads(line)
            if not (r.get("solution") or "").strip():
                continue
            if norm(r["problem"]) in held:
                dropped += 1
                continue
            o.write(json.dumps({k: r.get(k) for k in ("id", "problem", "solution", "answer", "source")}) + "\n")
            kept += 1
print(f"corpus: {kept} solved problems, {dropped} test twins removed -> {dst}", file=sys.stderr)
EOF

# 3. Condensed memories for format=insight (`solve distill`, where this exemplar has it).
corpus=$out/corpus.jsonl
arms=(--rag k=0 --compare-rag k=3,format=chat)
if "$bin/solve" distill --help >/dev/null 2>&1; then
  "$bin/solve" distill --input "$corpus" --out "$out/corpus.insight.jsonl" \
    --endpoint "$endpoint" --model "$model" --quiet
  corpus=$out/corpus.insight.jsonl
  arms+=(--compare-rag k=3,format=insight)
else
  echo "experiment-rag.sh: this solve has no 'distill': the format=insight arm is left out" >&2
fi
arms+=(--compare-rag k=0,search=on)

# 4. Embed and index the corpus (skipped when already there).
if [[ ! -f $out/index/manifest.json ]]; then
  "$bin/embed" extract --model "$embed_model" --input "$corpus" --out "$out/emb" --quiet
  "$bin/embed" index build --embeddings "$out/emb" --out "$out/index" --quiet
fi

# 5. The arms, on the same problems, seeds and budget share; the verdict.
guard=()
if "$bin/solve" --help | grep -q -- '--exclude'; then guard=(--exclude "$out/test.jsonl"); fi
"$bin/solve" --input "$out/test.jsonl" --index "$out/index" --endpoint "$endpoint" \
  --model "$model" "${arms[@]}" "${guard[@]}" --samples "$samples" --seed 0 \
  ${budget:+--time-budget "$budget"} --out "$out/submission.csv" \
  --compare-json "$out/verdict.json" --eval "${extra[@]}"
echo "verdict: $out/verdict.json (traces: $out/traces.jsonl)" >&2
