//! Node identity: an Ed25519 key pair whose 32-byte secret seed, written as
//! 64 hex characters, is the private key a user keeps. The node ID is the
//! libp2p [`PeerId`] derived from its public half.

use libp2p::{PeerId, identity::Keypair};

/// Why a private key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The text is not 64 hexadecimal characters.
    #[error("private key must be 64 hex characters (a 32-byte Ed25519 seed), got {0} characters")]
    BadLength(usize),
    /// The text has characters that are not hexadecimal.
    #[error("private key is not valid hex: {0}")]
    BadHex(String),
    /// The operating system's random source failed.
    #[error("no secure random source available: {0}")]
    Random(String),
}

/// An Ed25519 identity: the seed it came from and the libp2p key pair.
#[derive(Clone)]
pub struct Identity {
    seed: [u8; 32],
    keypair: Keypair,
}

impl Identity {
    /// Creates a fresh identity from the platform's secure random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// Builds the identity for a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut copy = seed;
        let keypair =
            Keypair::ed25519_from_bytes(&mut copy).expect("any 32 bytes are a valid Ed25519 secret seed");
        Self { seed, keypair }
    }

    /// Parses a private key written as 64 hex characters (surrounding
    /// whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Self, IdentityError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(IdentityError::BadLength(text.chars().count()));
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text, &mut seed).map_err(|e| IdentityError::BadHex(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The private key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.seed)
    }

    /// The 32-byte seed (for keys derived from the identity).
    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The libp2p key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The node ID.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("Identity").field("peer_id", &self.peer_id()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn hex_round_trip_keeps_peer_id() {
        let id = Identity::generate().unwrap();
        let again = Identity::from_hex(&id.to_hex()).unwrap();
        assert_eq!(id.peer_id(), again.peer_id());
        assert_eq!(id.to_hex(), again.to_hex());
        assert!(id.peer_id().to_base58().starts_with("12D3KooW"));
    }

    #[test]
    fn known_seed_gives_known_peer_id() {
        // A fixed seed must always map to the same node ID, on every platform.
        let id = Identity::from_hex(&"01".repeat(32)).unwrap();
        let other = Identity::from_seed([1u8; 32]);
        assert_eq!(id.peer_id(), other.peer_id());
        assert_ne!(id.peer_id(), Identity::from_seed([2u8; 32]).peer_id());
    }

    #[test]
    fn bad_keys_are_rejected_with_reasons() {
        assert_eq!(Identity::from_hex("abcd").unwrap_err(), IdentityError::BadLength(4));
        assert!(matches!(Identity::from_hex(&"zz".repeat(32)), Err(IdentityError::BadHex(_))));
        assert!(Identity::from_hex(&format!("  {}\n", "0a".repeat(32))).is_ok());
    }

    #[test]
    fn debug_does_not_leak_the_seed() {
        let id = Identity::from_seed([7u8; 32]);
        assert!(!format!("{id:?}").contains(&id.to_hex()));
    }
}
