#!/usr/bin/env bash
# Installs what the tests need on a bare Debian 12 machine; quick when everything is already there.
# Needs root (or sudo) for apt. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# Mesa 25 from bookworm-backports: its lavapipe (software Vulkan) runs compute shaders ~12x faster
# than bookworm's Mesa 22. Same mirror as the system's own sources.
backports=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$backports" ] && grep -qs bookworm /etc/os-release; then
  $SUDO tee "$backports" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

packages=(build-essential pkg-config cmake valgrind python3 python3-venv mono-devel openjdk-17-jre-headless)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
mesa_ok=""
dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^25' && mesa_ok=1
if [ ${#missing[@]} -gt 0 ] || [ -z "$mesa_ok" ]; then
  $SUDO apt-get update -qq
  [ ${#missing[@]} -gt 0 ] && $SUDO apt-get install -y -qq "${missing[@]}"
  [ -n "$mesa_ok" ] || $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1
fi

# --- bindings (branch bindings): Go for bindings/go when none is on PATH; bindings/go/test.sh finds it ---
command -v go >/dev/null || [ -x /usr/lib/go-1.23/bin/go ] ||
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq -t bookworm-backports golang-1.23-go; }

# Python: .venv (ignored by git) for the Python binding's tests and the Spark example, from PyPI
# (pyspark's mapInArrow needs pandas too).
[ -x .venv/bin/python3 ] || python3 -m venv .venv
.venv/bin/python3 -c 'import numpy, pytest, pyarrow, pandas, pyspark; assert pyspark.__version__ == "4.3.0"' 2>/dev/null ||
  .venv/bin/python3 -m pip install --quiet numpy==2.4.6 pytest==9.2.0 pyarrow==26.0.1 pandas==3.1.1 pyspark==4.3.0

# Miri, which tools/test.sh runs the library's unit tests under: rustup's nightly toolchain with the
# miri and rust-src components. Without rustup (or its server), tools/test.sh says loudly that
# Miri did not run.
if command -v rustup >/dev/null && ! cargo +nightly miri --version >/dev/null 2>&1; then
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup component add --toolchain nightly miri rust-src || echo "== cannot add miri to nightly" >&2
  else
    rustup toolchain install nightly --profile minimal --component miri,rust-src ||
      echo "== cannot install rustup's nightly toolchain for Miri" >&2
  fi
fi

# ONNX Runtime's own shared library, from its PyPI wheel, into .ort/ (ignored by git).
tools/fetch_onnxruntime.sh
