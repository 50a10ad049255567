#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests of `embed plot --out map.html`
# (tests/it/plot_html.rs), only when no Chromium/Chrome is found. Needs root (CI runs as root) or
# sudo. Prints the browser's path on success.
#
#   scripts/install-chromium.sh          # install if missing
#   EXEMPLAR_CHROMIUM=/path/to/chrome    # the tests use this browser instead of searching PATH
set -euo pipefail

find_browser() {
  if [ -n "${EXEMPLAR_CHROMIUM:-}" ] && [ -x "${EXEMPLAR_CHROMIUM}" ]; then
    echo "$EXEMPLAR_CHROMIUM"; return 0
  fi
  for b in chromium chromium-browser google-chrome-stable google-chrome chrome; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}

if path=$(find_browser); then
  echo "$path"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-chromium: not root and no sudo; install chromium yourself" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get (not Debian/Ubuntu); install chromium yourself and set EXEMPLAR_CHROMIUM" >&2
  exit 1
fi
echo "install-chromium: installing Debian's chromium (about 100 MB)..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends chromium >&2
find_browser
