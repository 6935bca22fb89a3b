#!/usr/bin/env bash
# Installs the library into build/install, checks the pkg-config file, then builds this tiny CMake
# project against the installed tree with find_package(GemmaCyber) and runs its three programs.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/install.sh build/install >/dev/null
prefix="$PWD/build/install"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
echo "== pkg-config gemma_cyber $(pkg-config --modversion gemma_cyber): $(pkg-config --cflags --libs --static gemma_cyber)"
rm -rf build/examples-cmake
cmake -S examples/cmake -B build/examples-cmake -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/examples-cmake >/dev/null
for program in consumer_c consumer_c_static consumer_cpp; do
  echo "== examples/cmake: $program"
  build/examples-cmake/$program
done
# The static program must not need the shared library at all.
! ldd build/examples-cmake/consumer_c_static | grep -q gemma_cyber
# A version range finds the package when its version lies inside, and only then.
range_dir=build/examples-cmake-range
for range in "0.0.5...0.5" "0.1...<0.2" "0.2...1.0" "0.0.1...<0.1"; do
  rm -rf "$range_dir" && mkdir -p "$range_dir"
  printf 'cmake_minimum_required(VERSION 3.19)\nproject(range NONE)\nfind_package(GemmaCyber %s)\nmessage(STATUS "found=${GemmaCyber_FOUND}")\n' "$range" >"$range_dir/CMakeLists.txt"
  found=$(cmake -S "$range_dir" -B "$range_dir/build" -DCMAKE_PREFIX_PATH="$prefix" 2>/dev/null | sed -n 's/^-- found=//p')
  echo "== find_package(GemmaCyber $range): found=$found"
  case "$range" in
    0.0.5...0.5 | "0.1...<0.2") [ "$found" = 1 ] ;;
    *) [ "$found" = 0 ] ;;
  esac
done
