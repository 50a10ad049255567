#!/usr/bin/env bash
# Cross-check that exemplar compiles for aarch64 Linux (Apple Silicon VMs, AWS Graviton, NVIDIA
# Grace): `cargo check --release --all-targets --target aarch64-unknown-linux-gnu`, so code that
# only builds on x86-64 (intrinsics, target features) cannot slip in unseen. Extra ARGS go to
# cargo. Installs, once, what it needs: the rustup target and Debian's gcc-aarch64-linux-gnu
# (the C dependencies - mimalloc, zstd, oniguruma, ring - are compiled for the target even by
# `cargo check`). Idempotent: a second run goes straight to cargo.
#
# Measured on the 2-core dev machine (shared with other builds): 5 min 25 s the first time
# (13 s for rustup's rust-std and the apt packages, 5 min 10 s checking every dependency for the
# target), 28 s again after a change to exemplar (only it is re-checked).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
cargo check --release --all-targets --target "$target" "$@"
