//! Benchmarks in the browser, the same measurements as the native benches
//! in headless Chromium: state ingestion (decode, batch-verify and merge
//! signed entries, in batches of 256 as reconciliation fetches them; the
//! `state` bench) and the end-to-end handshake per side (the `kem` bench).
//! Print figures; ignored by the test suite and run by
//! `scripts/ci/bench.sh`:
//!
//! `cargo test --profile wasm -p infermesh-core --target wasm32-unknown-unknown
//!  --test wasm_bench -- --include-ignored --nocapture` (the profile the npm
//! package is built with).
#![cfg(target_arch = "wasm32")]

use infermesh_core::{Identity, state::Entry};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

#[path = "../benches/shared/handshake.rs"]
mod handshake;
#[path = "../benches/shared/ingest.rs"]
mod ingest;

wasm_bindgen_test_configure!(run_in_browser);

const N: usize = 20_000;

#[wasm_bindgen_test]
#[ignore = "a benchmark: scripts/ci/bench.sh runs it"]
fn wasm_ingest_rate() {
    let (entries, sign_rate) = ingest::signed_entries(&Identity::from_seed([9; 32]), N);
    let encoded: Vec<Vec<u8>> = entries.iter().map(Entry::encode).collect();
    let rate = ingest::ingest_rate(&encoded, 256);
    console_log!("wasm in Chromium, {N} entries, median of 3");
    console_log!("  entries signed (entries/s)                              {sign_rate:>7.0}");
    console_log!("  ingested in batches of 256: decode + verify + merge (entries/s) {rate:>7.0}");
    console_log!("  target >= 10000");
}

#[wasm_bindgen_test]
#[ignore = "a benchmark: scripts/ci/bench.sh runs it"]
fn wasm_handshake_cost() {
    use infermesh_core::crypto::Level;
    console_log!(
        "wasm in Chromium: end-to-end session handshake per side, signatures included, median of 9 x 50 (us)"
    );
    for level in [Level::L1, Level::L3, Level::L5] {
        let (initiate, accept) = handshake::handshake_us(level, 9, 50);
        let (first, later) = handshake::seal_overhead(level, 1024);
        console_log!(
            "  level {}  initiator {initiate:>7.1}  responder {accept:>7.1}  (sealing adds {first} B to a first message, {later} B after)",
            level.number()
        );
    }
    console_log!("  target: level 3 <= 300 us per side");
}
