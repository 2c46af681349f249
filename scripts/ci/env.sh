# Sourced by the other scripts: common settings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Incremental caches grow by gigabytes per run in a long-lived target
# directory and gain little for whole-workspace builds.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step() { printf '\n==> %s\n' "$*"; }
# The wasm-bindgen version Cargo.lock pins (wasm-bindgen-cli must match it).
wasm_bindgen_version() { grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p'; }
