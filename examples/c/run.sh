#!/usr/bin/env bash
# Builds the C example (examples/c/classify.c) and the C API test (tests/c/c_api_test.c) against the
# installed library (tools/install.sh into build/install) with warnings as errors, and runs them.
# --valgrind: under valgrind, failing on any error or leak.
# --sanitize: built with -fsanitize=address,undefined instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/install.sh build/install >/dev/null
prefix="$PWD/build/install"
mode="${1:-}"
out=build/examples-c
mkdir -p "$out"
flags=(-std=c11 -Wall -Wextra -Werror -pedantic -O2 -g)
[ "$mode" = "--sanitize" ] && flags+=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
# Plugins for tests/c/plugins_test.c: the plain-C example, the bad ones of tests/plugins/, a Rust
# plugin that panics, and a directory whose libgemma_cyber_wgpu.so is no library.
plugins="$PWD/$out/plugins"
broken="$PWD/$out/broken-wgpu"
rm -rf "$plugins" "$broken"
mkdir -p "$plugins" "$broken"
examples/plugin-c/build.sh "$plugins" >/dev/null
for source in tests/plugins/*.c; do
  cc -std=c11 -O1 -g -fPIC -shared "$source" -lm -o "$plugins/libgemma_cyber_$(basename "$source" .c).so"
done
cargo build --release --quiet --example gemma_cyber_panicking
cp target/release/examples/libgemma_cyber_panicking.so "$plugins/"
echo "not a shared library" > "$broken/libgemma_cyber_wgpu.so"
# Each program with its arguments: the example takes an optional model path, the C API test the
# repo root, the plugins test its two directories.
for program in "examples/c/classify.c" "tests/c/c_api_test.c $PWD" "tests/c/plugins_test.c $plugins $broken"; do
  read -r source args <<<"$program"
  name=$(basename "$source" .c)
  cc "${flags[@]}" -I"$prefix/include" "$source" \
    -L"$prefix/lib" -lgemma_cyber -Wl,-rpath,"$prefix/lib" -lm -o "$out/$name"
  echo "== $name ${mode}"
  case "$mode" in
    --valgrind)
      # shellcheck disable=SC2086
      RUST_BACKTRACE=0 valgrind --quiet --error-exitcode=99 --suppressions=examples/c/valgrind.supp --leak-check=full \
        --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
        "$out/$name" $args ;;
    # shellcheck disable=SC2086
    *) RUST_BACKTRACE=0 "$out/$name" $args ;;
  esac
done
