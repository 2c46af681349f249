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
    handshake_parts();
}

/// What a side's handshake is made of, in wasm: the hybrid KEM (and its
/// X25519 half on its own) and the identity signature.
fn handshake_parts() {
    use infermesh_core::crypto::{KemSecret, Level};
    let identity = Identity::from_seed([7; 32]);
    let secret = KemSecret::derive(&identity, Level::L3);
    let public = secret.public_key();
    let (ct, _) = public.encapsulate().unwrap();
    let us = |f: &mut dyn FnMut()| handshake::time_us(9, 50, f);
    let encapsulate = us(&mut || {
        std::hint::black_box(public.encapsulate().unwrap());
    });
    let decapsulate = us(&mut || {
        std::hint::black_box(secret.decapsulate(&ct).unwrap());
    });
    let dh_secret = x25519_dalek::StaticSecret::from([5; 32]);
    let dh_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([6; 32]));
    let x25519 = us(&mut || {
        std::hint::black_box(dh_secret.diffie_hellman(&dh_public));
    });
    // Ed25519 over a handshake's signed statement (label and transcript
    // hash), and over a whole level-3 transcript for comparison.
    let public_identity = identity.keypair().public();
    let signature_cost = |len: usize| {
        let message = vec![1u8; len];
        let signature = identity.keypair().sign(&message).unwrap();
        let sign = us(&mut || {
            std::hint::black_box(identity.keypair().sign(&message).unwrap());
        });
        let verify = us(&mut || {
            assert!(std::hint::black_box(public_identity.verify(&message, &signature)));
        });
        (sign, verify)
    };
    let (sign, verify) = signature_cost(58);
    let (sign_long, verify_long) = signature_cost(2_400);
    console_log!(
        "  of which (level 3): encapsulate {encapsulate:.1}, decapsulate {decapsulate:.1} \
         (X25519 DH alone {x25519:.1}); Ed25519 over 58 B sign {sign:.1}, verify {verify:.1} \
         (over 2,400 B: {sign_long:.1}, {verify_long:.1})"
    );
}
