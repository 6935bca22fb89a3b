#!/usr/bin/env bash
# Runs the C example and the C API test under valgrind against the release library:
# any memory error or leak fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --lib --quiet
out=target/release/c-valgrind
mkdir -p "$out"
# Each program with its arguments: the example takes an optional model path, the test the repo root.
for program in "examples/c/classify.c" "tests/c/c_api_test.c $PWD"; do
  read -r source args <<<"$program"
  name=$(basename "$source" .c)
  cc -std=c11 -Wall -Wextra -Werror -pedantic -O1 -g -Iinclude "$source" \
    -Ltarget/release -lgemma_cyber -Wl,-rpath,"$PWD/target/release" -lm -o "$out/$name"
  echo "valgrind: $name"
  RUST_BACKTRACE=0 valgrind --quiet --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    "$out/$name" $args >/dev/null
done
echo "valgrind: 0 errors, 0 leaks"
