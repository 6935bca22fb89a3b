#!/usr/bin/env bash
# Builds the C example against the release library with warnings as errors and runs it.
# Arguments are passed to the example (an optional model path).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --lib --quiet
out=target/release/examples-c
mkdir -p "$out"
cc -std=c11 -Wall -Wextra -Werror -O2 -Iinclude examples/c/classify.c \
  -Ltarget/release -lgemma_cyber -Wl,-rpath,"$PWD/target/release" -lm -o "$out/classify"
"$out/classify" "$@"
