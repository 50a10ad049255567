#!/usr/bin/env bash
# Run the tests of the code that differs by CPU architecture as aarch64 binaries under
# qemu-user, so the portable path is checked for numbers, not only compiled
# (scripts/check-aarch64.sh): the unit tests of the CPU encoder's kernels and forward passes
# (encoder::) and of the index's SIMD dot products (index::), then the parity suites against the
# transformers / sentence-transformers references (tests/it encoder_parity and decoders, the
# tests that call the library). Extra ARGS replace the unit-test filters.
#
# Not part of .ci/run: it builds every dependency for aarch64 (~15 min on the 2-core dev
# machine) and qemu runs the tests ~10x slower than native. Left out here: the sandbox tests
# (solve::sandbox installs a seccomp filter, which qemu-user passes to the host kernel with
# aarch64 syscall numbers) and the tests that spawn the aarch64 CLI binaries (that needs
# binfmt_misc, which a container rarely has).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=aarch64-unknown-linux-gnu
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if ! command -v qemu-aarch64 >/dev/null; then
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-user
fi
# The target, the cross compiler and the C libraries: as the compile check installs them.
scripts/check-aarch64.sh --lib >/dev/null
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(encoder:: index::)
for f in "${filters[@]}"; do
    cargo test --release --lib --target "$target" -- "$f"
done
[ $# -gt 0 ] && exit 0
scripts/fetch-models.sh >/dev/null  # MiniLM for encoder_parity
# One test at a time: some set the engine / instruction-set variables, which nextest (the usual
# runner) keeps apart by giving each test its own process; cargo test shares one.
cargo test --release --test it --target "$target" -- --test-threads=1 encoder_parity:: decoders:: \
    --skip dim_is_recorded_and_the_index_embeds_queries_alike \
    --skip embed_info_shows_the_recipe --skip estimate_handles_the_8b_shapes
