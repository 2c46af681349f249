//! Hybrid post-quantum key encapsulation: X-Wing and two siblings.
//!
//! - **Level 3** (the default) is X-Wing, draft-connolly-cfrg-xwing-kem:
//!   ML-KEM-768 (FIPS 203) next to X25519. It is checked against the
//!   draft's published test vectors and against the `x-wing` crate; it is
//!   built here (like levels 1 and 5) on ML-KEM — `libcrux-ml-kem`
//!   natively, `ml-kem` in wasm — and `x25519-dalek`, so that a secret key
//!   is expanded once, not at every decapsulation as the crate does.
//! - **Levels 1 and 5** are the same construction over ML-KEM-512 and
//!   ML-KEM-1024, each with its own label:
//!   - key pair from a 32-byte seed `sk`: `SHAKE256(sk)` gives 96 bytes;
//!     the first 64 are the ML-KEM seed `(d, z)`, the last 32 the X25519
//!     secret `sk_X` (`pk_X = X25519(sk_X, 9)`); the public key is
//!     `pk_M ‖ pk_X`;
//!   - encapsulation with 64 random bytes `e`: `(ct_M, ss_M) =
//!     ML-KEM.Encaps(pk_M, e[0..32])`, `ct_X = X25519(e[32..64], 9)`,
//!     `ss_X = X25519(e[32..64], pk_X)`; the ciphertext is `ct_M ‖ ct_X`;
//!   - the shared secret is `SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ label)`.
//!
//!   The labels: X-Wing's `\.//^\` at level 3,
//!   `InferMesh-XWing-ML-KEM-512` at level 1, `InferMesh-XWing-ML-KEM-1024`
//!   at level 5, so a secret agreed at one level never equals one agreed
//!   at another.
//!
//! A node's KEM key pair follows its identity: the seed is
//! `SHA3-256("infermesh/kem/v1/level-<n>" ‖ identity seed)`, so every
//! device holding the private key derives the same pair.
//!
//! ML-KEM decapsulation never fails: a tampered or misdirected ciphertext
//! yields an unrelated secret (implicit rejection), which the AEAD that
//! uses it then refuses.

use crate::Identity;
use sha3::{Digest, Sha3_256};

/// A 32-byte shared secret.
pub type SharedSecret = [u8; 32];

/// A security level: ML-KEM-512 (1), ML-KEM-768 (3, X-Wing), ML-KEM-1024 (5).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum Level {
    /// ML-KEM-512 + X25519.
    L1,
    /// ML-KEM-768 + X25519: X-Wing.
    #[default]
    L3,
    /// ML-KEM-1024 + X25519.
    L5,
}

impl Level {
    /// Every level, weakest first.
    pub const ALL: [Level; 3] = [Level::L1, Level::L3, Level::L5];

    /// This level and the stronger ones, this one first: the levels a
    /// sender that asks for this one may encapsulate at.
    pub fn and_stronger(self) -> impl Iterator<Item = Level> {
        std::iter::once(self).chain(Self::ALL.into_iter().filter(move |l| *l > self))
    }

    /// The NIST level number (1, 3 or 5).
    pub fn number(self) -> u8 {
        match self {
            Level::L1 => 1,
            Level::L3 => 3,
            Level::L5 => 5,
        }
    }

    /// Bytes of a public (encapsulation) key.
    pub fn public_key_len(self) -> usize {
        match self {
            Level::L1 => 800 + 32,
            Level::L3 => 1184 + 32,
            Level::L5 => 1568 + 32,
        }
    }

    /// Bytes of a ciphertext.
    pub fn ciphertext_len(self) -> usize {
        match self {
            Level::L1 => 768 + 32,
            Level::L3 => 1088 + 32,
            Level::L5 => 1568 + 32,
        }
    }
}

impl From<Level> for u8 {
    fn from(level: Level) -> u8 {
        level.number()
    }
}

impl TryFrom<u8> for Level {
    type Error = KemError;
    fn try_from(n: u8) -> Result<Self, KemError> {
        match n {
            1 => Ok(Level::L1),
            3 => Ok(Level::L3),
            5 => Ok(Level::L5),
            other => Err(KemError::Level(other)),
        }
    }
}

