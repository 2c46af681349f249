#!/usr/bin/env bash
# Builds the npm package `infermesh` into wasm/pkg (ES module for
# `--target web`, .d.ts types, package.json) and copies it to www/pkg for
# the demo page. The compute module (the embeddings model for Web Workers)
# goes to wasm/pkg/compute: pages load it only when they offer compute.
source "$(dirname "$0")/env.sh"

step "wasm32 build (profile wasm: size-optimised)"
cargo build --locked -p infermesh-wasm --target wasm32-unknown-unknown --profile wasm

step "wasm-bindgen"
WANT=$(wasm_bindgen_version)
HAVE=$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2 || true)
if [ "$HAVE" != "$WANT" ]; then
  echo "wasm-bindgen-cli $WANT is needed (found: ${HAVE:-none}); run scripts/ci/setup.sh"
  exit 1
fi
rm -rf wasm/pkg
wasm-bindgen --target web --out-dir wasm/pkg --out-name infermesh \
  "$TARGET_DIR/wasm32-unknown-unknown/wasm/infermesh_wasm.wasm"

step "wasm-opt -Oz (npm binaryen)"
# Debian's binaryen is too old for this module; the npm one is pinned in package.json.
node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  wasm/pkg/infermesh_bg.wasm -o wasm/pkg/infermesh_bg.wasm

step "compute module (profile wasm-compute: speed, wasm SIMD)"
# Its own target directory: SIMD flags for this module alone, without
# rebuilding the rest of the workspace's wasm32 artefacts.
COMPUTE_TARGET="$TARGET_DIR/compute-web"
RUSTFLAGS="-C target-feature=+simd128" cargo build --locked -p infermesh-compute-web \
  --target wasm32-unknown-unknown --profile wasm-compute --target-dir "$COMPUTE_TARGET"
wasm-bindgen --target web --out-dir wasm/pkg/compute --out-name infermesh_compute_web \
  "$COMPUTE_TARGET/wasm32-unknown-unknown/wasm-compute/infermesh_compute_web.wasm"
# No wasm-opt pass here: rustc's opt-level 3 with LTO leaves it little to
# do (measured: -O3 takes minutes for 7% less gzip and no speed-up; -O1
# made the model a third slower).
cp wasm/js/compute-worker.js wasm/pkg/compute/worker.js

step "package.json"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
cat > wasm/pkg/package.json <<JSON
{
  "name": "infermesh",
  "version": "$VERSION",
  "description": "InferMesh in the browser: peer-to-peer messaging over libp2p (WebSocket, WebRTC-direct, relay circuits)",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./infermesh.js",
  "module": "./infermesh.js",
  "types": "./infermesh.d.ts",
  "exports": {
    ".": {
      "types": "./infermesh.d.ts",
      "default": "./infermesh.js"
    },
    "./infermesh_bg.wasm": "./infermesh_bg.wasm",
    "./compute/*": "./compute/*"
  },
  "files": ["infermesh.js", "infermesh.d.ts", "infermesh_bg.wasm", "infermesh_bg.wasm.d.ts", "snippets/", "compute/"],
  "sideEffects": false
}
JSON
cp README.md wasm/pkg/README.md 2>/dev/null || true
rm -rf www/pkg && cp -r wasm/pkg www/pkg
size() { printf '%-44s %9d bytes, %9d gzipped\n' "$1" "$(stat -c %s "$1")" "$(gzip -9c "$1" | wc -c)"; }
size wasm/pkg/infermesh_bg.wasm
size wasm/pkg/compute/infermesh_compute_web_bg.wasm
