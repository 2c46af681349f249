//! Ingest benchmark in the browser: the same measurement as the native
//! `state` bench (decode, batch-verify and merge signed entries, in batches
//! of 256 as reconciliation fetches them) in headless Chromium. Prints the
//! figure; ignored by the test suite and run by `scripts/ci/bench.sh`:
//!
//! `cargo test --profile wasm -p infermesh-core --target wasm32-unknown-unknown
//!  --test wasm_ingest -- --include-ignored --nocapture` (the profile the npm
//! package is built with).
#![cfg(target_arch = "wasm32")]

use infermesh_core::{
    Identity,
    state::{Entry, Hlc, Replica},
};
use serde_json::json;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};
use web_time::Instant;

wasm_bindgen_test_configure!(run_in_browser);

const NOW: u64 = 1_700_000_000_000;
const N: usize = 20_000;

#[wasm_bindgen_test]
#[ignore = "a benchmark: scripts/ci/bench.sh runs it"]
fn wasm_ingest_rate() {
    let owner = Identity::from_seed([9; 32]);
    let ns = owner.peer_id().to_base58();
    let start = Instant::now();
    let encoded: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let value = json!({ "n": i, "name": format!("user-{i}"), "active": i % 2 == 0 });
            let stamp = Hlc::from_millis(NOW - 1_000_000) + i as u64;
            Entry::sign(&owner, &ns, &format!("key-{i:06}"), Some(&value), stamp).unwrap().encode()
        })
        .collect();
    let sign_rate = N as f64 / start.elapsed().as_secs_f64();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut replica = Replica::new();
        let start = Instant::now();
        for chunk in encoded.chunks(256) {
            let decoded = chunk.iter().map(|b| Entry::decode(b).unwrap()).collect();
            let outcomes = replica.apply_all(decoded, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
            assert!(outcomes.iter().all(|o| o.result.is_ok()));
        }
        rates.push(N as f64 / start.elapsed().as_secs_f64());
        assert_eq!(replica.len(&ns), N);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    console_log!("wasm in Chromium, {N} entries, median of 3");
    console_log!("  entries signed (entries/s)                              {sign_rate:>7.0}");
    console_log!("  ingested in batches of 256: decode + verify + merge (entries/s) {:>7.0}", rates[1]);
    console_log!("  target >= 10000");
}
