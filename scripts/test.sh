#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs, builds once, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! pkg-config --exists gstreamer-1.0 2>/dev/null || ! command -v gst-launch-1.0 >/dev/null; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad >/dev/null
fi

# Python test tools (no PyTorch in CI): the exporter's config rules need only PyYAML.
PY=python3
if ! "$PY" -c "import yaml" 2>/dev/null; then
  if [ ! -x target/pyenv/bin/python ]; then
    mkdir -p target
    python3 -m venv target/pyenv 2>/dev/null || {
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv target/pyenv; }
    target/pyenv/bin/pip install -q pyyaml==6.0.2
  fi
  PY=target/pyenv/bin/python
fi
"$PY" -m unittest discover -s models -p 'test_*.py'

# The VST3 plugin test runs the bundle in pedalboard (a headless VST3 host from PyPI) with numpy.
if ! target/pyenv-plugin/bin/python -c "import pedalboard, numpy" 2>/dev/null; then
  mkdir -p target
  python3 -m venv target/pyenv-plugin 2>/dev/null || {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/pyenv-plugin; }
  target/pyenv-plugin/bin/pip install -q pedalboard==0.9.26 numpy==2.4.6
fi
export FUNCODEC_REQUIRE_PEDALBOARD=1

# One profile for build and test (dev, with dependencies optimised: see Cargo.toml).
# One build, with the CUDA backend compiled in (no toolkit needed): the suite tests its fallback
# here, and its GPU parity test wherever a GPU answers. Build and test use the same flags.
CARGO_FLAGS=(--workspace --locked --features funcodec-core/cuda)
cargo build "${CARGO_FLAGS[@]}" --all-targets
mkdir -p target
# pipefail: the status is cargo's; the log keeps the figures the tests print (parity, timings).
cargo test "${CARGO_FLAGS[@]}" -- --nocapture 2>&1 | tee target/test.log
echo "all tests passed"
