//! The ingest measurement shared by the native `state` bench and the wasm
//! one (`tests/wasm_bench.rs`): signed entries of one owner, then decode +
//! batch-verify + merge into a fresh replica, as reconciliation fetches them.

use infermesh_core::{
    Identity,
    state::{Entry, Hlc, Replica},
};
use serde_json::json;
use web_time::Instant;

/// The benches' "now" (ms since the epoch).
pub const NOW: u64 = 1_700_000_000_000;

/// `n` entries of `owner`'s namespace, ~60 bytes of JSON each, in
/// timestamp order; and the signing rate (entries/s).
pub fn signed_entries(owner: &Identity, n: usize) -> (Vec<Entry>, f64) {
    let ns = owner.peer_id().to_base58();
    let start = Instant::now();
    let entries = (0..n)
        .map(|i| {
            let value = json!({ "n": i, "name": format!("user-{i}"), "active": i % 2 == 0 });
            let stamp = Hlc::from_millis(NOW - 1_000_000) + i as u64;
            Entry::sign(owner, &ns, &format!("key-{i:06}"), Some(&value), stamp).unwrap()
        })
        .collect();
    (entries, n as f64 / start.elapsed().as_secs_f64())
}

/// Entries per second ingested from `encoded` in batches of `batch`:
/// the median of three rounds, each into a fresh replica.
pub fn ingest_rate(encoded: &[Vec<u8>], batch: usize) -> f64 {
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let mut replica = Replica::new();
            let start = Instant::now();
            for chunk in encoded.chunks(batch) {
                let decoded = chunk.iter().map(|b| Entry::decode(b).unwrap()).collect();
                let outcomes = replica.apply_all(decoded, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
                assert!(outcomes.iter().all(|o| o.result.is_ok()));
            }
            assert_eq!(replica.entry_count(), encoded.len());
            encoded.len() as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rates[1]
}
