#!/usr/bin/env bash
# Installs the package into the repository's .venv exactly as the README says (offline: the build
# backend is in the tree) and runs its pytest suite on every backend. Needs `cargo build --release`
# and tools/setup.sh (which makes .venv with numpy, pytest, pyarrow and pyspark) first.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
cargo build --release --quiet
# The README's command, with the package index turned off: nothing may be downloaded.
PIP_NO_INDEX=1 python3 -m pip install ./bindings/python
# From the repository root, so that the installed package is imported, not the source tree.
python3 -m pytest -q -p no:cacheprovider bindings/python/tests
