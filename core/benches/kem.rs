//! Hybrid KEM cost per side of a handshake, at each level: the initiator
//! encapsulates to the peer's public key, the responder decapsulates.
//! Prints medians; asserts nothing.
//!
//! `cargo bench -p infermesh-core --bench kem` (or `make bench`).

use infermesh_core::{
    Envelope, Identity, MsgType,
    crypto::{E2e, KemPublicKey, KemSecret, Level, Session, SignedKemKey},
};

#[path = "shared/handshake.rs"]
mod handshake;

const ROUNDS: usize = 9;
const PER_ROUND: usize = 200;

fn time_us(f: impl FnMut()) -> f64 {
    handshake::time_us(ROUNDS, PER_ROUND, f)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "codec") {
        return codec();
    }
    let identity = Identity::from_seed([7; 32]);
    let bytes_of = |level: Level| KemSecret::derive(&identity, level).public_key().to_bytes();
    println!("hybrid KEM, median of {ROUNDS} rounds of {PER_ROUND} (microseconds per operation)");
    println!(
        "{:<6} {:>10} {:>12} {:>12} {:>14} {:>10} {:>8}",
        "level", "derive", "encapsulate", "decapsulate", "parse pk", "pk bytes", "ct bytes"
    );
    for level in [Level::L1, Level::L3, Level::L5] {
        let secret = KemSecret::derive(&identity, level);
        let public = secret.public_key();
        let (ct, _) = public.encapsulate().unwrap();
        let encoded = bytes_of(level);
        let derive = time_us(|| {
            std::hint::black_box(KemSecret::derive(&identity, level).public_key());
        });
        let encapsulate = time_us(|| {
            std::hint::black_box(public.encapsulate().unwrap());
        });
        let decapsulate = time_us(|| {
            std::hint::black_box(secret.decapsulate(&ct).unwrap());
        });
        let parse = time_us(|| {
            std::hint::black_box(KemPublicKey::from_bytes(level, &encoded).unwrap());
        });
        println!(
            "{:<6} {:>10.1} {:>12.1} {:>12.1} {:>14.1} {:>10} {:>8}",
            level.number(),
            derive,
            encapsulate,
            decapsulate,
            parse,
            level.public_key_len(),
            level.ciphertext_len()
        );
    }
    // The two halves of level 3 on their own.
    let dh_secret = x25519_dalek::StaticSecret::from([5; 32]);
    let dh_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([6; 32]));
    let x25519 = time_us(|| {
        std::hint::black_box(dh_secret.diffie_hellman(&dh_public));
    });
    // ML-KEM-768: libcrux (what level 3 runs on) and RustCrypto's ml-kem.
    let (dk, ek) = {
        use ml_kem::FromSeed as _;
        ml_kem::MlKem768::from_seed(&[3u8; 64].into())
    };
    let rc_encaps = time_us(|| {
        std::hint::black_box(ek.encapsulate_deterministic(&[4u8; 32].into()));
    });
    let (ct, _) = ek.encapsulate_deterministic(&[4u8; 32].into());
    let rc_decaps = time_us(|| {
        use ml_kem::Decapsulate as _;
        std::hint::black_box(dk.decapsulate(&ct));
    });
    use libcrux_ml_kem::mlkem768 as crux;
    let pair = crux::generate_key_pair([3u8; 64]);
    let encaps = time_us(|| {
        std::hint::black_box(crux::encapsulate(pair.public_key(), [4u8; 32]));
    });
    let (ct, _) = crux::encapsulate(pair.public_key(), [4u8; 32]);
    let decaps = time_us(|| {
        std::hint::black_box(crux::decapsulate(pair.private_key(), &ct));
    });
    println!(
        "of which: X25519 DH {x25519:.1}; ML-KEM-768 (libcrux) encaps {encaps:.1}, decaps {decaps:.1} \
         (ml-kem crate, same run: {rc_encaps:.1}, {rc_decaps:.1})"
    );
    // ChaCha20-Poly1305 on 64 KiB: ring (what sessions use natively) and
    // RustCrypto (what they use in wasm), same run.
    {
        use chacha20poly1305::{AeadInPlace as _, ChaCha20Poly1305, KeyInit as _};
        let mut buf = vec![7u8; 64 * 1024];
        let rustcrypto = ChaCha20Poly1305::new(&[1u8; 32].into());
        let theirs = time_us(|| {
            std::hint::black_box(
                rustcrypto.encrypt_in_place_detached(&[0u8; 12].into(), b"", &mut buf).unwrap(),
            );
        });
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[1u8; 32]).unwrap();
        let ring_key = ring::aead::LessSafeKey::new(key);
        let ours = time_us(|| {
            let nonce = ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
            let tag = ring_key.seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), &mut buf);
            let _ = std::hint::black_box(tag.unwrap());
        });
        println!(
            "ChaCha20-Poly1305, 64 KiB: ring {ours:.1} us, RustCrypto {theirs:.1} us (same run, {:.2}x)",
            theirs / ours
        );
    }
    // The reference implementation of level 3 (the `x-wing` crate), same run.
    {
        use x_wing::{Decapsulate as _, TryKeyInit as _};
        let theirs = x_wing::DecapsulationKey::from([3u8; 32]);
        let ours = KemSecret::from_seed(Level::L3, [3u8; 32]);
        let their_pk = x_wing::EncapsulationKey::new_from_slice(&ours.public_key().to_bytes()).unwrap();
        let (ct, _) = their_pk.encapsulate_deterministic(&[4u8; 64].into());
        let their_encaps = time_us(|| {
            std::hint::black_box(their_pk.encapsulate_deterministic(&[4u8; 64].into()));
        });
        let their_decaps = time_us(|| {
            std::hint::black_box(theirs.decapsulate(&ct));
        });
        let public = ours.public_key();
        let our_encaps = time_us(|| {
            std::hint::black_box(public.encapsulate_with(&[4u8; 64]));
        });
        let our_ct = ct.to_vec();
        let our_decaps = time_us(|| {
            std::hint::black_box(ours.decapsulate(&our_ct).unwrap());
        });
        println!(
            "level 3 vs the x-wing crate (reference), same run: encapsulate {our_encaps:.1} vs {their_encaps:.1} \
             ({:.2}x), decapsulate {our_decaps:.1} vs {their_decaps:.1} ({:.2}x)",
            their_encaps / our_encaps,
            their_decaps / our_decaps
        );
    }
    println!(
        "handshake per side = encapsulate (initiator) or decapsulate (responder), the peer's key parsed once"
    );

    // The whole handshake per side, signatures included, and what sealing
    // adds to an envelope.
    println!("\nsession handshake per side, signatures included (us), and bytes sealing adds to an envelope");
    println!(
        "{:<6} {:>10} {:>10} {:>22} {:>14}",
        "level", "initiator", "responder", "first message (+hs)", "later messages"
    );
    for level in [Level::L1, Level::L3, Level::L5] {
        let (initiate, accept) = handshake::handshake_us(level, ROUNDS, PER_ROUND);
        let (first, later) = handshake::seal_overhead(level, 1024);
        println!("{:<6} {:>10.1} {:>10.1} {:>22} {:>14}", level.number(), initiate, accept, first, later);
    }
    println!("target: level 3, each side <= 200 us natively (<= 300 us in wasm: tests/wasm_bench.rs)");

    // Messages in an established session: ChaCha20-Poly1305 with the
    // replay window, and what a sealed message adds on the wire (CBOR
    // framing of epoch, counter and ciphertext, tag included).
    let bob = Identity::from_seed([8; 32]);
    let bob_key = SignedKemKey::new(&bob, Level::L3).verify(&bob.peer_id()).unwrap();
    let (mut a, handshake) = Session::initiate(&identity, &bob.peer_id(), &bob_key, 0).unwrap();
    let bob_kem = KemSecret::derive(&bob, Level::L3);
    let mut b = Session::accept(&bob, &bob_kem, &identity.peer_id(), &handshake).unwrap();
    println!("\nsession messages (level 3 keys), median of {ROUNDS} rounds of {PER_ROUND}");
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>14}",
        "payload", "seal us", "open us", "MB/s (both)", "overhead B"
    );
    for size in [1024usize, 64 * 1024] {
        let plaintext = vec![7u8; size];
        // Each sealed message is dropped at once (memory is reused, as in
        // a running node); the ones to open (a warm-up round and the
        // timed ones) are made beforehand.
        let seal = time_us(|| {
            std::hint::black_box(a.seal(&plaintext, b"").unwrap());
        });
        let sealed: Vec<_> =
            (0..PER_ROUND * (ROUNDS + 1)).map(|_| a.seal(&plaintext, b"").unwrap()).collect();
        let mut queue = sealed.into_iter();
        let open = time_us(|| {
            std::hint::black_box(b.open(&queue.next().unwrap(), b"").unwrap());
        });
        let mut encoded = Vec::new();
        ciborium::into_writer(&a.seal(&plaintext, b"").unwrap(), &mut encoded).unwrap();
        println!(
            "{:<8} {:>10.1} {:>10.1} {:>12.0} {:>14}",
            if size == 1024 { "1 KiB" } else { "64 KiB" },
            seal,
            open,
            size as f64 / (seal + open),
            encoded.len() - size
        );
    }
    codec();
}

