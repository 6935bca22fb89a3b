#!/usr/bin/env bash
# The checks that need hardware this project's CI lacks, in one run on a machine that has it: an
# NVIDIA GPU (issue #19: wgpu end to end next to PyTorch CUDA) and an AVX-512 CPU (issue #16: the
# avx512 kernel's speed next to avx2 and ONNX Runtime's MLAS). Such a machine is lent for minutes,
# has no Rust toolchain and reaches no network, so the work is split in two:
#
#   tools/bench/device.sh prepare   # here: release build, test and bench programs, stripped, with
#                                   # the Vulkan loader's Debian package, in .device/bundle.tar.xz
#                                   # (~11 MB: the tree that travels to such a machine is capped)
#   tools/bench/device.sh run       # there, from the repository root, with .device/ beside it:
#                                   # every result into $OUT (or .device/out), about 7 minutes
#
# `run` needs python3 with numpy, onnxruntime (its library serves the onnxruntime plugin too) and,
# for the GPU comparison, a CUDA build of PyTorch; it keeps going past a failed step and says at the
# end which steps failed. The test programs have this checkout's path built in, so `run` links it
# to the copy it runs in when the two differ.
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=.device
files=$stage/files

prepare() {
  set -e
  cargo build --release
  # Test and bench programs as cargo builds them, found by package, kind and name in its JSON
  # messages (the library's unit tests are kind "lib").
  local programs
  programs=$({
    cargo test --release --workspace --no-run --message-format=json
    cargo bench --workspace --no-run --message-format=json
  } 2>/dev/null | python3 -c '
import json, sys
wanted = {"gemma-cyber:test:cpu_backend", "gemma-cyber:test:golden", "gemma-cyber:test:conformance",
          "gemma-cyber:test:wgpu", "gemma-cyber:lib:gemma_cyber", "gemma-cyber-wgpu:test:backend",
          "gemma-cyber:bench:fma_peak", "gemma-cyber-wgpu:bench:kernels"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    package = m["package_id"].split("#")[-1].split("@")[0].split("/")[-1]
    name, kinds = m["target"]["name"], m["target"]["kind"]
    kind = "lib" if any(k.endswith("lib") for k in kinds) else kinds[0]
    if f"{package}:{kind}:{name}" in wanted:
        print(f"{package}-{name}", m["executable"])
')
  rm -rf "$stage"
  mkdir -p "$files/release" "$files/programs" "$files/deb"
  for file in gemma-cyber libgemma_cyber_wgpu.so libgemma_cyber_onnxruntime.so; do
    strip -o "$files/release/$file" "target/release/$file"
  done
  while read -r name path; do
    strip -o "$files/programs/$name" "$path"
  done <<<"$programs"
  # The Vulkan loader (libvulkan.so.1), which the machine's image may lack; its driver ships one
  # ICD file for it.
  (cd "$files/deb" && apt-get download libvulkan1 2>/dev/null >/dev/null)
  echo "$PWD" >"$files/checkout"
  ls "$files/programs"
  tar -cJf "$stage/bundle.tar.xz" -C "$files" .
  rm -rf "$files"
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
  du -h "$stage/bundle.tar.xz"
  echo "carry .device; command: bash tools/bench/device.sh run"
}

step() {
  local name=$1
  shift
  echo "== $name"
  "$@" || echo "== $name FAILED (exit $?)"
}

host_report() {
  date -u
  grep -m1 'model name' /proc/cpuinfo
  echo "cores: $(nproc)"
  echo "AVX-512 flags: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  nvidia-smi -L 2>&1 || true
  "$files/programs/gemma-cyber-fma_peak" --bench
  # The AVX2 path against the AVX2 peak, as it runs on a host without AVX-512.
  if grep -q avx512f /proc/cpuinfo; then
    GEMMA_CYBER_CPU_KERNEL=avx2 "$files/programs/gemma-cyber-fma_peak" --bench
  fi
}

# The cpu kernels on this CPU: one thread, 256 to 65,536 rows, avx2 and (where the CPU has it)
# avx512, the best call and the median of 2 s of calls, three alternating rounds.
cpu_kernels() {
  local kernel kernels=avx2
  grep -q avx512f /proc/cpuinfo && kernels="avx2 avx512"
  for round in 1 2 3; do
    for kernel in $kernels; do
      GEMMA_CYBER_CPU_KERNEL=$kernel target/release/gemma-cyber bench --backends cpu \
        --batches 256,1024,4096,65536 --num-threads 1 --seconds 2 --json |
        sed "s/^{/{\"kernel\":\"$kernel\",\"round\":$round,/"
    done
  done >"$out/cpu_kernels.jsonl"
  cat "$out/cpu_kernels.jsonl"
}

run() {
  out=${OUT:-$stage/out}
  mkdir -p "$out"
  [ -f "$stage/bundle.tar.xz" ] || { echo "no $stage/bundle.tar.xz: run 'tools/bench/device.sh prepare' first" >&2; exit 1; }
  rm -rf "$files" && mkdir -p "$files" && tar -xJf "$stage/bundle.tar.xz" -C "$files"
  mkdir -p target/release
  cp "$files"/release/* target/release/
  # The core library looks for plugins in its own directory: for the test programs, which have it
  # built in, theirs (as cargo leaves the plugins in target/release/deps).
  cp "$files"/release/*.so "$files/programs/"
  local built_in
  built_in=$(cat "$files/checkout")
  if [ "$built_in" != "$PWD" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"
  fi
  for deb in "$files"/deb/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)} RUST_BACKTRACE=0 PYTHONUNBUFFERED=1
  GEMMA_CYBER_ONNXRUNTIME_LIB=$(python3 -c 'import glob, os, onnxruntime
print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[-1])')
  export GEMMA_CYBER_ONNXRUNTIME_LIB

  {
    step host host_report
    step "cpu kernel tests" "$files/programs/gemma-cyber-cpu_backend" --test-threads 1 --nocapture
    step "library unit tests" "$files/programs/gemma-cyber-gemma_cyber" --test-threads 2
    step "golden" "$files/programs/gemma-cyber-golden"
    step "conformance, every backend" "$files/programs/gemma-cyber-conformance"
    step "wgpu through the library" "$files/programs/gemma-cyber-wgpu"
    step "wgpu plugin" "$files/programs/gemma-cyber-wgpu-backend"
    step "cpu kernels, avx2 and avx512" cpu_kernels
    step "cpu next to ONNX Runtime and PyTorch (CPU)" python3 tools/bench/compare.py \
      --backends cpu,onnxruntime --batches 1,16,256,1024,4096,65536 --threads 1,2,16 --seconds 1 \
      --out "$out/cpu"
    step "wgpu kernels" "$files/programs/gemma-cyber-wgpu-kernels" --bench --budget-s 5
    step "wgpu next to PyTorch CUDA" python3 tools/bench/compare.py --backends wgpu,cpu \
      --batches 1,16,256,4096,16384,65536 --threads 16 --seconds 1 --torch-device cuda --out "$out/gpu"
  } 2>&1 | tee "$out/log.txt"
  if grep -q '^== .* FAILED' "$out/log.txt"; then
    grep '^== .* FAILED' "$out/log.txt"
    return 1
  fi
  echo "== every step passed"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: tools/bench/device.sh prepare|run" >&2; exit 2 ;;
esac
