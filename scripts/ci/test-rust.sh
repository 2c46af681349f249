#!/usr/bin/env bash
# Unit tests, in-process multi-node tests (memory transport) and tests that
# run the real `infermesh` binary as processes on loopback.
source "$(dirname "$0")/env.sh"

step "cargo test --workspace"
cargo test --locked --workspace

step "fuzz entry points: every seed of the corpus runs through its target"
cargo test --locked -p infermesh-core --features fuzz --lib fuzz::

step "spot checks with a lying worker (build feature liar): caught, excluded, unpaid"
cargo test --locked -p infermesh-node --features liar --test liar
