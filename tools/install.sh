#!/usr/bin/env bash
# Builds the release library and command-line tool and installs them into PREFIX (default:
# build/install, ignored by git):
#   bin/gemma-cyber,
#   lib/libgemma_cyber.so.X.Y.Z, lib/libgemma_cyber.so.1 -> .so.X.Y.Z, lib/libgemma_cyber.so -> .so.1,
#   lib/libgemma_cyber_wgpu.so, lib/libgemma_cyber_onnxruntime.so (the backend plugins, found next
#   to the core at run time), lib/libgemma_cyber.a (static: cpu, wgpu and onnxruntime compiled in),
#   include/gemma_cyber.h, include/gemma_cyber.hpp, include/gemma_cyber_plugin.h,
#   lib/pkgconfig/gemma_cyber.pc, lib/cmake/GemmaCyber/GemmaCyberConfig{,Version}.cmake.
# Usage: tools/install.sh [--build-only | --no-build] [PREFIX]. --build-only makes the builds and
# installs nothing; --no-build then installs them (for `sudo`, where cargo is often not on root's
# PATH and a root build would leave root-owned files in target/). DESTDIR stages the tree for
# packagers (paths inside the files still name PREFIX). The in-tree consumers (examples, Go, C#)
# run against build/install.
set -euo pipefail
build=1
install=1
case "${1:-}" in
  --no-build) build=0; shift ;;
  --build-only) install=0; shift ;;
