//! ML-KEM (FIPS 203) natively: `libcrux-ml-kem`, formally verified, with
//! AVX2 code picked at run time where the CPU has it (about three times as
//! fast as RustCrypto's `ml-kem` here). The browser build uses `ml-kem`
//! instead (`mlkem_web.rs`), which is a fraction of the size in wasm; the
//! tests below check that the two agree byte for byte.

macro_rules! backend {
    ($name:ident, $sk:ident, $pk:ident, $ct:ident) => {
        /// One ML-KEM parameter set.
        pub(crate) mod $name {
            use libcrux_ml_kem::$name::{self as kem, $ct as Ct, $pk as Pk, $sk as Sk};

            /// A decapsulation key.
            #[derive(Clone)]
            pub(crate) struct Secret(Sk);

            /// A checked encapsulation key.
            #[derive(Clone)]
            pub(crate) struct Public(Pk);

            /// The key pair of the 64-byte seed `(d, z)`.
            pub(crate) fn generate(seed: [u8; 64]) -> (Secret, Public) {
                let (secret, public) = kem::generate_key_pair(seed).into_parts();
                (Secret(secret), Public(public))
            }

            impl Secret {
                /// The shared secret in `ct` (`None` if it has the wrong
                /// length; a tampered one gives an unrelated secret).
                pub(crate) fn decapsulate(&self, ct: &[u8]) -> Option<[u8; 32]> {
                    Some(kem::decapsulate(&self.0, &Ct::try_from(ct).ok()?))
                }
            }

            impl Public {
                /// An encapsulation key from bytes, if it has the right
                /// length and passes FIPS 203's modulus check.
                pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
                    let key = Pk::try_from(bytes).ok()?;
                    kem::validate_public_key(&key).then_some(Self(key))
                }

                /// The encoded key.
                pub(crate) fn to_bytes(&self) -> Vec<u8> {
                    self.0.as_slice().to_vec()
                }

                /// The ciphertext and shared secret for the message `m`.
                pub(crate) fn encapsulate(&self, m: [u8; 32]) -> (Vec<u8>, [u8; 32]) {
                    let (ct, ss) = kem::encapsulate(&self.0, m);
                    (ct.as_slice().to_vec(), ss)
                }
            }
        }
    };
}

backend!(mlkem512, MlKem512PrivateKey, MlKem512PublicKey, MlKem512Ciphertext);
backend!(mlkem768, MlKem768PrivateKey, MlKem768PublicKey, MlKem768Ciphertext);
backend!(mlkem1024, MlKem1024PrivateKey, MlKem1024PublicKey, MlKem1024Ciphertext);

#[cfg(test)]
mod tests {
    use ml_kem::{Decapsulate as _, FromSeed as _, KeyExport as _, TryKeyInit as _};

    /// The same keys from the same seed, the same ciphertext and secret
    /// from the same message, each side decapsulates the other's, and the
    /// same keys are refused, at every parameter set.
    #[test]
    fn libcrux_agrees_with_the_ml_kem_crate() {
        macro_rules! check {
            ($ours:ident, $theirs:ty) => {
                for i in 0..6u8 {
                    let seed = [i.wrapping_mul(29).wrapping_add(5); 64];
                    let (secret, public) = super::$ours::generate(seed);
                    let (dk, ek) = <$theirs>::from_seed(&seed.into());
                    assert_eq!(public.to_bytes(), ek.to_bytes().to_vec(), "{}: key", stringify!($ours));
                    let m = [i.wrapping_add(11); 32];
                    let (ct, ss) = public.encapsulate(m);
                    let (their_ct, their_ss) = ek.encapsulate_deterministic(&m.into());
                    assert_eq!(ct, their_ct.to_vec(), "{}: ciphertext", stringify!($ours));
                    assert_eq!(ss.to_vec(), their_ss.to_vec());
                    let mut tampered = ct.clone();
                    tampered[i as usize] ^= 0x40;
                    let theirs_of = |ct: &[u8]| {
                        dk.decapsulate(&ml_kem::Ciphertext::<$theirs>::try_from(ct).unwrap()).to_vec()
                    };
                    // Implicit rejection gives the same unrelated secret too.
                    assert_eq!(secret.decapsulate(&tampered).unwrap().to_vec(), theirs_of(&tampered));
                    assert_ne!(secret.decapsulate(&tampered).unwrap(), ss);
                    assert_eq!(secret.decapsulate(&ct).unwrap().to_vec(), theirs_of(&ct));
                    assert!(secret.decapsulate(&ct[1..]).is_none());
                }
                let invalid = vec![0xff; super::$ours::generate([0; 64]).1.to_bytes().len()];
                assert!(super::$ours::Public::parse(&invalid).is_none());
                assert!(ml_kem::EncapsulationKey::<$theirs>::new_from_slice(&invalid).is_err());
            };
        }
        check!(mlkem512, ml_kem::MlKem512);
        check!(mlkem768, ml_kem::MlKem768);
        check!(mlkem1024, ml_kem::MlKem1024);
    }
}
