#!/usr/bin/env bash
# The Python package's tests: build the wheel (maturin, release), install it into a fresh
# virtualenv, run python/tests with pytest against the CLI's binaries and models. Called by
# scripts/test.sh after the Rust tests, whose release build it reuses (see Cargo.toml's
# [workspace] and dev-dependencies): only pyo3, numpy and the extension are compiled on top.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
cache=${EXEMPLAR_CACHE:-.cache}
tools=$cache/pyvenv
# maturin, pytest, numpy, pandas, polars: once, into their own venv (not .cache/venv).
if ! "$tools/bin/python" -c 'import maturin, pytest, numpy, pandas, polars' 2>/dev/null; then
  "${PYTHON:-python3}" -m venv --clear "$tools"
  "$tools/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-dev.txt
fi
# The references the tests compare with: the binaries as the Rust tests build them (a no-op
# after them), with the dependencies the wheel shares.
cargo test --release --no-run --quiet --test it 2>/dev/null || cargo test --release --no-run --test it
wheels=target/wheels
rm -f "$wheels"/exemplar-*.whl
PYO3_PYTHON="$tools/bin/python" "$tools/bin/maturin" build --release --quiet \
  --manifest-path python/Cargo.toml --out "$wheels" --interpreter "$tools/bin/python"
echo "python-tests: wheel built after $((SECONDS - start)) s: $(ls "$wheels"/exemplar-*.whl)"
# A fresh virtualenv holding the wheel. The test libraries come from the tools venv through a
# .pth line rather than a second install (seconds instead of a minute); pip sees them there, so
# the wheel's own requirement (numpy) is checked, not downloaded.
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$tools/bin/python" -m venv "$fresh/venv"
site() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
site "$tools/bin/python" >"$(site "$fresh/venv/bin/python")/exemplar-test-tools.pth"
"$fresh/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index "$wheels"/exemplar-*.whl
# From the repository root, so `import exemplar` finds the installed wheel, not python/exemplar/.
"$fresh/venv/bin/python" -m pytest -p no:cacheprovider -q python/tests "$@"
echo "python-tests: done after $((SECONDS - start)) s"
