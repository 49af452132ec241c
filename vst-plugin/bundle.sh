#!/usr/bin/env bash
# Makes installable plugin bundles from the built library (one library exports both formats):
#   target/bundles/funcodec-monitor.clap
#   target/bundles/FunCodec Monitor.vst3/Contents/<arch>-linux/FunCodec Monitor.so
# Usage: vst-plugin/bundle.sh [--release] [--no-build] [--lib PATH] [--out DIR]
#   --release   build/bundle the release profile (default: dev, like the test suite)
#   --no-build  bundle what is already built
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
build=1
lib=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --no-build) build=0 ;;
    --lib) lib="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--release] [--no-build] [--lib PATH] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
target="${CARGO_TARGET_DIR:-target}"
cargo="${CARGO:-cargo}"
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then
    "$cargo" build -p funcodec-vst-plugin --lib --release
  else
    "$cargo" build -p funcodec-vst-plugin --lib
  fi
fi
[ -n "$lib" ] || lib="$target/$profile/libfuncodec_monitor.so"
[ -n "$out" ] || out="$target/bundles"
[ -f "$lib" ] || { echo "bundle.sh: $lib not found (build first)" >&2; exit 1; }

arch="$(uname -m)-linux"
mkdir -p "$out"
# Copy to a temporary name, then rename: a host (or test) never sees a half-written file.
install_file() { cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"; }

install_file "$lib" "$out/funcodec-monitor.clap"

vst="$out/FunCodec Monitor.vst3"
mkdir -p "$vst/Contents/$arch"
install_file "$lib" "$vst/Contents/$arch/FunCodec Monitor.so"
echo "bundles in $out: funcodec-monitor.clap, FunCodec Monitor.vst3"
