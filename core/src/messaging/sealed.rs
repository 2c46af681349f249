//! The end-to-end encrypted body of a direct message as it travels: plain
//! data in the envelope's `e2e` field. Making and opening it is
//! [`crate::crypto`]'s work; here it is only carried, sized and decoded.

use serde::{Deserialize, Serialize};

/// The sealed part of an envelope: its payload and content, encrypted, and
/// the handshake of the session that sealed it until the sender knows the
/// recipient has that session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBody {
    /// The session's handshake, until the sender knows it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Handshake>,
    /// The encrypted payload and content.
    pub sealed: Sealed,
}

impl SealedBody {
    /// At least the bytes of this body's encoding (field names and CBOR
    /// headers included), for sizing an envelope's buffer.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        self.sealed.ciphertext.len()
            + self.handshake.as_ref().map_or(0, |h| h.ciphertext.len() + h.signature.len() + 32)
            + 32
    }
}

/// The first message of an end-to-end session (and of each rotation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The KEM level (1, 3 or 5; see [`crate::crypto::Level`]).
    pub level: u8,
    /// Which key generation this starts (0, then one more per rotation).
    pub epoch: u32,
    /// The KEM ciphertext.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
    /// The initiator's signature over the transcript hash (prefixed with
    /// `infermesh/e2e/v2 handshake`).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// An encrypted message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The key generation it was sealed under.
    pub epoch: u32,
    /// The sender's counter (the nonce).
    pub counter: u64,
    /// Ciphertext and tag.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}
