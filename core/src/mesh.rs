//! The public facade: [`Mesh::build`] builds a node and returns a cloneable
//! [`MeshHandle`] (commands with replies), a [`MeshEvents`] stream and the
//! [`EventLoop`] future that the caller spawns on its executor. The libp2p
//! `Swarm` lives inside the event loop and is never exposed.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use crate::net::EventLoop;
use crate::{
    Identity,
    messaging::{Envelope, Limits, MsgType, Rejection},
    metrics::{Metrics, MetricsSnapshot},
    net::{self, Command},
    platform::{self, TransportOptions},
};

/// Which transports the node uses.
#[derive(Clone, Debug)]
pub enum TransportConfig {
    /// The platform's real transports (native: TCP, QUIC, WebSocket,
    /// WebRTC-direct; browser: WebSocket, WebRTC-direct), plus relay circuits.
    Platform(TransportOptions),
    /// libp2p's in-process memory transport (`/memory/N` addresses), plus
    /// relay circuits: for tests and simulations.
    Memory,
}

/// Timers and intervals; the defaults suit real networks, tests shorten them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// How often each connection is pinged; a failed ping closes it, so a
    /// peer that vanished (a closed browser tab) is dropped within
    /// `ping_interval + ping_timeout`.
    pub ping_interval: Duration,
    /// How long a ping may take before the connection counts as dead.
    pub ping_timeout: Duration,
    /// First reconnect delay after losing a peer.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Reconnect attempts before giving up on a peer (bootstrap peers: never).
    pub reconnect_attempts: u32,
    /// How often to look for new peers with a random DHT walk.
    pub discovery_interval: Duration,
    /// How long a direct message may wait for its acknowledgement.
    pub request_timeout: Duration,
    /// How long an unused connection is kept open.
    pub idle_timeout: Duration,
    /// How often each connected peer is reconciled with (state catch-up).
    pub state_sync_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            gossip_heartbeat: Duration::from_millis(700),
            ping_interval: Duration::from_secs(3),
            ping_timeout: Duration::from_secs(4),
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            reconnect_attempts: 10,
            discovery_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            state_sync_interval: Duration::from_secs(30),
        }
    }
}

/// Everything needed to start a node.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The node's identity.
    pub identity: Identity,
    /// Transports.
    pub transport: TransportConfig,
    /// Peers to join through (`/…/p2p/<id>`); redialled forever with backoff.
    pub bootstrap: Vec<Multiaddr>,
    /// Most distinct peers connected at once.
    pub max_peers: usize,
    /// Serve relay v2 circuits for others (native nodes).
    pub relay_server: bool,
    /// Answer DHT queries (native nodes); browsers are DHT clients.
    pub kad_server: bool,
    /// Run AutoNAT (reachability probing, client and server).
    pub autonat: bool,
    /// Run DCUtR (hole punching through relayed connections).
    pub dcutr: bool,
    /// Discover peers on the local network with mDNS (native only).
    pub mdns: bool,
    /// Join every topic a peer subscribes to (up to `hub_topics`), so that
    /// peers that only know this node (browser pages) reach each other's
    /// broadcasts through it. Messages on those topics are delivered as
    /// events like any other.
    pub gossip_hub: bool,
    /// Most topics joined as a hub.
    pub hub_topics: usize,
    /// Hold relay reservations on connected relay servers, so that peers
    /// that cannot dial us (browser pages) reach us at
    /// `<relay>/p2p-circuit/p2p/<id>`.
    pub auto_relay: bool,
    /// Limits on inbound envelopes.
    pub limits: Limits,
    /// Timers.
    pub timing: Timing,
    /// Most direct messages in flight to one peer; more wait in a priority
    /// queue.
    pub direct_window: usize,
    /// Most direct messages waiting per peer.
    pub direct_queue: usize,
    /// Capacity of the event stream; when the consumer falls behind, new
    /// messages are dropped and counted as `queue_full`.
    pub event_buffer: usize,
    /// Keep a replica of every namespace seen (native nodes), so an
    /// owner's state outlives the owner's devices being offline.
    pub replicate: bool,
    /// Most namespaces held for others, whether seen (`replicate`) or
    /// asked for by their owner; 0 refuses every request to hold one.
    pub replica_quota: usize,
    /// How many peers this node wants to hold a replica of its own
    /// namespace: while fewer connected peers are known to hold one, it asks
    /// peers that replicate state to keep one (0: never asks).
    pub replication_factor: usize,
    /// End-to-end encrypt direct messages with the hybrid post-quantum KEM
    /// (on by default). Off: direct messages rely on the transport's
    /// encryption only (Noise / DTLS), which every hop-by-hop relay and a
    /// future quantum adversary recording traffic could undo.
    pub quantum_resistant: bool,
    /// The KEM level this node encapsulates at: 1 (ML-KEM-512), 3
    /// (ML-KEM-768, X-Wing, the default) or 5 (ML-KEM-1024), each with X25519.
    pub kem_level: crate::crypto::Level,
    /// Hold sealed direct messages for offline peers and deliver them when
    /// they connect (native nodes).
    pub mailbox: bool,
    /// Bounds of that mailbox.
    pub mailbox_limits: crate::messaging::MailboxLimits,
    /// When end-to-end session keys are rotated (by default after 2^20
    /// messages or an hour), with a fresh encapsulation.
    pub e2e_rekey: crate::crypto::Rekey,
}

