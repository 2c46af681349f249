#!/usr/bin/env bash
# Formatting and lints, native and wasm32.
source "$(dirname "$0")/env.sh"

step "cargo fmt --check"
cargo fmt --all --check

bash "$(dirname "$0")/check-patches.sh"

step "clippy (native, all targets)"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "core compiles for wasm32-unknown-unknown"
cargo check --locked -p infermesh-core --target wasm32-unknown-unknown

step "clippy (wasm32: core, its browser cryptography and the binding, with their tests)"
cargo clippy --locked -p infermesh-core -p infermesh-wasm-crypto -p infermesh-wasm --target wasm32-unknown-unknown --lib --tests -- -D warnings
