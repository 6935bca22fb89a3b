#!/usr/bin/env bash
# Builds the example plugin, libgemma_cyber_example_c.so, with warnings as errors.
# Usage: build.sh [OUTPUT_DIR]   (default: build/ next to this script; a relative OUTPUT_DIR is
# taken from the directory you run it in)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
cc -std=c99 -O2 -fPIC -shared -Wall -Wextra -Werror -pedantic -I"$here/../../include" \
  "$here/example_plugin.c" -lm -o "$out/libgemma_cyber_example_c.so"
echo "$out/libgemma_cyber_example_c.so"
