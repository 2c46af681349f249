//! ChaCha20-Poly1305 (RFC 8439) in the browser: RustCrypto's
//! `chacha20poly1305` (the native build uses ring's, `aead_native.rs`).

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _,
    aead::{Aead as _, AeadInPlace as _, Payload},
};

/// A ChaCha20-Poly1305 key.
pub(crate) struct ChaChaPoly(ChaCha20Poly1305);

impl ChaChaPoly {
    /// The cipher of a 32-byte key.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(key.into()))
    }

    /// Turns `buf` from plaintext into ciphertext then tag, sealed under
    /// `nonce` and authenticating `aad` with it, without a copy. `false`
    /// only past the cipher's length limit (256 GiB).
    pub(crate) fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> bool {
        self.0.encrypt_in_place(&nonce.into(), aad, buf).is_ok()
    }

    /// The plaintext of `sealed`, or `None` if it (or `aad`) was altered
    /// or sealed under another key or nonce.
    pub(crate) fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(&nonce.into(), Payload { msg: sealed, aad }).ok()
    }
}
