#!/usr/bin/env bash
# Proves the README's main-job command works for a new user: clones the committed repository into
# an empty temporary folder (no ../shared beside it, an empty model cache) and runs
# scripts/demo.sh there. Reuses this checkout's build directory so CI compiles only once.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/exemplar"
cd "$tmp/exemplar"
[[ ! -e ../shared ]] || { echo "fresh-clone-check: ../shared exists beside the clone" >&2; exit 1; }
EXEMPLAR_CACHE="$tmp/cache" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
  EXEMPLAR_ENDPOINT= ./scripts/demo.sh > "$tmp/demo.log" 2>&1 \
  || { cat "$tmp/demo.log" >&2; echo "fresh-clone-check: scripts/demo.sh failed in a fresh clone" >&2; exit 1; }
for f in indexes/sample/manifest.json demo-output/traces.jsonl demo-output/embeddings/manifest.json; do
  [[ -s $f ]] || { cat "$tmp/demo.log" >&2; echo "fresh-clone-check: $f missing after the demo" >&2; exit 1; }
done
echo "fresh-clone-check: scripts/demo.sh succeeded in a fresh clone ($(grep -c '^==>' "$tmp/demo.log") steps)"
