//! The wire side of state replication.
//!
//! - Live: entries written are published, a batch per gossip message (a
//!   CBOR array of encoded entries), on one topic, [`STATE_TOPIC`], of a
//!   gossipsub instance of its own ([`GOSSIP_PROTOCOL`]): anonymous, with
//!   content-addressed message IDs. The entries carry their own signatures,
//!   which receivers verify (once per entry, not per copy) and merge before
//!   forwarding; a batch with a bad entry is rejected, which penalises the
//!   peer that sent it through gossipsub's peer scoring.
//! - Catch-up: `/infermesh/state-sync/1.0.0` (request-response, CBOR). On
//!   connecting, and periodically, a node asks a peer which namespaces it
//!   holds (with a digest of each), reconciles each one it replicates and
//!   holds differently (negentropy, a few round trips), then fetches what
//!   it lacks and pushes what the peer lacks, in bounded batches.
//! - Replication factor: a node whose namespace has fewer live holders than
//!   it wants asks peers on the state topic to keep a replica (`Replicate`);
//!   a peer that accepts catches up with it at once.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::protocols::bounded::{bounded, decode_list};

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/state-sync/1.0.0");
/// The gossipsub topic that carries new entries.
pub(crate) const STATE_TOPIC: &str = "/infermesh/state/1";
/// The protocol prefix of the state's own gossipsub instance.
pub(crate) const GOSSIP_PROTOCOL: &str = "/infermesh/state-gossip";
/// Most entries in one gossip message.
pub(crate) const MAX_GOSSIP_ENTRIES: usize = 256;
/// Most bytes of entries in one gossip message.
pub(crate) const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Most entry IDs asked for in one fetch.
pub(crate) const MAX_FETCH_IDS: usize = 256;
/// Most bytes of entries in one fetch answer or one push.
pub(crate) const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Most namespaces listed in one answer.
pub(crate) const MAX_NAMESPACES: usize = 4096;
/// Request and response size limits for the codec (checked before decoding).
pub(crate) const MAX_REQUEST_BYTES: u64 = 1024 * 1024;
pub(crate) const MAX_RESPONSE_BYTES: u64 = 2 * 1024 * 1024;

/// A request of the state-sync protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum SyncRequest {
    /// Which namespaces do you hold?
    Namespaces,
    /// One negentropy message for a namespace.
    Reconcile { ns: String, msg: ByteBuf },
    /// Send me these entries (IDs) of a namespace.
    Fetch {
        ns: String,
        #[serde(deserialize_with = "bounded::<_, _, MAX_FETCH_IDS>")]
        ids: Vec<ByteBuf>,
    },
    /// Entries you lack.
    Push {
        #[serde(deserialize_with = "bounded::<_, _, MAX_FETCH_IDS>")]
        entries: Vec<ByteBuf>,
    },
    /// Please keep a replica of this namespace (its owner asking).
    Replicate { ns: String },
}

/// A response of the state-sync protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum SyncResponse {
    /// The namespaces held, each with its digest (see
    /// [`crate::state::sync::digest`]).
    Namespaces(#[serde(deserialize_with = "bounded::<_, _, MAX_NAMESPACES>")] Vec<(String, ByteBuf)>),
    /// The negentropy answer.
    Reconcile(ByteBuf),
    /// Encoded entries.
    Entries(#[serde(deserialize_with = "bounded::<_, _, MAX_FETCH_IDS>")] Vec<ByteBuf>),
    /// How many pushed entries were taken and refused.
    Pushed { accepted: u32, rejected: u32 },
    /// A replica will be kept (the new holder catches up at once).
    Replicating,
    /// The request could not be served (the reason, for the log).
    Refused(String),
}

/// A gossip message: entries, each encoded ([`crate::state::Entry::encode`]).
pub(crate) fn encode_batch(entries: &[ByteBuf], bytes: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(bytes + 16);
    ciborium::into_writer(entries, &mut data).expect("writing CBOR into a Vec cannot fail");
    data
}

/// The encoded entries of a gossip message (at most
/// [`MAX_GOSSIP_ENTRIES`], counted as they are read).
pub(crate) fn decode_batch(data: &[u8]) -> Result<Vec<ByteBuf>, String> {
    decode_list::<ByteBuf, MAX_GOSSIP_ENTRIES>(data)
}
