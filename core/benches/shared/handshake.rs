//! The handshake measurement shared by the native `kem` bench and the wasm
//! one (`tests/wasm_bench.rs`): the CPU time of each side of a session
//! handshake, signatures included (the initiator encapsulates to the
//! peer's verified KEM key and signs; the responder verifies the signature
//! and decapsulates), and the bytes sealing adds to an envelope.

use infermesh_core::{
    Envelope, Identity, MsgType,
    crypto::{E2e, KemSecret, Level, Session, SignedKemKey},
};
use web_time::Instant;

/// Median microseconds per call of `f`, over `rounds` rounds of `per_round`
/// after one round of warm-up (in wasm, the engine's optimising tier).
pub fn time_us(rounds: usize, per_round: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..per_round {
        f();
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / per_round as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

/// Microseconds per handshake for the initiator and the responder at `level`.
pub fn handshake_us(level: Level, rounds: usize, per_round: usize) -> (f64, f64) {
    let (alice, bob) = (Identity::from_seed([7; 32]), Identity::from_seed([8; 32]));
    let bob_key = SignedKemKey::new(&bob, level).verify(&bob.peer_id()).unwrap();
    let bob_kem = KemSecret::derive(&bob, level);
    let (_, handshake) = Session::initiate(&alice, &bob.peer_id(), &bob_key, 0).unwrap();
    let initiate = time_us(rounds, per_round, || {
        std::hint::black_box(Session::initiate(&alice, &bob.peer_id(), &bob_key, 0).unwrap());
    });
    let accept = time_us(rounds, per_round, || {
        std::hint::black_box(Session::accept(&bob, &bob_kem, &alice.peer_id(), &handshake).unwrap());
    });
    (initiate, accept)
}

/// Bytes sealing adds to an encoded envelope with a `payload`-byte
/// payload at `level`: the first message of a session (with the
/// handshake) and the ones after it.
pub fn seal_overhead(level: Level, payload: usize) -> (usize, usize) {
    let (alice, bob) = (Identity::from_seed([7; 32]), Identity::from_seed([8; 32]));
    let mut e2e = E2e::new(alice.clone(), level);
    e2e.learn_key(bob.peer_id(), SignedKemKey::new(&bob, level)).unwrap();
    let plain = || {
        let mut env =
            Envelope::new(MsgType::Thought, bob.peer_id().to_base58(), 5, 60).with_payload(vec![7; payload]);
        env.from = alice.peer_id().to_base58();
        env.timestamp = 1_700_000_000_000;
        env
    };
    let mut first = plain();
    e2e.seal(&bob.peer_id(), &mut first).unwrap();
    e2e.confirm(&bob.peer_id(), 0);
    let mut later = plain();
    e2e.seal(&bob.peer_id(), &mut later).unwrap();
    let base = plain().encoded_len();
    (first.encoded_len() - base, later.encoded_len() - base)
}
