#!/usr/bin/env bash
# Installs what the build and tests need; safe to run again (does nothing
# that is already done).
source "$(dirname "$0")/env.sh"

step "toolchain components and the wasm32 target"
if command -v rustup >/dev/null; then
  installed_components=$(rustup component list --installed)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed_components" || rustup component add "$c"
  done
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
fi

step "npm packages (js-libp2p interop peer, playwright-core, wasm-opt)"
command -v node >/dev/null || { echo "Node.js is required (node and npm on PATH)"; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.package-lock.json.src 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.package-lock.json.src
else
  echo "node_modules up to date"
fi

step "fetch crates for every target"
cargo fetch --locked

step "Chromium and chromedriver (browser tests)"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "found $(chromium --version 2>/dev/null | head -1)"
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi

step "iproute2 (network namespaces for the fault harness)"
if command -v ip >/dev/null; then
  echo "found $(ip -V)"
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2
fi

step "cargo-fuzz (fuzz targets)"
if cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  echo "found $(cargo fuzz --version)"
else
  cargo install --locked --version 0.13.2 cargo-fuzz
fi

step "wasm-bindgen-cli at the version in Cargo.lock"
WANT=$(wasm_bindgen_version)
HAVE=$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2 || true)
if [ "$HAVE" = "$WANT" ] && command -v wasm-bindgen-test-runner >/dev/null; then
  echo "wasm-bindgen $HAVE"
else
  cargo install --locked wasm-bindgen-cli --version "$WANT"
fi

bash "$(dirname "$0")/models.sh"
