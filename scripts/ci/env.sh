# Sourced by the other scripts: common settings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
step() { printf '\n==> %s\n' "$*"; }
# The wasm-bindgen version Cargo.lock pins (wasm-bindgen-cli must match it).
wasm_bindgen_version() { grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p'; }
