#!/usr/bin/env bash
# Builds the C++ example against the installed library (tools/install.sh into build/install) as
# C++17 with warnings as errors and -fsanitize=address,undefined, and runs it with the example C
# plugin (examples/plugin-c) built beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/install.sh build/install >/dev/null
prefix="$PWD/build/install"
mkdir -p build/examples-cpp
c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -O2 -g \
  -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -I"$prefix/include" examples/cpp/classify.cpp \
  -L"$prefix/lib" -lgemma_cyber -Wl,-rpath,"$prefix/lib" -o build/examples-cpp/classify
examples/plugin-c/build.sh build/examples-cpp/plugins >/dev/null
echo "== examples/cpp/classify (address,undefined sanitizers)"
RUST_BACKTRACE=0 build/examples-cpp/classify build/examples-cpp/plugins