esac
# A relative PREFIX is relative to where the command was run, and made absolute (the .pc file needs
# one); an absolute one is taken as is and not created outside DESTDIR. The default is the
# repository's build/install.
prefix="${1:-}"
case "$prefix" in
  "") ;;
  /*) ;;
  *) mkdir -p "$prefix" && prefix="$(cd "$prefix" && pwd)" ;;
esac
cd "$(dirname "$0")/.."
if [ -z "$prefix" ]; then
  mkdir -p build/install
  prefix="$PWD/build/install"
fi
root="${DESTDIR:-}$prefix"

# The core, the CLI and both plugins (the workspace's default members). The static library is
# built with the backends compiled in (the very same modules as the plugins), since a statically
# linked program usually ships without plugin files; its own target directory keeps this build
# from replacing the shared core's files.
# The static library's stamp: made when both builds have just run (cargo leaves an up-to-date
# library's time alone, so the library's own time says nothing), and refused below when the shared
# library is newer: built again since, the static one may be of older sources.
stamp=target/static/release/libgemma_cyber.a.built
if [ "$build" = 1 ]; then
  cargo build --release --quiet
  cargo build --release --quiet -p gemma-cyber --lib --no-default-features \
    --features static-wgpu,static-onnxruntime --target-dir target/static
  touch "$stamp"
fi
[ "$install" = 1 ] || exit 0
for built in target/release/libgemma_cyber.so target/release/gemma-cyber \
  target/release/libgemma_cyber_wgpu.so target/release/libgemma_cyber_onnxruntime.so; do
  [ -f "$built" ] || { echo "$built is missing: run tools/install.sh --build-only first" >&2; exit 1; }
done
# The static library with the backends compiled in, built with the shared one from the same
# sources: a missing one, or one not built since the shared library was, could be of other code.
static_lib=target/static/release/libgemma_cyber.a
if [ ! -f "$static_lib" ] || [ ! -f "$stamp" ] || [ target/release/libgemma_cyber.so -nt "$stamp" ]; then
  echo "$static_lib is missing or not built since target/release/libgemma_cyber.so was:" \
    "run tools/install.sh --build-only first" >&2
  exit 1
fi

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
abi="$(sed -n 's/^#define GEMMA_CYBER_ABI_VERSION \([0-9]*\)$/\1/p' include/gemma_cyber.h)"
soname="libgemma_cyber.so.$abi"
# build.rs hard-codes the soname; an ABI bump that forgets it must not ship.
if command -v objdump >/dev/null; then
  actual="$(objdump -p target/release/libgemma_cyber.so | awk '$1 == "SONAME" { print $2 }')"
  [ "$actual" = "$soname" ] || { echo "soname is '$actual', expected '$soname' (build.rs)" >&2; exit 1; }
fi

# What a static link needs besides libgemma_cyber.a (rustc --print native-static-libs on Linux).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

install -d "$root/bin" "$root/lib/pkgconfig" "$root/lib/cmake/GemmaCyber" "$root/include"
install -m 0755 target/release/gemma-cyber "$root/bin/gemma-cyber"
install -m 0755 target/release/libgemma_cyber.so "$root/lib/libgemma_cyber.so.$version"
ln -sfn "libgemma_cyber.so.$version" "$root/lib/$soname"
ln -sfn "$soname" "$root/lib/libgemma_cyber.so"
for plugin in target/release/libgemma_cyber_*.so; do
  install -m 0755 "$plugin" "$root/lib/"
done
install -m 0644 "$static_lib" "$root/lib/libgemma_cyber.a"
install -m 0644 include/gemma_cyber.h include/gemma_cyber.hpp include/gemma_cyber_plugin.h "$root/include/"

cat > "$root/lib/pkgconfig/gemma_cyber.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: gemma_cyber
Description: Classifies text embeddings as cyber-related or not (C ABI $abi)
Version: $version
Libs: -L\${libdir} -lgemma_cyber
Libs.private: $static_libs
Cflags: -I\${includedir}
PC

# Relocatable: every path is found from this file's own location.
cat > "$root/lib/cmake/GemmaCyber/GemmaCyberConfig.cmake" <<CMAKE
# CMake package for gemma-cyber $version (C ABI $abi). Generated by tools/install.sh.
# Targets: GemmaCyber::gemma_cyber (shared library) and GemmaCyber::gemma_cyber_static.
# include/gemma_cyber.hpp (the C++ wrapper) needs C++17.
get_filename_component(_gemma_cyber_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET GemmaCyber::gemma_cyber)
  add_library(GemmaCyber::gemma_cyber SHARED IMPORTED)
  set_target_properties(GemmaCyber::gemma_cyber PROPERTIES
    IMPORTED_LOCATION "\${_gemma_cyber_prefix}/lib/libgemma_cyber.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_gemma_cyber_prefix}/include")
endif()

if(NOT TARGET GemmaCyber::gemma_cyber_static)
  add_library(GemmaCyber::gemma_cyber_static STATIC IMPORTED)
  set_target_properties(GemmaCyber::gemma_cyber_static PROPERTIES
    IMPORTED_LOCATION "\${_gemma_cyber_prefix}/lib/libgemma_cyber.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "\${_gemma_cyber_prefix}/include"
    INTERFACE_LINK_LIBRARIES "$(echo "$static_libs" | sed 's/-l//g; s/ /;/g')")
endif()

set(GemmaCyber_VERSION "$version")
set(GemmaCyber_ABI_VERSION "$abi")
unset(_gemma_cyber_prefix)
CMAKE

# Same major version is compatible; before 1.0 the minor version must match too (semver).
cat > "$root/lib/cmake/GemmaCyber/GemmaCyberConfigVersion.cmake" <<CMAKE
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION_RANGE)
  # find_package(GemmaCyber 0.1...0.3): compatible when the version lies in the range, each end
  # included or not as written (CMake 3.19 and later).
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION_RANGE_MIN STREQUAL "INCLUDE" AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION_MIN)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  endif()
  if(PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "INCLUDE" AND PACKAGE_VERSION VERSION_GREATER PACKAGE_FIND_VERSION_MAX)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  endif()
  if(PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "EXCLUDE" AND PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION_MAX)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  endif()
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "$(echo "$version" | cut -d. -f1)")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif("$(echo "$version" | cut -d. -f1)" STREQUAL "0" AND NOT PACKAGE_FIND_VERSION_MINOR STREQUAL "$(echo "$version" | cut -d. -f2)")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CMAKE

echo "installed gemma-cyber $version (soname $soname) into $root"
