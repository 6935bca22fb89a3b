#!/usr/bin/env bash
# Compiles the C# bindings and their tests with Mono's mcs (C# 7.2, the .csproj files' sources) and
# runs the tests with mono against the installed library (tools/install.sh into build/install).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools/install.sh build/install >/dev/null
out=build/csharp
mkdir -p "$out"
mcs -langversion:7.2 -warnaserror -target:library -doc:"$out/GemmaCyber.xml" \
  -out:"$out/GemmaCyber.dll" bindings/csharp/GemmaCyber/*.cs
cp bindings/csharp/GemmaCyber/GemmaCyber.dll.config "$out/"
mcs -langversion:7.2 -warnaserror -target:exe -r:"$out/GemmaCyber.dll" \
  -out:"$out/GemmaCyber.Tests.exe" bindings/csharp/GemmaCyber.Tests/*.cs
# The plain-C example plugin, for the tests that choose a plugin by name.
examples/plugin-c/build.sh "$out/plugins" >/dev/null
export GEMMA_CYBER_TEST_PLUGIN_DIR="$PWD/$out/plugins"
# The dllmap resolves "gemma_cyber" to libgemma_cyber.so.1, found through LD_LIBRARY_PATH.
# A deadlock (a callback or finalizer gone wrong) fails the run instead of holding it: the tests take
# seconds.
LD_LIBRARY_PATH="$PWD/build/install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" RUST_BACKTRACE=0 \
  timeout 300 mono --debug "$out/GemmaCyber.Tests.exe"
