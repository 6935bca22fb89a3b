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

echo "== C example under valgrind"
examples/c/run.sh --valgrind

# --- bindings and packaging (branch bindings): each consumer against the tools/install.sh tree ---
examples/c/run.sh --sanitize                 # C examples with -fsanitize=address,undefined
examples/cpp/run.sh                          # C++17 wrapper example, sanitizers on
examples/cmake/run.sh                        # pkg-config + find_package(GemmaCyber), shared and static
bindings/go/test.sh                          # go vet, go test, go test -race
bindings/csharp/test.sh                      # mcs + mono