/// A direct message's whole trip through the codec, without the network:
/// encoded by the sender and decoded by the receiver (what every direct
/// message costs), and with end-to-end encryption added (sealed before
/// encoding, opened after decoding) in an established session. Alone with
/// `cargo bench -p infermesh-core --bench kem -- codec`.
fn codec() {
    let (alice, bob) = (Identity::from_seed([7; 32]), Identity::from_seed([8; 32]));
    let mut sender = E2e::new(alice.clone(), Level::L3);
    let mut receiver = E2e::new(bob.clone(), Level::L3);
    sender.learn_key(bob.peer_id(), SignedKemKey::new(&bob, Level::L3)).unwrap();
    println!(
        "\ndirect message through the codec (level 3, session established), median of {ROUNDS} rounds of {PER_ROUND}"
    );
    println!("{:<8} {:>10} {:>10} {:>12}", "payload", "plain us", "e2e us", "e2e adds us");
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
    for size in [1024usize, 64 * 1024] {
        let mut env = Envelope::new(MsgType::Thought, bob_id.to_base58(), 5, 60).with_payload(vec![7; size]);
        env.from = alice_id.to_base58();
        let (first, sealing) = sender.sealed(&bob_id, &env).unwrap();
        receiver.open(&alice_id, &mut Envelope::decode(&first.encode()).unwrap()).unwrap();
        sender.confirm(&bob_id, sealing.session);
        let plain = time_us(|| {
            std::hint::black_box(Envelope::decode(&env.encode()).unwrap());
        });
        let e2e = time_us(|| {
            let (sealed, _) = sender.sealed(&bob_id, &env).unwrap();
            let mut received = Envelope::decode(&sealed.encode()).unwrap();
            receiver.open(&alice_id, &mut received).unwrap();
            std::hint::black_box(received);
        });
        println!(
            "{:<8} {:>10.2} {:>10.2} {:>12.2}",
            if size == 1024 { "1 KiB" } else { "64 KiB" },
            plain,
            e2e,
            e2e - plain
        );
    }
}
