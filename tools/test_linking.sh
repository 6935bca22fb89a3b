#!/usr/bin/env bash
# Runs the README's build, link and install commands exactly as written, as a user on a fresh clone
# would: the program from docs/bindings.md linked against the build tree (LD_LIBRARY_PATH and
# rpath), against an installed prefix through pkg-config with rpath, statically, and, as root
# where nothing is installed in /usr/local yet, system-wide with ldconfig (removed again after);
# then the CLI from the prefix and from `cargo install`. Each command is looked up verbatim first.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
# shellcheck source=tools/documented.sh
. tools/documented.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The user's program: the complete C example of docs/bindings.md.
new_project() {
  mkdir -p "$work/$1"
  cd "$work/$1"
  documented_block "$repo/docs/bindings.md" c "## C" > app.c
  grep -q gemma_cyber_classify app.c
}

# The build tree. The commands name include/ and target/release relative to the repository root;
# the project directory mirrors it with links, so the test leaves nothing in the checkout.
documented README.md 'cargo build --release'
new_project tree
ln -s "$repo/include" include
ln -s "${CARGO_TARGET_DIR:-$repo/target}" target
documented "$repo/README.md" 'cc -Iinclude app.c -Ltarget/release -lgemma_cyber && LD_LIBRARY_PATH=target/release ./a.out'
documented "$repo/README.md" 'cc -Iinclude app.c -Ltarget/release -lgemma_cyber -Wl,-rpath,"$PWD/target/release" && ./a.out'

# An installed prefix, in a home of its own (cargo's and rustup's homes stay where they are).
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export HOME="$work/home"
mkdir -p "$HOME"
cd "$repo"
documented README.md 'tools/install.sh "$HOME/.local"'
documented README.md '"$HOME/.local/bin/gemma-cyber" classify examples/data/sample.npy'
# The installed program finds the plugins installed beside the library in PREFIX/lib.
"$HOME/.local/bin/gemma-cyber" info --backend onnxruntime | grep -q '^backend: *onnxruntime$'
"$HOME/.local/bin/gemma-cyber" plugins | grep -q "$HOME/.local/lib/libgemma_cyber_wgpu.so: usable"
"$HOME/.local/bin/gemma-cyber" bench --backends onnxruntime --batches 1 --seconds 0.05 | grep -q '^onnxruntime '
new_project prefix
documented "$repo/README.md" 'export PKG_CONFIG_PATH="$HOME/.local/lib/pkgconfig"'
documented "$repo/README.md" 'cc app.c $(pkg-config --cflags --libs gemma_cyber) -Wl,-rpath,"$(pkg-config --variable=libdir gemma_cyber)" -o app && ./app'
documented "$repo/README.md" 'cc app.c -I"$HOME/.local/include" "$HOME/.local/lib/libgemma_cyber.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o app-static && ./app-static'
if ldd app-static | grep -q gemma_cyber; then
  echo "app-static needs the shared library" >&2
  exit 1
fi

# cargo install, into a root of its own, sharing this checkout's build.
cd "$repo"
# Offline: every dependency is in Cargo.lock and already downloaded by the build above.
(
  export CARGO_INSTALL_ROOT="$work/cargo-install" CARGO_NET_OFFLINE=true
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
  documented README.md 'cargo install --path . --locked'
)
"$work/cargo-install/bin/gemma-cyber" info --backend cpu >/dev/null

# The README's plugin commands: listing, a setting, the plain-C plugin built and selected, and the
# static build with the backends compiled in.
cd "$repo"
documented README.md 'target/release/gemma-cyber plugins'
documented README.md 'target/release/gemma-cyber info --backend wgpu --plugin-setting wgpu.adapter=llvmpipe'
rm -rf /tmp/my-plugins
documented README.md 'examples/plugin-c/build.sh /tmp/my-plugins'
documented README.md 'target/release/gemma-cyber classify --plugin example_c --plugin-dir /tmp/my-plugins examples/data/sample.npy'
rm -rf /tmp/my-plugins
documented README.md 'cargo build --release -p gemma-cyber --lib --no-default-features --features static-wgpu,static-onnxruntime --target-dir target/static'
# A program linked with it reaches every backend by name with no plugin file anywhere: each of
# them is compiled in (the program prints one line per backend, and fails if any is missing).
static_dir="$work/static"
mkdir -p "$static_dir"
cc -Iinclude tests/c/backends_by_name.c target/static/release/libgemma_cyber.a \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$static_dir/backends_by_name"
if ldd "$static_dir/backends_by_name" | grep -q gemma_cyber; then
  echo "backends_by_name needs the shared library" >&2
  exit 1
fi
(cd "$static_dir" && env -u GEMMA_CYBER_PLUGIN_DIR ./backends_by_name "$GEMMA_CYBER_ONNXRUNTIME_LIB")

# System-wide: only as root, and only where it replaces nothing already installed.
installed=(bin/gemma-cyber include/gemma_cyber.h include/gemma_cyber.hpp include/gemma_cyber_plugin.h
  lib/libgemma_cyber.a lib/libgemma_cyber.so lib/libgemma_cyber.so.1 lib/libgemma_cyber_wgpu.so
  lib/libgemma_cyber_onnxruntime.so lib/pkgconfig/gemma_cyber.pc lib/cmake/GemmaCyber)
present=0
for path in "${installed[@]}" lib/libgemma_cyber.so.*; do
  [ -e "/usr/local/$path" ] && present=1
done
if [ "$(id -u)" != 0 ] || [ "$present" = 1 ]; then
  echo "== system-wide route NOT run: needs root and no gemma-cyber in /usr/local" >&2
  exit 0
fi
remove_system_install() {
  rm -rf "${installed[@]/#//usr/local/}" /usr/local/lib/libgemma_cyber.so.*
  rmdir --ignore-fail-on-non-empty /usr/local/lib/cmake /usr/local/lib/pkgconfig 2>/dev/null || true
  ldconfig
  rm -rf "$work"
}
trap remove_system_install EXIT
# Root needs no sudo; a machine without it runs the same lines.
command -v sudo >/dev/null || sudo() { "$@"; }
documented README.md 'tools/install.sh --build-only'
documented README.md 'sudo tools/install.sh --no-build /usr/local && sudo ldconfig'
new_project system
documented "$repo/README.md" 'cc app.c -lgemma_cyber -o app && ./app'