/// Why a KEM operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KemError {
    /// Not 1, 3 or 5.
    #[error("security level must be 1, 3 or 5, not {0}")]
    Level(u8),
    /// A public key of the wrong size or encoding.
    #[error("invalid level-{level} public key: {detail}")]
    PublicKey {
        /// The level it was meant for.
        level: u8,
        /// What was wrong.
        detail: String,
    },
    /// A ciphertext of the wrong size.
    #[error("invalid level-{level} ciphertext: {len} bytes, expected {expected}")]
    Ciphertext {
        /// The level it was meant for.
        level: u8,
        /// Its size.
        len: usize,
        /// The size for that level.
        expected: usize,
    },
    /// The platform's random source failed.
    #[error("no randomness: {0}")]
    Random(String),
}

const LABEL_L1: &[u8] = b"InferMesh-XWing-ML-KEM-512";
const LABEL_L5: &[u8] = b"InferMesh-XWing-ML-KEM-1024";

/// The combiner, as X-Wing defines it, with the level's label.
fn combine(ss_m: &[u8], ss_x: &[u8; 32], ct_x: &[u8; 32], pk_x: &[u8; 32], label: &[u8]) -> SharedSecret {
    let mut hash = Sha3_256::new();
    hash.update(ss_m);
    hash.update(ss_x);
    hash.update(ct_x);
    hash.update(pk_x);
    hash.update(label);
    hash.finalize().into()
}

/// `SHAKE256(sk)` → (ML-KEM seed, X25519 secret).
fn expand(sk: &[u8; 32]) -> ([u8; 64], x25519_dalek::StaticSecret) {
    use shake::{ExtendableOutput, Shake256, Update, XofReader};
    let mut shake = Shake256::default();
    shake.update(sk);
    let mut reader = shake.finalize_xof();
    let mut seed_m = [0u8; 64];
    let mut sk_x = [0u8; 32];
    reader.read(&mut seed_m);
    reader.read(&mut sk_x);
    (seed_m, x25519_dalek::StaticSecret::from(sk_x))
}

/// The X-Wing construction over one ML-KEM parameter set. With X-Wing's
/// label at ML-KEM-768 it is X-Wing itself (the tests check it against the
/// draft's vectors and the `x-wing` crate). Keys are expanded once, when
/// made or parsed, not at every operation. ML-KEM comes from
/// [`crate::platform::mlkem`]: `libcrux-ml-kem` natively, `ml-kem` in wasm.
macro_rules! hybrid {
    ($name:ident, $pk_m:expr, $ct_m:expr) => {
        mod $name {
            use crate::platform::mlkem::$name as kem;

            use super::*;

            pub(super) const PK_M: usize = $pk_m;
            pub(super) const CT_M: usize = $ct_m;

            /// An expanded secret key.
            #[derive(Clone)]
            pub(super) struct Secret {
                dk_m: kem::Secret,
                sk_x: x25519_dalek::StaticSecret,
                public: Public,
            }

            /// A parsed public key, and its encoding (which every
            /// handshake hashes).
            #[derive(Clone)]
            pub(super) struct Public {
                ek_m: kem::Public,
                pk_x: [u8; 32],
                bytes: Box<[u8]>,
            }

            impl PartialEq for Public {
                fn eq(&self, other: &Self) -> bool {
                    self.bytes == other.bytes
                }
            }

            impl Eq for Public {}

            impl std::fmt::Debug for Public {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.debug_struct("Public").field("pk_x", &self.pk_x).finish_non_exhaustive()
                }
            }

            impl Secret {
                pub(super) fn expand(sk: &[u8; 32]) -> Self {
                    let (seed_m, sk_x) = expand(sk);
                    let (dk_m, ek_m) = kem::generate(seed_m);
                    let pk_x = x25519_dalek::PublicKey::from(&sk_x).to_bytes();
                    let mut bytes = ek_m.to_bytes();
                    bytes.extend_from_slice(&pk_x);
                    Self { dk_m, sk_x, public: Public { ek_m, pk_x, bytes: bytes.into() } }
                }

                pub(super) fn public(&self) -> &Public {
                    &self.public
                }

                /// `ct` has this level's length.
                pub(super) fn decapsulate(&self, ct: &[u8], label: &[u8]) -> SharedSecret {
                    let ss_m = self.dk_m.decapsulate(&ct[..CT_M]).expect("checked length");
                    let ct_x: [u8; 32] = ct[CT_M..].try_into().expect("checked length");
                    let ss_x = self.sk_x.diffie_hellman(&x25519_dalek::PublicKey::from(ct_x)).to_bytes();
                    combine(&ss_m, &ss_x, &ct_x, &self.public.pk_x, label)
                }
            }

            impl Public {
                /// `bytes` has this level's length.
                pub(super) fn parse(bytes: &[u8]) -> Option<Self> {
                    let ek_m = kem::Public::parse(&bytes[..PK_M])?;
                    Some(Self { ek_m, pk_x: bytes[PK_M..].try_into().ok()?, bytes: bytes.into() })
                }

                pub(super) fn as_bytes(&self) -> &[u8] {
                    &self.bytes
                }

                pub(super) fn encapsulate(&self, eseed: &[u8; 64], label: &[u8]) -> (Vec<u8>, SharedSecret) {
                    let (m, e_x) = eseed.split_at(32);
                    let (mut ct, ss_m) = self.ek_m.encapsulate(m.try_into().expect("32 bytes"));
                    let ek_x = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(e_x).expect("32 bytes"));
                    let ct_x = x25519_dalek::PublicKey::from(&ek_x).to_bytes();
                    let ss_x = ek_x.diffie_hellman(&x25519_dalek::PublicKey::from(self.pk_x)).to_bytes();
                    ct.extend_from_slice(&ct_x);
                    (ct, combine(&ss_m, &ss_x, &ct_x, &self.pk_x, label))
                }
            }
        }
    };
}

