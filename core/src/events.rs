//! What a node reports and answers: [`MeshEvent`]s on its event stream and
//! the values its handle returns. A leaf module.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

use crate::{messaging::Envelope, metrics::MetricsSnapshot};

/// Where an inbound message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// Broadcast on this topic.
    Topic(String),
    /// Sent directly to this node.
    Direct,
    /// Sent directly while this node was offline, held and delivered by
    /// this node (a mailbox holder, which could not read it).
    Mailbox(PeerId),
}

/// A validated inbound message.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// The envelope.
    pub envelope: Envelope,
    /// The authenticated node that created it (gossip signer or direct sender).
    pub sender: PeerId,
    /// How it arrived.
    pub via: Via,
    /// The KEM level of the end-to-end encryption it arrived under, or
    /// `None` when only the transport encrypted it (broadcasts, and direct
    /// messages from nodes with `quantum_resistant` off).
    pub e2e: Option<crate::crypto::Level>,
}

/// Something that happened in the mesh.
#[derive(Clone, Debug)]
// Messages are most events: boxing them would allocate once per message to
// save a few hundred bytes of copying for the rare other events.
#[allow(clippy::large_enum_variant)]
pub enum MeshEvent {
    /// A message arrived and passed validation.
    Message(InboundMessage),
    /// First connection to a peer.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The address of that connection.
        address: Multiaddr,
    },
    /// Last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Now listening on this address (ends in `/p2p/<own id>`).
    NewListenAddr(Multiaddr),
    /// No longer listening on this address.
    ExpiredListenAddr(Multiaddr),
    /// A key of a namespace this node holds changed (a local write or one
    /// that arrived); `value` is `None` when it was deleted.
    StateChanged {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The new value.
        value: Option<serde_json::Value>,
    },
    /// The application fell behind (its event stream was full) and missed
    /// events: changes to `namespaces` (re-read them with `state`),
    /// `messages` broadcast messages, and `other` events (peers coming and
    /// going, addresses). Direct messages are never missed: while the
    /// stream is full they are refused, and their senders told so.
    Lagged {
        /// Namespaces whose changes were not all reported.
        namespaces: Vec<String>,
        /// Broadcast messages not delivered.
        messages: u64,
        /// Other events not delivered.
        other: u64,
    },
}

/// A connected peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerInfo {
    /// Node ID.
    pub peer_id: String,
    /// Transport of the first connection: `tcp`, `quic`, `websocket`,
    /// `webrtc-direct`, `relay` or `memory`.
    pub transport: String,
    /// Addresses of the open connections.
    pub connections: Vec<String>,
    /// Last ping round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The peer's software, from identify.
    pub agent: Option<String>,
    /// Whether an end-to-end session with this peer exists: direct
    /// messages are then sealed with the hybrid post-quantum KEM.
    pub quantum_secure: bool,
    /// The KEM level (1, 3 or 5) of that session.
    pub kem_level: Option<u8>,
}

/// A node's status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Node ID.
    pub peer_id: String,
    /// Listen addresses, each ending in `/p2p/<id>`.
    pub listen_addrs: Vec<String>,
    /// Addresses others observed or confirmed for us.
    pub external_addrs: Vec<String>,
    /// Connected peers.
    pub connected_peers: usize,
    /// Most peers allowed.
    pub max_peers: usize,
    /// Topics subscribed to (their messages are delivered).
    pub topics: Vec<String>,
    /// Topics relayed for peers as a gossip hub (not delivered).
    pub hub_topics: Vec<String>,
    /// Whether this node answers DHT queries.
    pub dht_server: bool,
    /// Whether this node relays for others.
    pub relay_server: bool,
    /// Whether direct messages are end-to-end encrypted.
    pub quantum_resistant: bool,
    /// The KEM level (1, 3 or 5) this node encapsulates at.
    pub kem_level: u8,
    /// Whether this node holds messages for offline peers.
    pub mailbox: bool,
    /// Every resource limit in force, by name (see `MeshConfig`).
    pub limits: std::collections::BTreeMap<String, u64>,
    /// Peers banned now (for invalid gossip).
    pub banned_peers: usize,
    /// Metrics summary.
    pub metrics: MetricsSnapshot,
}

/// A delivered direct message.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The envelope ID.
    pub id: String,
    /// Time from sending to the acknowledgement.
    pub rtt: Duration,
    /// `None` when the recipient acknowledged. `Some(holder)` when the
    /// recipient was offline and `holder` took the sealed message, to
    /// deliver when the recipient connects.
    pub held_by: Option<PeerId>,
    /// Whether it went end-to-end encrypted.
    pub encrypted: bool,
}

/// What [`MeshHandle::send`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Sent {
    /// Delivered to one node and acknowledged.
    Direct(Delivery),
    /// Published on a topic.
    Broadcast {
        /// The envelope ID.
        id: String,
        /// The topic.
        topic: String,
    },
}

/// The transport an address uses, as a short name: `relay` (a circuit
/// through a relay), `webrtc-direct`, `websocket`, `quic`, `tcp`, `memory`.
pub fn transport_name(addr: &Multiaddr) -> &'static str {
    use libp2p::multiaddr::Protocol;
    let mut name = "other";
    for protocol in addr.iter() {
        name = match protocol {
            Protocol::P2pCircuit => return "relay",
            Protocol::WebRTCDirect => "webrtc-direct",
            Protocol::Ws(_) | Protocol::Wss(_) => "websocket",
            Protocol::QuicV1 => "quic",
            Protocol::Tcp(_) if name == "other" => "tcp",
            Protocol::Memory(_) => "memory",
            _ => name,
        };
    }
    name
}

/// A namespace as this node holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StateView {
    /// The namespace (its owner's node ID).
    pub namespace: String,
    /// The live values, as one JSON object.
    pub data: serde_json::Value,
    /// Peers known to hold a replica of it.
    pub replicas: Vec<String>,
}