impl MeshConfig {
    /// A full node: DHT server, relay server, AutoNAT, DCUtR and mDNS, on
    /// the platform transports.
    pub fn server(identity: Identity) -> Self {
        Self {
            identity,
            transport: TransportConfig::Platform(TransportOptions::default()),
            bootstrap: Vec::new(),
            max_peers: 50,
            relay_server: true,
            kad_server: true,
            autonat: true,
            dcutr: true,
            mdns: true,
            auto_relay: false,
            gossip_hub: true,
            hub_topics: 1024,
            limits: Limits::default(),
            timing: Timing::default(),
            direct_window: 64,
            direct_queue: 1024,
            event_buffer: 1024,
            replicate: true,
            replica_quota: 10_000,
            replication_factor: 3,
            quantum_resistant: true,
            kem_level: crate::crypto::Level::L3,
            mailbox: true,
            mailbox_limits: crate::messaging::MailboxLimits::default(),
            e2e_rekey: crate::crypto::Rekey::default(),
        }
    }

    /// A light node (a browser page): DHT client, relay client holding
    /// reservations on the relays it connects to.
    pub fn client(identity: Identity) -> Self {
        Self {
            auto_relay: true,
            gossip_hub: false,
            relay_server: false,
            kad_server: false,
            autonat: false,
            dcutr: false,
            mdns: false,
            replicate: false,
            replica_quota: 0,
            mailbox: false,
            ..Self::server(identity)
        }
    }
}

/// Errors of mesh operations; the messages are meant for people.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A state write was refused or could not be stored.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    /// The event loop has stopped.
    #[error("the mesh node has shut down")]
    Closed,
    /// Building the transports failed.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// Building a protocol failed.
    #[error("protocol setup failed: {0}")]
    Setup(String),
    /// A listen address could not be used.
    #[error("could not listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("could not connect to {target}: {reason}")]
    Dial {
        /// The address or node ID dialled.
        target: String,
        /// Why.
        reason: String,
    },
    /// A peer could not be found in the DHT or on the local network.
    #[error("node {0} was not found (no address known via the DHT, mDNS or bootstrap peers)")]
    PeerNotFound(PeerId),
    /// The envelope failed the checks a receiver would apply.
    #[error("invalid message: {0}")]
    InvalidMessage(Rejection),
    /// Nobody is subscribed to the topic yet.
    #[error("no peers are subscribed to topic '{0}' yet")]
    NoSubscribers(String),
    /// Publishing failed for another reason.
    #[error("publishing to '{topic}' failed: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Subscribing failed.
    #[error("subscribing to '{topic}' failed: {reason}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Too many messages are waiting for this peer.
    #[error("send queue to {0} is full")]
    QueueFull(PeerId),
    /// The direct message did not reach the peer.
    #[error("direct message to {peer} failed: {reason}")]
    Delivery {
        /// The recipient.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer received the message and refused it.
    #[error("{peer} rejected the message: {reason}")]
    RejectedByPeer {
        /// The recipient.
        peer: PeerId,
        /// The reason label it gave.
        reason: String,
    },
}

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

pub use crate::state::WriteMode;

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

/// The entry point.
pub struct Mesh;

impl Mesh {
    /// Builds a node. Spawn the returned [`EventLoop::run`] future; it ends
    /// when every handle is dropped or [`MeshHandle::shutdown`] is called.
    /// Then call [`MeshHandle::listen_on`] and/or [`MeshHandle::dial`].
    pub fn build(config: MeshConfig) -> Result<(MeshHandle, MeshEvents, EventLoop), MeshError> {
        Self::build_with_store(config, Box::new(crate::state::MemoryStore::default()))
    }

