#!/usr/bin/env bash
# Fuzzes every decoder of peer input (the targets in fuzz/, entry points in
# core/src/fuzz.rs) for FUZZ_SECONDS each (default 15: CI's short run;
# `make fuzz` runs 600). The corpus starts from real encodings (the
# fuzz_seeds example) and grows in ~/.cache/infermesh-fuzz across runs.
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/ci/env.sh

seconds="${FUZZ_SECONDS:-15}"
corpus="${FUZZ_CORPUS:-$HOME/.cache/infermesh-fuzz/corpus}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/infermesh-target}"
fuzz_target_dir="$CARGO_TARGET_DIR/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; run scripts/ci/setup.sh (make setup) first" >&2
  exit 1
fi

echo "== fuzz seeds (real encodings of each kind of peer input)"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
cargo run -q -p infermesh-core --features fuzz --example fuzz_seeds -- "$seeds"

# cargo fuzz wants nightly for its -Z flags; without a sanitizer (our code
# has no unsafe: panics, hangs and runaway memory are what we look for)
# RUSTC_BOOTSTRAP lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
echo "== building the fuzz targets"
(cd fuzz && CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz build -s none)

targets=$(cd fuzz && cargo fuzz list)
log="$(mktemp)"
for target in $targets; do
  mkdir -p "$corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  status=0
  (cd fuzz && CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz run -s none "$target" "$corpus/$target" "$seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1) > "$log" 2>&1 || status=$?
  grep -E "^Done|^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE" "$log" | tail -3 || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
rm -f "$log"
echo "== fuzz: every target ran ${seconds}s clean"
