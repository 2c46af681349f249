//! Private state values: a JSON value sealed to its owner's own KEM key, so
//! replicas store and sync only ciphertext and any device holding the
//! owner's private key reads it.
//!
//! The sealed form is itself JSON (entries carry JSON values):
//! `{"$sealed": {"v": 1, "level": 3, "kem": <base64>, "data": <base64>}}`.
//! `kem` is a fresh encapsulation to the owner's KEM key; the AEAD key is
//! HKDF-SHA256 of its secret, salted with the namespace and key, so a
//! sealed value moved to another key or namespace does not open; `data` is
//! ChaCha20-Poly1305 of the value's JSON text (a fresh key per value, so a
//! zero nonce).

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::kem::{KemError, KemPublicKey, KemSecret, Level};
use crate::platform::aead::ChaChaPoly;

/// The field that marks a sealed value.
pub const SEALED_FIELD: &str = "$sealed";
const INFO: &[u8] = b"infermesh/private-value/v1";

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivateError {
    /// Not in the sealed form (fields missing or not base64).
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),
    /// The KEM refused the encapsulation.
    #[error(transparent)]
    Kem(#[from] KemError),
    /// Tampered, moved, or sealed to another key.
    #[error("the sealed value does not decrypt with this key")]
    Decrypt,
}

fn aead_key(secret: &[u8; 32], namespace: &str, key: &str) -> ChaChaPoly {
    let mut salt = Sha256::new();
    for part in [namespace, key] {
        salt.update((part.len() as u32).to_be_bytes());
        salt.update(part.as_bytes());
    }
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt.finalize()), secret)
        .expand(INFO, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaChaPoly::new(&okm)
}

/// Whether `value` is in the sealed form (whether or not it opens).
pub fn is_sealed(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.len() == 1 && o.contains_key(SEALED_FIELD))
}

/// Seals `value`, to be stored under `key` of `namespace`, to `owner`.
pub fn seal_value(
    owner: &KemPublicKey,
    namespace: &str,
    key: &str,
    value: &Value,
) -> Result<Value, KemError> {
    let (kem, secret) = owner.encapsulate()?;
    let plaintext = serde_json::to_vec(value).expect("a JSON value serialises");
    let data = aead_key(&secret, namespace, key)
        .seal([0u8; 12], &[], &plaintext)
        .expect("a JSON value of a state entry is far below the cipher's limit");
    Ok(json!({ SEALED_FIELD: {
        "v": 1,
        "level": owner.level().number(),
        "kem": STANDARD.encode(kem),
        "data": STANDARD.encode(data),
    }}))
}

/// The level a sealed value was sealed at (to pick the secret).
pub fn sealed_level(value: &Value) -> Result<Level, PrivateError> {
    let level = value[SEALED_FIELD]["level"].as_u64().ok_or(PrivateError::Malformed("level"))?;
    Ok(Level::try_from(u8::try_from(level).map_err(|_| PrivateError::Malformed("level"))?)?)
}

/// Opens a sealed value of `key` in `namespace` with the owner's secret.
pub fn open_value(
    secret: &KemSecret,
    namespace: &str,
    key: &str,
    value: &Value,
) -> Result<Value, PrivateError> {
    let sealed = &value[SEALED_FIELD];
    if sealed["v"].as_u64() != Some(1) {
        return Err(PrivateError::Malformed("version"));
    }
    let field = |name: &'static str| {
        sealed[name].as_str().and_then(|text| STANDARD.decode(text).ok()).ok_or(PrivateError::Malformed(name))
    };
    let (kem, data) = (field("kem")?, field("data")?);
    if sealed_level(value)? != secret.level() {
        return Err(PrivateError::Decrypt);
    }
    let shared = secret.decapsulate(&kem)?;
    let plaintext =
        aead_key(&shared, namespace, key).open([0u8; 12], &[], &data).ok_or(PrivateError::Decrypt)?;
    serde_json::from_slice(&plaintext).map_err(|_| PrivateError::Malformed("plaintext"))
}

