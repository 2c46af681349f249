//! ChaCha20-Poly1305 (RFC 8439) in the browser: RustCrypto's
//! `chacha20poly1305`, through `infermesh-wasm-crypto`, which the
//! size-optimised browser build still compiles for speed (the native build
//! uses ring's, `aead_native.rs`).

/// A ChaCha20-Poly1305 key.
pub(crate) struct ChaChaPoly(infermesh_wasm_crypto::ChaChaPoly);

impl ChaChaPoly {
    /// The cipher of a 32-byte key.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(infermesh_wasm_crypto::ChaChaPoly::new(key))
    }

    /// Turns `buf` from plaintext into ciphertext then tag, sealed under
    /// `nonce` and authenticating `aad` with it, without a copy. `false`
    /// only past the cipher's length limit (256 GiB).
    pub(crate) fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> bool {
        self.0.seal_in_place(nonce, aad, buf)
    }

    /// The plaintext of `sealed`, or `None` if it (or `aad`) was altered
    /// or sealed under another key or nonce.
    pub(crate) fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.open(nonce, aad, sealed)
    }
}
