//! ML-KEM (FIPS 203) and ChaCha20-Poly1305 (RFC 8439) for InferMesh's
//! browser build: RustCrypto's `ml-kem` and `chacha20poly1305`, with every
//! parameter set named here.
//!
//! Why a crate of its own: Rust compiles a generic function in the crate
//! that instantiates it, with that crate's optimisation level. The npm
//! package is built for size, and ML-KEM compiled for size is 1.7-1.9x
//! slower. The `wasm` profile builds this crate for speed, so the handshake
//! is fast and the rest of the package stays small. `infermesh-core` uses
//! it in wasm only (natively it has `libcrux-ml-kem` and ring).

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _,
    aead::{Aead as _, AeadInPlace as _, Payload},
};
use ml_kem::{Decapsulate as _, FromSeed as _, KeyExport as _, TryKeyInit as _};

macro_rules! parameter_set {
    ($name:ident, $kem:ty, $doc:literal) => {
        #[doc = $doc]
        pub mod $name {
            use super::*;

            /// A decapsulation key.
            #[derive(Clone)]
            pub struct Secret(ml_kem::DecapsulationKey<$kem>);

            /// A checked encapsulation key.
            #[derive(Clone)]
            pub struct Public(ml_kem::EncapsulationKey<$kem>);

            /// The key pair of the 64-byte seed `(d, z)`.
            pub fn generate(seed: [u8; 64]) -> (Secret, Public) {
                let (dk, ek) = <$kem>::from_seed(&seed.into());
                (Secret(dk), Public(ek))
            }

            impl Secret {
                /// The shared secret in `ct` (`None` if it has the wrong
                /// length; a tampered one gives an unrelated secret).
                pub fn decapsulate(&self, ct: &[u8]) -> Option<[u8; 32]> {
                    let ct = ml_kem::Ciphertext::<$kem>::try_from(ct).ok()?;
                    Some(self.0.decapsulate(&ct).into())
                }
            }

            impl Public {
                /// An encapsulation key from bytes, if it has the right
                /// length and passes FIPS 203's modulus check.
                pub fn parse(bytes: &[u8]) -> Option<Self> {
                    ml_kem::EncapsulationKey::<$kem>::new_from_slice(bytes).ok().map(Self)
                }

                /// The encoded key.
                pub fn to_bytes(&self) -> Vec<u8> {
                    self.0.to_bytes().to_vec()
                }

                /// The ciphertext and shared secret for the message `m`.
                pub fn encapsulate(&self, m: [u8; 32]) -> (Vec<u8>, [u8; 32]) {
                    let (ct, ss) = self.0.encapsulate_deterministic(&m.into());
                    (ct.to_vec(), ss.into())
                }
            }
        }
    };
}

parameter_set!(mlkem512, ml_kem::MlKem512, "ML-KEM-512 (level 1).");
parameter_set!(mlkem768, ml_kem::MlKem768, "ML-KEM-768 (level 3).");
parameter_set!(mlkem1024, ml_kem::MlKem1024, "ML-KEM-1024 (level 5).");

/// A ChaCha20-Poly1305 key.
pub struct ChaChaPoly(ChaCha20Poly1305);

impl ChaChaPoly {
    /// The cipher of a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(ChaCha20Poly1305::new(key.into()))
    }

    /// Turns `buf` from plaintext into ciphertext then tag, sealed under
    /// `nonce` and authenticating `aad` with it, without a copy. `false`
    /// only past the cipher's length limit (256 GiB).
    pub fn seal_in_place(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> bool {
        self.0.encrypt_in_place(&nonce.into(), aad, buf).is_ok()
    }

    /// The plaintext of `sealed`, or `None` if it (or `aad`) was altered
    /// or sealed under another key or nonce.
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(&nonce.into(), Payload { msg: sealed, aad }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! round_trip {
        ($name:ident, $ct_len:expr) => {
            let (secret, public) = $name::generate([7; 64]);
            let public = $name::Public::parse(&public.to_bytes()).expect("own key parses");
            let (ct, ss) = public.encapsulate([9; 32]);
            assert_eq!(ct.len(), $ct_len);
            assert_eq!(secret.decapsulate(&ct), Some(ss));
            let mut tampered = ct.clone();
            tampered[0] ^= 1;
            assert_ne!(secret.decapsulate(&tampered), Some(ss), "implicit rejection");
            assert_eq!(secret.decapsulate(&ct[1..]), None, "wrong length");
        };
    }

    #[test]
    fn each_parameter_set_round_trips_and_rejects_tampering() {
        round_trip!(mlkem512, 768);
        round_trip!(mlkem768, 1088);
        round_trip!(mlkem1024, 1568);
    }

    #[test]
    fn an_encapsulation_key_out_of_range_is_refused() {
        assert!(mlkem768::Public::parse(&[0xff; 1184]).is_none());
        assert!(mlkem768::Public::parse(&[0; 1183]).is_none());
    }

    #[test]
    fn sealed_messages_open_only_unaltered() {
        let key = ChaChaPoly::new(&[1; 32]);
        let mut buf = b"hello".to_vec();
        assert!(key.seal_in_place([2; 12], b"aad", &mut buf));
        assert_eq!(buf.len(), 5 + 16);
        assert_eq!(key.open([2; 12], b"aad", &buf).as_deref(), Some(&b"hello"[..]));
        assert_eq!(key.open([3; 12], b"aad", &buf), None);
        assert_eq!(key.open([2; 12], b"other", &buf), None);
        buf[0] ^= 1;
        assert_eq!(key.open([2; 12], b"aad", &buf), None);
    }
}
