#!/usr/bin/env bash
# Make the Python venv for the sentence-transformers benchmark: ${EXEMPLAR_CACHE:-<repo>/.cache}/venv.
# Idempotent: does nothing (silently) when requirements-bench.txt has not changed since the
# last successful install. Prints the venv's python path when it installed something.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EXEMPLAR_CACHE:-$repo/.cache}
venv=$cache/venv
req=$repo/scripts/requirements-bench.txt
stamp=$venv/.bench-requirements.sha256

want=$(sha256sum "$req" | cut -d' ' -f1)
[[ -f $stamp && $(cat "$stamp") == "$want" ]] && exit 0

if [[ ! -x $venv/bin/python ]]; then
  mkdir -p "$cache"
  python3 -m venv "$venv" || { echo "bench-venv.sh: 'python3 -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
# Big download (torch + CUDA wheels, several GB): keep pip's progress off but errors on.
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" \
  || { echo "bench-venv.sh: pip install -r $req failed" >&2; exit 1; }
echo "$want" >"$stamp"
echo "bench venv ready: $venv/bin/python"
