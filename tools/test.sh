#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (C ABI, CLI, golden vectors, every backend),
# the C example under valgrind, and the Go and C# bindings. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export GEMMA_CYBER_ONNXRUNTIME_LIB="${GEMMA_CYBER_ONNXRUNTIME_LIB:-$PWD/$(cat .ort/LIBRARY_PATH)}"
export RUST_BACKTRACE=0

cargo test --release --all-targets

tools/c_valgrind.sh
