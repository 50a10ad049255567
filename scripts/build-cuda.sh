#!/usr/bin/env bash
# Build exemplar's GPU path, `cargo build --release --features cuda [ARGS...]`, on a machine with
# no GPU and no CUDA toolkit, from NVIDIA's PyPI wheels pinned to CUDA 13.0 (the GPU machines run
# driver 580 = CUDA 13.0, which cannot JIT the PTX of a newer nvcc/nvrtc). Extra ARGS go to cargo
# (e.g. `--bin embed`). Output goes to ${CARGO_TARGET_DIR_CUDA:-<repo>/target/cuda}, apart from the
# CPU build's target dir so neither invalidates the other.
#
# The wheels go into ${EXEMPLAR_CACHE:-<repo>/.cache}/cuda/pkgs (pip --target; once: a .stamp
# holds the pins, so a second run goes straight to cargo). Their nvidia/cu13 tree is made to look
# like a CUDA toolkit for the linker, which candle's cudarc drives with `dynamic-linking` (candle-core
# hard-enables it; cudarc refuses `dynamic-loading` beside it):
#   lib/lib{cudart,cublas,cublasLt,curand,nvrtc}.so  unversioned symlinks to the wheels' .so.N files
#   lib/stubs/libcuda.so  a link-time stub of the driver (no wheel ships one), SONAME libcuda.so.1,
#                         exporting every function cuda.h 13.0 declares; each returns
#                         CUDA_ERROR_STUB_LIBRARY (34) like NVIDIA's own stub. Never loaded at run time.
# cudarc's build script searches $CUDA_HOME/lib and $CUDA_HOME/lib/stubs itself: no RUSTFLAGS.
#
# The binaries need at run time: libcuda.so.1 (the GPU machine's driver) and, from the wheels,
# libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 (+ the
# libnvrtc-builtins.so.13.0 it loads), found through LD_LIBRARY_PATH=<cache>/cuda/pkgs/nvidia/cu13/lib.
# At the end this script starts `embed --help` with those libs and the stub as libcuda.so.1
# (LD_BIND_NOW=1, so every symbol the binary needs must resolve against the 13.0 libs and the 13.0
# driver API), then prints the binaries and their ldd.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EXEMPLAR_CACHE:-$repo/.cache}
cuda=$cache/cuda
home=$cuda/pkgs/nvidia/cu13  # CUDA_HOME: bin/nvcc, include/, lib/, nvvm/
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_CUDA:-$repo/target/cuda}

# All CUDA 13.0 (update 2) releases; --no-deps, so nothing newer sneaks in (nvcc's unpinned
# nvidia-nvvm dependency would pull a 13.5 nvvm whose PTX 9.5 the 13.0 ptxas rejects).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
LINK_LIBS=(cudart cublas cublasLt curand nvrtc)  # what cudarc and candle-kernels pass as -l (besides cuda)
STAMP="${WHEELS[*]} stub-v1"  # bump the suffix when the prepared layout changes: caches rebuild

die() { echo "build-cuda.sh: $*" >&2; exit 1; }
installed() { [[ -f $cuda/.stamp && $(<"$cuda/.stamp") == "$STAMP" ]]; }

make_stub() {  # toolkit dir: write lib/stubs/libcuda.so from its include/cuda.h
  local t=$1 names
  mkdir -p "$t/lib/stubs"
  # Preprocessed, cuda.h names the real symbols (cuMemAlloc -> cuMemAlloc_v2, ...).
  names=$(echo '#include <cuda.h>' | gcc -E -P -I"$t/include" -x c - \
    | grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d ' \t(' | sort -u) \
    || die "could not preprocess $t/include/cuda.h with gcc"
  [[ $(wc -l <<<"$names") -gt 300 ]] || die "found too few driver functions in cuda.h (gcc -E output changed?)"
  # shellcheck disable=SC2001  # one line of C per name
  sed 's/.*/int &(void) { return 34; }/' <<<"$names" >"$t/lib/stubs/libcuda_stub.c"
  gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$t/lib/stubs/libcuda.so" "$t/lib/stubs/libcuda_stub.c" \
    || die "gcc failed to build the libcuda stub"
}

