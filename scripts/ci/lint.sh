#!/usr/bin/env bash
# Formatting and lints, native and wasm32.
source "$(dirname "$0")/env.sh"

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

bash "$(dirname "$0")/check-patches.sh"

step "clippy (native, all targets)"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "clippy (core with its fuzz entry points and seed corpus example)"
cargo clippy --locked -p infermesh-core --features fuzz --all-targets -- -D warnings
step "clippy (the node with its test-only lying worker, feature liar)"
cargo clippy --locked -p infermesh-node --features liar --all-targets -- -D warnings

step "core compiles for wasm32-unknown-unknown"
cargo check --locked -p infermesh-core --target wasm32-unknown-unknown

step "clippy (wasm32: core, its browser cryptography, the binding and the compute module, with their tests)"
cargo clippy --locked -p infermesh-core -p infermesh-wasm-crypto -p infermesh-wasm -p infermesh-compute-web --target wasm32-unknown-unknown --lib --tests -- -D warnings
