//! Ingest benchmark in the browser: the same measurement as the native
//! `state` bench (decode, batch-verify and merge signed entries, in batches
//! of 256 as reconciliation fetches them) in headless Chromium. Prints the
//! figure; ignored by the test suite and run by `scripts/ci/bench.sh`:
//!
//! `cargo test --profile wasm -p infermesh-core --target wasm32-unknown-unknown
//!  --test wasm_ingest -- --include-ignored --nocapture` (the profile the npm
//! package is built with).
#![cfg(target_arch = "wasm32")]

use infermesh_core::{Identity, state::Entry};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

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