hybrid!(mlkem512, 800, 768);
hybrid!(mlkem768, 1184, 1088);
hybrid!(mlkem1024, 1568, 1568);

/// X-Wing's own label (level 3).
const LABEL_L3: &[u8] = br"\.//^\";

#[derive(Clone)]
enum Secret {
    L1(Box<mlkem512::Secret>),
    L3(Box<mlkem768::Secret>),
    L5(Box<mlkem1024::Secret>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Public {
    L1(Box<mlkem512::Public>),
    L3(Box<mlkem768::Public>),
    L5(Box<mlkem1024::Public>),
}

/// A KEM secret key, expanded from its 32-byte seed.
#[derive(Clone)]
pub struct KemSecret {
    level: Level,
    secret: Secret,
}

impl std::fmt::Debug for KemSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KemSecret").field("level", &self.level).finish_non_exhaustive()
    }
}

impl KemSecret {
    /// The key pair that follows `identity` at `level` (domain-separated
    /// from the identity key and from the other levels).
    pub fn derive(identity: &Identity, level: Level) -> Self {
        let mut hash = Sha3_256::new();
        hash.update(format!("infermesh/kem/v1/level-{}", level.number()).as_bytes());
        hash.update(identity.seed());
        Self::from_seed(level, hash.finalize().into())
    }

    /// The key pair of a 32-byte seed (X-Wing's secret key at level 3).
    pub fn from_seed(level: Level, seed: [u8; 32]) -> Self {
        let secret = match level {
            Level::L1 => Secret::L1(Box::new(mlkem512::Secret::expand(&seed))),
            Level::L3 => Secret::L3(Box::new(mlkem768::Secret::expand(&seed))),
            Level::L5 => Secret::L5(Box::new(mlkem1024::Secret::expand(&seed))),
        };
        Self { level, secret }
    }

    /// Its level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The public (encapsulation) key.
    pub fn public_key(&self) -> KemPublicKey {
        let public = match &self.secret {
            Secret::L1(s) => Public::L1(Box::new(s.public().clone())),
            Secret::L3(s) => Public::L3(Box::new(s.public().clone())),
            Secret::L5(s) => Public::L5(Box::new(s.public().clone())),
        };
        KemPublicKey { level: self.level, public }
    }