    /// Like [`Mesh::build`], keeping the replicated state in `store` (it is
    /// loaded now; every acknowledged write is durable in it).
    pub fn build_with_store(
        config: MeshConfig,
        store: Box<dyn crate::state::Store + Send>,
    ) -> Result<(MeshHandle, MeshEvents, EventLoop), MeshError> {
        let peer_id = config.identity.peer_id();
        let limits = config.limits.clone();
        let quantum_resistant = config.quantum_resistant;
        let (command_tx, command_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
        let (event_loop, metrics) = net::build(config, store, command_rx, event_tx)?;
        let handle = MeshHandle {
            commands: command_tx,
            peer_id,
            peer_id_text: peer_id.to_base58().into(),
            metrics,
            limits,
            quantum_resistant,
        };
        Ok((handle, MeshEvents { inner: event_rx }, event_loop))
    }
}

/// The stream of [`MeshEvent`]s. Keep polling it: when it is full, new
/// messages are dropped.
pub struct MeshEvents {
    inner: mpsc::Receiver<MeshEvent>,
}

impl Stream for MeshEvents {
    type Item = MeshEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MeshEvent>> {
        self.inner.poll_recv(cx)
    }
}

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    /// `peer_id` in text, as written into envelopes.
    peer_id_text: Arc<str>,
    metrics: Arc<Metrics>,
    limits: Limits,
    quantum_resistant: bool,
}

