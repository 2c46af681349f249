#!/usr/bin/env bash
# A js-libp2p node in Node.js dials the real `infermesh` binary: ping and
# gossip both ways.
source "$(dirname "$0")/env.sh"

step "build the infermesh binary"
# The binary `cargo test` builds (same features as the test build: building
# it with `cargo build --bins` alone would compile a second crate graph).
cargo test --locked --workspace --no-run --quiet
step "interop with js-libp2p"
node --import ./interop/js-libp2p/polyfill.mjs interop/js-libp2p/interop.mjs "$TARGET_DIR/debug/infermesh"
