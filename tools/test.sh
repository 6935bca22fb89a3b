#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (C ABI, CLI, golden vectors, every backend,
# stress), a lean build's tests, Miri, the C programs under valgrind and the sanitizers, the C++, CMake,
# Go and C# consumers, and a bounded fuzzing run. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export GEMMA_CYBER_ONNXRUNTIME_LIB="${GEMMA_CYBER_ONNXRUNTIME_LIB:-$PWD/$(cat .ort/LIBRARY_PATH)}"
export RUST_BACKTRACE=0
# The suite needs several GB (two cargo builds, Miri, the Python and Spark environment, fuzzing); a
# full disk fails whichever step writes next, so the log says how much there was.
df -h . | awk 'NR == 2 { print "== disk: " $4 " free of " $2 " at the start of the suite" }'

# Lints first: the workspace lints (unsafe operations only in documented unsafe blocks, the
# function length limit) and clippy's defaults on every target, and the formatting.
if cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1; then
  cargo clippy --release --workspace --all-targets -- -D warnings
  cargo fmt --all --check
else
  echo "== clippy and rustfmt NOT run: rustup component add clippy rustfmt" >&2
fi

# What the tests load from the build directory, built the way a user builds it: the CLI with the core
# library and both backend plugins beside it in target/release (the CLI looks for plugins in its
# own directory), and the panicking example plugin in target/release/examples. `cargo test` alone
# leaves plugins under deps/ only and builds examples as test programs.
cargo build --release
cargo build --release --example gemma_cyber_panicking
# The workspace: the core, the wgpu and onnxruntime plugins and the plugin SDK, every target.
cargo test --release --workspace --all-targets
# The core library without the command line's features: the C ABI as an appliance links it.
cargo test --release -p gemma-cyber --no-default-features --test c_abi

# Miri: the library's unit tests (C boundary, model parsing, cpu kernels, input checks, metrics)
# under the interpreter, which fails on undefined behaviour, out-of-bounds access and leaks. It
# needs rustup's nightly toolchain with the miri and rust-src components; without them this says
# so loudly and the rest of the suite runs.
if cargo +nightly miri --version >/dev/null 2>&1; then
  MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p gemma-cyber --no-default-features --lib
  # The plugin SDK's unit tests: the model storage whose pointers a plugin may keep, the pool.
  MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p gemma-cyber-plugin --lib
  # The cpu kernels again with AVX2, FMA and AVX-512 compiled in: under Miri the CPU has exactly
  # the features compiled in, so the avx512 kernel is checked on every host, AVX-512 or not.
  RUSTFLAGS="-C target-feature=+avx2,+fma,+avx512f" MIRIFLAGS=-Zmiri-disable-isolation \
    cargo +nightly miri test -p gemma-cyber --no-default-features --lib backend::cpu::kernels
  # Nothing later uses Miri's build (~600 MB); the disk CI runs on is shared and sometimes nearly full.
  rm -rf target/miri
else
  echo "== Miri NOT run: no nightly toolchain with miri (rustup toolchain install nightly --component miri,rust-src)" >&2
fi

examples/c/run.sh --valgrind                 # C example and C API test: 0 errors, 0 leaks
examples/c/run.sh --sanitize                 # the same with -fsanitize=address,undefined

# Consumers in other languages, each against the tools/install.sh tree.
examples/cpp/run.sh                          # C++17 wrapper example, sanitizers on
examples/cmake/run.sh                        # pkg-config + find_package(GemmaCyber), shared and static
tools/test_linking.sh                        # the README's build, link and install commands, as written
bindings/go/test.sh                          # go vet, go test, go test -race, a module outside the tree
bindings/csharp/test.sh                      # mcs + mono
bindings/python/test.sh                      # pip install ./bindings/python, pytest on every backend
# The CLI on Parquet shards, and the Spark example in local[2] mode (a few minutes).
.venv/bin/python3 -m pytest -q -p no:cacheprovider tests/parquet examples/spark

# Fuzzing: each target (model loader, C entry points, pickle reader, checkpoint) for a bounded time.
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" tools/fuzz.sh

df -h . | awk 'NR == 2 { print "== disk: " $4 " free of " $2 " at the end of the suite" }'