install_toolkit() {
  command -v python3 >/dev/null || die "python3 not found (needed for pip)"
  command -v gcc >/dev/null || die "gcc not found (nvcc's host compiler; on Debian: apt-get install build-essential)"
  mkdir -p "$cache"
  exec 9>"$cache/.cuda.lock"
  flock 9  # parallel runs sharing a cache wait here, then find the work done
  installed && return 0
  rm -rf "$cache"/.cuda.tmp.*  # leftovers of a killed run (nobody else holds the lock)
  tmp=$(mktemp -d "$cache/.cuda.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "build-cuda.sh: installing CUDA 13.0 wheels into $cuda (about 1.2 GB)" >&2
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
    --no-compile --target "$tmp/pkgs" "${WHEELS[@]}" \
    || die "pip install of the CUDA wheels failed (is PyPI reachable?): ${WHEELS[*]}"
  local t=$tmp/pkgs/nvidia/cu13 l so
  [[ -x $t/bin/nvcc ]] || die "the wheels did not produce $t/bin/nvcc (layout changed?)"
  for l in "${LINK_LIBS[@]}"; do
    so=$(cd "$t/lib" && compgen -G "lib$l.so.[0-9]*") || die "no lib$l.so.N in the wheels ($t/lib)"
    [[ $(wc -l <<<"$so") == 1 ]] || die "several lib$l.so.N in $t/lib: ${so//$'\n'/ }"
    ln -s "$so" "$t/lib/lib$l.so"
  done
  make_stub "$t"
  mkdir -p "$tmp/cpu-smoke"  # the stub under its run-time name, only for the start-up check below
  ln -s ../pkgs/nvidia/cu13/lib/stubs/libcuda.so "$tmp/cpu-smoke/libcuda.so.1"
  echo "$STAMP" >"$tmp/.stamp"
  rm -rf "${cuda:?}"
  mv "$tmp" "$cuda"
  trap - EXIT
  echo "build-cuda.sh: installed $cuda" >&2
}

installed || install_toolkit
command -v cargo >/dev/null || die "cargo not found"

export PATH=$home/bin:$PATH
export CUDA_HOME=$home CUDA_PATH=$home CUDA_ROOT=$home
export CUDARC_CUDA_VERSION=13000                    # cudarc's bindings: CUDA 13.0, whatever nvcc says
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}     # H100; candle-kernels compiles for this arch only
# NVCC_CCBIN (nvcc's host compiler) passes through if set; gcc 12 on PATH works with CUDA 13.0.

cargo build --release --features cuda "$@" || die "cargo build --release --features cuda $* failed"

libs=$home/lib
bins=()
for b in embed solve; do
  [[ -x $CARGO_TARGET_DIR/release/$b ]] && bins+=("$CARGO_TARGET_DIR/release/$b")
done
[[ ${#bins[@]} -gt 0 ]] || die "no binary in $CARGO_TARGET_DIR/release"
for b in "${bins[@]}"; do
  # Loads, binds every symbol (against the pinned libs and the 13.0 driver API), parses --help.
  LD_LIBRARY_PATH=$libs:$cuda/cpu-smoke LD_BIND_NOW=1 "$b" --help >/dev/null \
    || die "$b does not start with LD_LIBRARY_PATH=$libs:$cuda/cpu-smoke LD_BIND_NOW=1"
done
echo
echo "build-cuda.sh: built (CUDA 13.0, sm_$CUDA_COMPUTE_CAP), start-up check passed:"
for b in "${bins[@]}"; do
  echo "  $b"
  LD_LIBRARY_PATH=$libs ldd "$b" | grep -E 'not found|cu|nvrtc' | sed 's/ (0x[0-9a-f]*)//; s/^\s*/      /'
done
echo "To run on a GPU machine (driver >= 580, i.e. CUDA 13.0): libcuda.so.1 comes from its driver;"
echo "the other libraries above must be on LD_LIBRARY_PATH: copy $libs there"
echo "(or pip install the same pinned wheels) and export LD_LIBRARY_PATH=<that dir>."
