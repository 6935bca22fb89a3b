#!/usr/bin/env bash
# Builds the C examples (classify.c, bad_inputs.c) against the installed library (tools/install.sh
# into build/install) with warnings as errors and runs them. --valgrind: under valgrind, failing on
# any error or leak. --sanitize: built with -fsanitize=address,undefined instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/install.sh build/install >/dev/null
prefix="$PWD/build/install"
mode="${1:-}"
out=build/examples-c
mkdir -p "$out"
flags=(-std=c11 -Wall -Wextra -Werror -O2 -g)
[ "$mode" = "--sanitize" ] && flags+=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
for name in classify bad_inputs; do
  cc "${flags[@]}" -I"$prefix/include" "examples/c/$name.c" \
    -L"$prefix/lib" -lgemma_cyber -Wl,-rpath,"$prefix/lib" -lm -o "$out/$name"
  echo "== examples/c/$name ${mode}"
  case "$mode" in
    --valgrind)
      RUST_BACKTRACE=0 valgrind --quiet --error-exitcode=99 --leak-check=full \
        --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
        "$out/$name" ;;
    *) RUST_BACKTRACE=0 "$out/$name" ;;
  esac
done
