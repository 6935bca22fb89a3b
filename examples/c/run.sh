#!/usr/bin/env bash
# Builds the C example against the release library with warnings as errors and runs it;
# with --valgrind, runs it under valgrind and fails on any error or leak.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --lib --quiet
out=target/release/examples-c
mkdir -p "$out"
cc -std=c11 -Wall -Wextra -Werror -O2 -Iinclude examples/c/classify.c \
  -Ltarget/release -lgemma_cyber -Wl,-rpath,"$PWD/target/release" -lm -o "$out/classify"
if [ "${1:-}" = "--valgrind" ]; then
  RUST_BACKTRACE=0 valgrind --quiet --error-exitcode=99 --suppressions=examples/c/valgrind.supp --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible "$out/classify"
else
  "$out/classify"
fi
