//! ML-KEM (FIPS 203) in the browser: RustCrypto's `ml-kem`, a fraction of
//! the size of `libcrux-ml-kem` in wasm (which the native build uses for
//! its AVX2 code; the native tests check the two agree byte for byte).

use ml_kem::{Decapsulate as _, FromSeed as _, KeyExport as _, TryKeyInit as _};

macro_rules! backend {
    ($name:ident, $kem:ty) => {
        /// One ML-KEM parameter set.
        pub(crate) mod $name {
            use super::*;

            /// A decapsulation key.
            #[derive(Clone)]
            pub(crate) struct Secret(ml_kem::DecapsulationKey<$kem>);

            /// A checked encapsulation key.
            #[derive(Clone)]
            pub(crate) struct Public(ml_kem::EncapsulationKey<$kem>);

            /// The key pair of the 64-byte seed `(d, z)`.
            pub(crate) fn generate(seed: [u8; 64]) -> (Secret, Public) {
                let (dk, ek) = <$kem>::from_seed(&seed.into());
                (Secret(dk), Public(ek))
            }

            impl Secret {
                /// The shared secret in `ct` (`None` if it has the wrong
                /// length; a tampered one gives an unrelated secret).
                pub(crate) fn decapsulate(&self, ct: &[u8]) -> Option<[u8; 32]> {
                    let ct = ml_kem::Ciphertext::<$kem>::try_from(ct).ok()?;
                    Some(self.0.decapsulate(&ct).into())
                }
            }

            impl Public {
                /// An encapsulation key from bytes, if it has the right
                /// length and passes FIPS 203's modulus check.
                pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
                    ml_kem::EncapsulationKey::<$kem>::new_from_slice(bytes).ok().map(Self)
                }

                /// The encoded key.
                pub(crate) fn to_bytes(&self) -> Vec<u8> {
                    self.0.to_bytes().to_vec()
                }

                /// The ciphertext and shared secret for the message `m`.
                pub(crate) fn encapsulate(&self, m: [u8; 32]) -> (Vec<u8>, [u8; 32]) {
                    let (ct, ss) = self.0.encapsulate_deterministic(&m.into());
                    (ct.to_vec(), ss.into())
                }
            }
        }
    };
}

backend!(mlkem512, ml_kem::MlKem512);
backend!(mlkem768, ml_kem::MlKem768);
backend!(mlkem1024, ml_kem::MlKem1024);
