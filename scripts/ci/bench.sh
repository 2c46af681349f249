#!/usr/bin/env bash
# Benchmarks (release build); prints figures, asserts nothing.
source "$(dirname "$0")/env.sh"

step "direct messages: InferMesh vs bare rust-libp2p request-response"
cargo bench --locked --workspace --bench direct