    /// The encoded public key (`pk_M ‖ pk_X`), without copying it.
    pub fn public_key_bytes(&self) -> &[u8] {
        match &self.secret {
            Secret::L1(s) => s.public().as_bytes(),
            Secret::L3(s) => s.public().as_bytes(),
            Secret::L5(s) => s.public().as_bytes(),
        }
    }

    /// The shared secret in `ciphertext`. A wrong-size ciphertext is an
    /// error; a tampered one gives an unrelated secret.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<SharedSecret, KemError> {
        let expected = self.level.ciphertext_len();
        if ciphertext.len() != expected {
            return Err(KemError::Ciphertext { level: self.level.number(), len: ciphertext.len(), expected });
        }
        Ok(match &self.secret {
            Secret::L1(s) => s.decapsulate(ciphertext, LABEL_L1),
            Secret::L3(s) => s.decapsulate(ciphertext, LABEL_L3),
            Secret::L5(s) => s.decapsulate(ciphertext, LABEL_L5),
        })
    }
}

/// A KEM public key of some level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KemPublicKey {
    level: Level,
    public: Public,
}

impl KemPublicKey {
    /// Parses a public key received from elsewhere (size and encoding
    /// checked).
    pub fn from_bytes(level: Level, bytes: &[u8]) -> Result<Self, KemError> {
        let bad = |detail: &str| KemError::PublicKey { level: level.number(), detail: detail.to_owned() };
        if bytes.len() != level.public_key_len() {
            return Err(bad(&format!("{} bytes, expected {}", bytes.len(), level.public_key_len())));
        }
        let invalid = || bad("not a valid ML-KEM encapsulation key");
        let public = match level {
            Level::L1 => Public::L1(Box::new(mlkem512::Public::parse(bytes).ok_or_else(invalid)?)),
            Level::L3 => Public::L3(Box::new(mlkem768::Public::parse(bytes).ok_or_else(invalid)?)),
            Level::L5 => Public::L5(Box::new(mlkem1024::Public::parse(bytes).ok_or_else(invalid)?)),
        };
        Ok(Self { level, public })
    }

