#!/usr/bin/env bash
# Fuzzes the model loader, the C entry points and the checkpoint reader: each target for FUZZ_SECONDS (default 30) from the committed corpus
# in fuzz/corpus/<target>/. New inputs go to fuzz/target/corpus/<target>/, so a run leaves the
# repository clean; a crash fails the script and leaves its input in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly for its sanitizer flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them (no nightly download). Installs cargo-fuzz if it is missing (about 2 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

cd fuzz
for target in safetensors c_abi pickle checkpoint; do
    mkdir -p "target/corpus/$target"
    echo "== fuzz $target for ${seconds}s"
    # -rss_limit_mb: the reader's memory is bounded by design; blowing past this is a bug.
    status=0
    cargo fuzz run -O "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=16384 -timeout=10 \
        -print_final_stats=1 >"target/$target.log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|SUMMARY|==[0-9]+== ERROR)|panicked' "target/$target.log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "target/$target.log"
        echo "fuzz $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done
