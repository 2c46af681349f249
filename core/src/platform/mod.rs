//! Everything that differs between the two homes of the core, behind one
//! set of names: native (tokio, TCP/QUIC/WebSocket/WebRTC-direct, mDNS)
//! and the browser (wasm-bindgen executor, WebSocket and WebRTC-direct
//! from `web-sys`). The rest of the crate is target-free.

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::*;

/// ML-KEM, from the implementation that suits the platform.
#[cfg(not(target_arch = "wasm32"))]
#[path = "mlkem_native.rs"]
pub(crate) mod mlkem;
#[cfg(target_arch = "wasm32")]
#[path = "mlkem_web.rs"]
pub(crate) mod mlkem;

/// ChaCha20-Poly1305, from the implementation that suits the platform.
#[cfg(not(target_arch = "wasm32"))]
#[path = "aead_native.rs"]
pub(crate) mod aead;
#[cfg(target_arch = "wasm32")]
#[path = "aead_web.rs"]
pub(crate) mod aead;

impl aead::ChaChaPoly {
    /// `plaintext` sealed under `nonce`, authenticating `aad` with it:
    /// ciphertext then tag. `None` only past the cipher's length limit.
    pub(crate) fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + 16);
        out.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut out).then_some(out)
    }
}

/// Why the platform's transports could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(pub String);

/// A monotonic instant that works in browsers too.
pub use web_time::Instant;

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> u64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A future that completes after `duration`, on either platform.
pub fn sleep(duration: std::time::Duration) -> futures_timer::Delay {
    futures_timer::Delay::new(duration)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::aead::ChaChaPoly;

    /// RFC 8439, section 2.8.2: the AEAD test vector.
    #[test]
    fn chacha20_poly1305_matches_rfc_8439() {
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
                          for the future, sunscreen would be it.";
        let expected = hex::decode(concat!(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6",
            "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36",
            "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
            "3ff4def08e4b7a9de576d26586cec64b6116",
            "1ae10b594f09e26a7e902ecbd0600691",
        ))
        .unwrap();
        let cipher = ChaChaPoly::new(&key);
        let sealed = cipher.seal(nonce, &aad, plaintext).unwrap();
        assert_eq!(sealed, expected);
        assert_eq!(cipher.open(nonce, &aad, &sealed).unwrap(), plaintext);
        // Any change to the ciphertext, the tag, the data or the nonce is refused.
        for at in [0, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            assert!(cipher.open(nonce, &aad, &tampered).is_none());
        }
        assert!(cipher.open(nonce, b"other", &sealed).is_none());
        assert!(cipher.open([0; 12], &aad, &sealed).is_none());
        assert!(cipher.open(nonce, &aad, &sealed[..15]).is_none());
    }
}
