//! The wire side of end-to-end encryption: `/infermesh/e2e/1.0.0`
//! (request-response, CBOR).
//!
//! - `KemKey`: what is the signed KEM key of a node? Asked of the node
//!   itself, or of any peer when it is offline; whoever answers, the asker
//!   verifies the identity's signature, so a wrong answer is only useless.
//! - `Deposit`: hold this sealed direct message for its offline recipient
//!   (nodes with a mailbox; the depositor is recorded as its author, which
//!   the recipient checks against the handshake signature).
//! - `Mail`: messages held for you, delivered when you connect.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{crypto::SignedKemKey, protocols::bounded::bounded};

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/e2e/1.0.0");
/// Request and response size limits for the codec (checked before decoding).
pub(crate) const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024 + 64 * 1024;
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Most bytes of held messages in one `Mail` request.
pub(crate) const MAX_MAIL_BYTES: usize = 4 * 1024 * 1024;
/// Most held messages in one `Mail` request (each costs its receiver a
/// handshake to check).
pub(crate) const MAX_MAIL_FRAMES: usize = 64;

/// A request of the e2e protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum E2eRequest {
    /// The KEM key of `peer` (node ID bytes) at `level`.
    KemKey { peer: ByteBuf, level: u8 },
    /// Hold this encoded, sealed envelope until its recipient connects.
    Deposit { frame: ByteBuf },
    /// Sealed envelopes held for the receiver (at most [`MAX_MAIL_FRAMES`]).
    Mail {
        #[serde(deserialize_with = "bounded::<_, _, MAX_MAIL_FRAMES>")]
        held: Vec<HeldFrame>,
    },
}

/// A held message as delivered: its author (who deposited it; its
/// handshake signature proves it) and the encoded, sealed envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HeldFrame {
    pub author: ByteBuf,
    pub frame: ByteBuf,
}

/// A response of the e2e protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum E2eResponse {
    /// The key, if the answering node knows it.
    KemKey(Option<SignedKemKey>),
    /// The deposit is held.
    Held,
    /// How many delivered messages were taken and refused, and which ones
    /// (by position) the receiver could not take yet (its application's
    /// event stream was full): the holder keeps those and tries again.
    Taken {
        accepted: u32,
        rejected: u32,
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            deserialize_with = "bounded::<_, _, MAX_MAIL_FRAMES>"
        )]
        later: Vec<u32>,
    },
    /// The request could not be served (the reason, for people).
    Refused(String),
}