/// A node's own private values: sealed to, and opened with, the KEM keys
/// its identity derives (one per level, derived once when first used).
pub struct PrivateValues {
    identity: crate::Identity,
    level: Level,
    secrets: std::collections::HashMap<Level, KemSecret>,
}

impl PrivateValues {
    /// Private values of `identity`, sealed at `level`.
    pub fn new(identity: crate::Identity, level: Level) -> Self {
        Self { identity, level, secrets: std::collections::HashMap::new() }
    }

    fn secret(&mut self, level: Level) -> &KemSecret {
        let identity = &self.identity;
        self.secrets.entry(level).or_insert_with(|| KemSecret::derive(identity, level))
    }

    /// Seals `value` for `key` of this node's own `namespace`.
    pub fn seal(&mut self, namespace: &str, key: &str, value: &Value) -> Result<Value, KemError> {
        let public = self.secret(self.level).public_key();
        seal_value(&public, namespace, key, value)
    }

    /// Opens a private value of this node's own namespace; `None` if the
    /// value is not sealed.
    pub fn open(&mut self, namespace: &str, key: &str, value: &Value) -> Option<Result<Value, PrivateError>> {
        if !is_sealed(value) {
            return None;
        }
        Some(sealed_level(value).and_then(|level| open_value(self.secret(level), namespace, key, value)))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::Identity;

    #[test]
    fn a_private_value_opens_only_with_the_owners_key_and_in_its_place() {
        let owner = Identity::from_seed([7; 32]);
        let secret = KemSecret::derive(&owner, Level::L3);
        let value = json!({"pin": 1234, "notes": ["a", "b"]});
        let sealed = seal_value(&secret.public_key(), "ns", "wallet", &value).unwrap();
        assert!(is_sealed(&sealed) && !is_sealed(&value));
        assert!(!sealed.to_string().contains("1234"), "no plaintext in the stored form");
        assert_eq!(sealed_level(&sealed).unwrap(), Level::L3);
        // Another device with the same private key derives the same secret.
        let again = KemSecret::derive(&Identity::from_seed([7; 32]), Level::L3);
        assert_eq!(open_value(&again, "ns", "wallet", &sealed).unwrap(), value);
        // Moved to another key or namespace, or read with another key: refused.
        assert_eq!(open_value(&secret, "ns", "other", &sealed), Err(PrivateError::Decrypt));
        assert_eq!(open_value(&secret, "ns2", "wallet", &sealed), Err(PrivateError::Decrypt));
        let stranger = KemSecret::derive(&Identity::from_seed([8; 32]), Level::L3);
        assert_eq!(open_value(&stranger, "ns", "wallet", &sealed), Err(PrivateError::Decrypt));
        // Tampered data, damaged fields.
        let mut tampered = sealed.clone();
        let data = tampered[SEALED_FIELD]["data"].as_str().unwrap().to_owned();
        let mut bytes = STANDARD.decode(data).unwrap();
        bytes[0] ^= 1;
        tampered[SEALED_FIELD]["data"] = json!(STANDARD.encode(bytes));
        assert_eq!(open_value(&secret, "ns", "wallet", &tampered), Err(PrivateError::Decrypt));
        let mut damaged = sealed.clone();
        damaged[SEALED_FIELD]["kem"] = json!("not base64!");
        assert_eq!(open_value(&secret, "ns", "wallet", &damaged), Err(PrivateError::Malformed("kem")));
        let mut short = sealed.clone();
        short[SEALED_FIELD]["kem"] = json!(STANDARD.encode([1, 2, 3]));
        assert!(matches!(open_value(&secret, "ns", "wallet", &short), Err(PrivateError::Kem(_))));
        // Each sealing is fresh.
        assert_ne!(seal_value(&secret.public_key(), "ns", "wallet", &value).unwrap(), sealed);
    }
}
