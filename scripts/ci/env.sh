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
# The embeddings model's files (scripts/ci/models.sh puts them there) and a
# Python with numpy for the reference embeddings, both outside the checkout.
export INFERMESH_MODEL_DIR="${INFERMESH_MODEL_DIR:-$HOME/.cache/infermesh-models/all-MiniLM-L6-v2}"
MODEL_DIR="$INFERMESH_MODEL_DIR"
PY_ENV="${INFERMESH_PY_ENV:-$HOME/.cache/infermesh-py}"
export INFERMESH_PYTHON="${INFERMESH_PYTHON:-$PY_ENV/bin/python}"