impl MeshHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands.clone().send(make(tx)).await.map_err(|_| MeshError::Closed)?;
        rx.await.map_err(|_| MeshError::Closed)
    }

    /// This node's ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Starts listening; resolves with the first concrete address (with
    /// `/p2p/<id>`), e.g. the picked port for `/tcp/0`.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<Multiaddr, MeshError> {
        self.call(|reply| Command::Listen { addr, reply }).await?
    }

    /// Connects to an address (with or without `/p2p/<id>`); resolves with
    /// the peer's ID once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, MeshError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Joins the mesh through a bootstrap address: dials it now (resolving
    /// with the outcome) and keeps it connected afterwards, redialling with
    /// backoff whenever the connection drops or this first dial failed.
    pub async fn join(&self, addr: Multiaddr) -> Result<PeerId, MeshError> {
        self.call(|reply| Command::Join { addr, reply }).await?
    }

    /// Finds a node by ID (already connected, DHT, mDNS) and connects to it.
    pub async fn connect_peer(&self, peer: PeerId) -> Result<(), MeshError> {
        self.call(|reply| Command::FindPeer { peer, reply }).await?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, MeshError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// Subscribes to a topic; `false` if already subscribed.
    pub async fn subscribe(&self, topic: &str) -> Result<bool, MeshError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::Subscribe { topic, reply }).await?
    }

    /// Unsubscribes; `false` if not subscribed.
    pub async fn unsubscribe(&self, topic: &str) -> Result<bool, MeshError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::Unsubscribe { topic, reply }).await
    }

    /// Sets (`Update`, `Create`) or removes (`Delete`, `value` ignored) a
    /// key of this node's own namespace; resolves once the signed entry is
    /// durable locally, then it is announced to the mesh.
    pub async fn state_write(
        &self,
        key: &str,
        value: Option<serde_json::Value>,
        mode: WriteMode,
    ) -> Result<(), MeshError> {
        self.state_write_in(None, key, value, mode).await
    }

    /// Like [`MeshHandle::state_write`] in another namespace: allowed when
    /// its owner lists this node in the access list, refused otherwise.
    pub async fn state_write_in(
        &self,
        namespace: Option<&str>,
        key: &str,
        value: Option<serde_json::Value>,
        mode: WriteMode,
    ) -> Result<(), MeshError> {
        let (namespace, key) = (namespace.map(str::to_owned), key.to_owned());
        self.call(|reply| Command::StateWrite { namespace, key, value, mode, private: false, reply })
            .await??;
        Ok(())
    }

    /// Like [`MeshHandle::state_write`] with the value sealed to this
    /// node's own KEM key: replicas store and sync only ciphertext; this
    /// node, and any device with its private key, reads it back in the
    /// clear.
    pub async fn state_write_private(
        &self,
        key: &str,
        value: serde_json::Value,
        mode: WriteMode,
    ) -> Result<(), MeshError> {
        let key = key.to_owned();
        let value = Some(value);
        self.call(|reply| Command::StateWrite { namespace: None, key, value, mode, private: true, reply })
            .await??;
        Ok(())
    }

    /// The value of `key` in `namespace` (this node's own if `None`).
    pub async fn state_get(
        &self,
        namespace: Option<&str>,
        key: &str,
    ) -> Result<Option<serde_json::Value>, MeshError> {
        let (namespace, key) = (namespace.map(str::to_owned), key.to_owned());
        self.call(|reply| Command::StateGet { namespace, key, reply }).await
    }

    /// A namespace (this node's own if `None`) as this node holds it.
    /// Asking for one this node does not replicate starts replicating it:
    /// its values arrive from peers shortly after (as `StateChanged`).
    pub async fn state(&self, namespace: Option<&str>) -> Result<StateView, MeshError> {
        let namespace = namespace.map(str::to_owned);
        self.call(|reply| Command::StateView { namespace, reply }).await
    }

    /// The sealed messages this node holds for offline peers, exactly as it
    /// keeps them (to audit that a holder has ciphertext only).
    pub async fn held_mail(&self) -> Result<Vec<Vec<u8>>, MeshError> {
        self.call(|reply| Command::HeldMail { reply }).await
    }

    /// Peers known to be subscribed to a topic.
    pub async fn topic_peers(&self, topic: &str) -> Result<Vec<PeerId>, MeshError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::TopicPeers { topic, reply }).await
    }

    /// Sends an envelope where its `to` says: a node ID is a direct message
    /// (acknowledged), anything else is a topic to publish on. An empty
    /// `from` becomes this node's ID; a zero `timestamp` becomes now.
    pub async fn send(&self, mut envelope: Envelope) -> Result<Sent, MeshError> {
        let direct = envelope.to.parse::<PeerId>().ok();
        // Direct messages are sealed by the event loop, which holds the
        // sessions; the envelope goes there unencoded.
        let sealed = direct.is_some() && self.quantum_resistant;
        let bytes = self.prepare(&mut envelope, sealed)?;
        let (id, priority, expires_at_ms) =
            (envelope.id.clone(), envelope.priority, envelope.expires_at_ms());
        let (seal, to) = if sealed { (Some(Box::new(envelope)), String::new()) } else { (None, envelope.to) };
        let outbound = net::Outbound { id, priority, expires_at_ms, bytes, seal };
        match direct {
            Some(peer) => {
                self.call(|reply| Command::SendDirect { peer, outbound, reply }).await?.map(Sent::Direct)
            }
            None => {
                let (id, topic) = (outbound.id.clone(), to);
                let publish_topic = topic.clone();
                self.call(|reply| Command::Publish { topic: publish_topic, outbound, reply }).await??;
                Ok(Sent::Broadcast { id, topic })
            }
        }
    }

    /// Publishes a `Thought` with this text (and no payload) on a topic.
    pub async fn publish_text(&self, topic: &str, text: &str) -> Result<Sent, MeshError> {
        self.send(Envelope::new(MsgType::Thought, topic, 5, 300).with_content(text)).await
    }

    /// Sends a `Thought` with this text directly to a node.
    pub async fn send_text(&self, peer: PeerId, text: &str) -> Result<Sent, MeshError> {
        self.send(Envelope::new(MsgType::Thought, peer.to_base58(), 5, 300).with_content(text)).await
    }

    /// Fills in `from` and `timestamp`, checks the envelope the way a
    /// receiver will, and encodes it (once), unless it is to be sealed
    /// (then its size is checked with room for the encryption).
    fn prepare(&self, envelope: &mut Envelope, sealed: bool) -> Result<Vec<u8>, MeshError> {
        if envelope.from.is_empty() {
            envelope.from = self.peer_id_text.to_string();
        }
        if envelope.timestamp == 0 {
            envelope.timestamp = platform::now_ms();
        }
        // Apply the receiver's rules before sending, so the caller gets the
        // error instead of a silent drop on the far side.
        self.limits.check_schema(envelope).map_err(MeshError::InvalidMessage)?;
        self.limits.check_time(envelope, platform::now_ms()).map_err(MeshError::InvalidMessage)?;
        let (bytes, len) = if sealed {
            (Vec::new(), envelope.encoded_len() + crate::crypto::MAX_SEAL_OVERHEAD)
        } else {
            let bytes = envelope.encode();
            let len = bytes.len();
            (bytes, len)
        };
        if len > self.limits.max_envelope_bytes {
            return Err(MeshError::InvalidMessage(Rejection {
                reason: crate::messaging::RejectReason::Oversize,
                detail: format!(
                    "message is {len} bytes encoded{}, limit {}",
                    if sealed { " and sealed" } else { "" },
                    self.limits.max_envelope_bytes
                ),
            }));
        }
        Ok(bytes)
    }

    /// A summary of the metrics (no round trip to the event loop).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// All metrics in the Prometheus text format.
    pub fn prometheus_metrics(&self) -> String {
        self.metrics.encode()
    }

    /// Stops the node: connections close and the event loop ends.
    pub async fn shutdown(&self) -> Result<(), MeshError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