    /// Its level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The encoded key (`pk_M ‖ pk_X`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The encoded key, without copying it.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.public {
            Public::L1(p) => p.as_bytes(),
            Public::L3(p) => p.as_bytes(),
            Public::L5(p) => p.as_bytes(),
        }
    }

    /// A fresh shared secret and the ciphertext that carries it to the
    /// key's holder.
    pub fn encapsulate(&self) -> Result<(Vec<u8>, SharedSecret), KemError> {
        let mut eseed = [0u8; 64];
        getrandom::fill(&mut eseed).map_err(|e| KemError::Random(e.to_string()))?;
        Ok(self.encapsulate_with(&eseed))
    }

    /// Encapsulation with the given 64 random bytes (for test vectors).
    pub fn encapsulate_with(&self, eseed: &[u8; 64]) -> (Vec<u8>, SharedSecret) {
        match &self.public {
            Public::L1(p) => p.encapsulate(eseed, LABEL_L1),
            Public::L3(p) => p.encapsulate(eseed, LABEL_L3),
            Public::L5(p) => p.encapsulate(eseed, LABEL_L5),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const LEVELS: [Level; 3] = [Level::L1, Level::L3, Level::L5];

    /// The draft's published vectors (draft-connolly-cfrg-xwing-kem,
    /// `spec/test-vectors.json`).
    #[test]
    fn x_wing_matches_the_drafts_test_vectors() {
        #[derive(serde::Deserialize)]
        struct Vector {
            seed: String,
            eseed: String,
            ss: String,
            pk: String,
            ct: String,
        }
        let vectors: Vec<Vector> = serde_json::from_str(include_str!("xwing-test-vectors.json")).unwrap();
        assert_eq!(vectors.len(), 3);
        for v in vectors {
            let unhex = |s: &str| hex::decode(s).unwrap();
            let sk = KemSecret::from_seed(Level::L3, unhex(&v.seed).try_into().unwrap());
            let pk = sk.public_key();
            assert_eq!(pk.to_bytes(), unhex(&v.pk), "public key");
            let (ct, ss) = pk.encapsulate_with(&unhex(&v.eseed).try_into().unwrap());
            assert_eq!(ct, unhex(&v.ct), "ciphertext");
            assert_eq!(ss.to_vec(), unhex(&v.ss), "shared secret");
            assert_eq!(sk.decapsulate(&ct).unwrap().to_vec(), unhex(&v.ss), "decapsulated");
        }
    }

    /// Level 3 agrees with the `x-wing` crate, key for key and byte for
    /// byte, beyond the three vectors.
    #[test]
    fn level_3_is_the_x_wing_crate() {
        use x_wing::{Decapsulate as _, Decapsulator as _, KeyExport as _, TryKeyInit as _};
        for i in 0..8u8 {
            let sk = [i.wrapping_mul(31).wrapping_add(3); 32];
            let eseed = [i.wrapping_mul(7).wrapping_add(1); 64];
            let ours = KemSecret::from_seed(Level::L3, sk);
            let theirs = x_wing::DecapsulationKey::from(sk);
            let pk = ours.public_key();
            assert_eq!(pk.to_bytes(), theirs.encapsulation_key().to_bytes().to_vec());
            let (ct, ss) = pk.encapsulate_with(&eseed);
            let their_pk = x_wing::EncapsulationKey::new_from_slice(&pk.to_bytes()).unwrap();
            let (their_ct, their_ss) = their_pk.encapsulate_deterministic(&eseed.into());
            assert_eq!((ct.clone(), ss.to_vec()), (their_ct.to_vec(), their_ss.to_vec()));
            let their_ct = x_wing::Ciphertext::try_from(ct.as_slice()).unwrap();
            assert_eq!(theirs.decapsulate(&their_ct).to_vec(), ours.decapsulate(&ct).unwrap().to_vec());
        }
    }

    #[test]
    fn every_level_round_trips_and_rejects_what_it_should() {
        let alice = Identity::from_seed([1; 32]);
        let bob = Identity::from_seed([2; 32]);
        for level in LEVELS {
            let secret = KemSecret::derive(&alice, level);
            let public = secret.public_key();
            assert_eq!(public.to_bytes().len(), level.public_key_len());
            // The key pair follows the identity.
            assert_eq!(KemSecret::derive(&alice, level).public_key(), public);
            let parsed = KemPublicKey::from_bytes(level, &public.to_bytes()).unwrap();
            assert_eq!(parsed, public);
            let (ct, ss) = parsed.encapsulate().unwrap();
            assert_eq!(ct.len(), level.ciphertext_len());
            assert_eq!(secret.decapsulate(&ct).unwrap(), ss);
            // Fresh randomness, fresh secret.
            assert_ne!(parsed.encapsulate().unwrap().1, ss);
            // Tampered ciphertext (in either half) or the wrong recipient:
            // an unrelated secret.
            for at in [0, ct.len() - 1] {
                let mut tampered = ct.clone();
                tampered[at] ^= 1;
                assert_ne!(secret.decapsulate(&tampered).unwrap(), ss, "level {level:?}, byte {at}");
            }
            assert_ne!(KemSecret::derive(&bob, level).decapsulate(&ct).unwrap(), ss);
            // Wrong sizes are errors.
            assert!(matches!(secret.decapsulate(&ct[1..]), Err(KemError::Ciphertext { .. })));
            assert!(matches!(
                KemPublicKey::from_bytes(level, &public.to_bytes()[1..]),
                Err(KemError::PublicKey { .. })
            ));
        }
        // Levels never share keys or secrets.
        let keys: Vec<_> =
            LEVELS.map(|l| KemSecret::derive(&alice, l).public_key().to_bytes()[..32].to_vec()).into();
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert_eq!(Level::try_from(2), Err(KemError::Level(2)));
    }

    #[test]
    fn an_invalid_ml_kem_key_is_refused() {
        // Coefficients must be below q = 3329: all-ones bytes are not.
        for level in LEVELS {
            let bytes = vec![0xff; level.public_key_len()];
            assert!(matches!(KemPublicKey::from_bytes(level, &bytes), Err(KemError::PublicKey { .. })));
        }
    }
}
