#!/usr/bin/env bash
# The browser side for real: the core's unit tests in headless Chromium
# (wasm-bindgen-test), then the npm package in Chromium pages talking
# through the real `infermesh` binary on loopback.
source "$(dirname "$0")/env.sh"

step "core unit tests in headless Chromium"
CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}" \
  cargo test --locked -p infermesh-core --lib --target wasm32-unknown-unknown

bash scripts/ci/build-wasm.sh

step "build the infermesh binary"
# The same build graph as `cargo test` (see test-interop.sh).
cargo test --locked --workspace --no-run --quiet

step "browser tests (Chromium + playwright-core)"
rm -rf test-results
node --test --test-concurrency=1 --test-reporter=spec www/tests/
