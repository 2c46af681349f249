#!/usr/bin/env bash
# Benchmarks (release builds); prints figures, asserts nothing.
source "$(dirname "$0")/env.sh"

step "direct messages: InferMesh vs bare rust-libp2p request-response"
cargo bench --locked --workspace --bench direct

step "hybrid post-quantum KEM (X-Wing and levels 1/5): cost per handshake side"
cargo bench --locked --workspace --bench kem

step "replicated state: ingestion and reconciliation"
cargo bench --locked --workspace --bench state

step "in wasm, in headless Chromium (the npm package's build profile): state ingestion, e2e handshake"
CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}" \
  cargo test --locked --profile wasm -p infermesh-core --target wasm32-unknown-unknown \
  --test wasm_bench -- --include-ignored --nocapture

step "replicated state: 20 nodes x 1000 writes converging"
cargo bench --locked --workspace --bench converge

bash scripts/ci/bench-compute.sh

step "load and hostile peers against a release node (1,000 msg/s: 180 s of warm-up, 60 s measured; ten attackers for 30 s)"
cargo bench --locked -p infermesh-node --bench load

step "browser: the npm package in Chromium against a release node"
bash scripts/ci/build-wasm.sh
cargo build --locked --release -p infermesh-node
INFERMESH_BIN="$TARGET_DIR/release/infermesh" node scripts/bench/browser.mjs
