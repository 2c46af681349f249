//! The public facade: [`Mesh::build`] builds a node and returns a cloneable
//! [`MeshHandle`] (commands with replies over a bounded channel), a
//! [`MeshEvents`] stream and the [`EventLoop`] future that the caller
//! spawns on its executor. The libp2p `Swarm` lives inside the event loop
//! and is never exposed.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    EventLoop, MeshConfig, MeshError, MeshEvent, PeerInfo, Sent, StateView, Status, WriteMode,
    messaging::{Envelope, Limits, MsgType, Rejection},
    metrics::{Metrics, MetricsSnapshot},
    net::{self, Command},
    platform,
    protocols::outbox::{Body, Outbound},
    store::{MailStore, MemoryStore, Store},
};

/// The message type of [`MeshHandle::publish_bytes`] and
/// [`MeshHandle::send_bytes`] envelopes.
pub const BYTES_MSG_TYPE: &str = "data";
/// Their priority.
pub const BYTES_PRIORITY: u8 = 5;
/// Their time to live, in seconds.
pub const BYTES_TTL_SECS: u32 = 300;

/// The entry point.
pub struct Mesh;

impl Mesh {
    /// Builds a node. Spawn the returned [`EventLoop::run`] future; it ends
    /// when every handle is dropped or [`MeshHandle::shutdown`] is called.
    /// Then call [`MeshHandle::listen_on`] and/or [`MeshHandle::dial`].
    pub fn build(config: MeshConfig) -> Result<(MeshHandle, MeshEvents, EventLoop), MeshError> {
        let memory = MemoryStore::default();
        Self::build_with_stores(config, Box::new(memory.clone()), Box::new(memory))
    }

    /// Like [`Mesh::build`], keeping the replicated state in `store` (it is
    /// loaded now; every acknowledged write is durable in it). Held mail,
    /// if the node keeps a mailbox, stays in memory.
    pub fn build_with_store(
        config: MeshConfig,
        store: Box<dyn Store>,
    ) -> Result<(MeshHandle, MeshEvents, EventLoop), MeshError> {
        Self::build_with_stores(config, store, Box::new(MemoryStore::default()))
    }

    /// Like [`Mesh::build_with_store`], keeping the mailbox's messages in
    /// `mail` too.
    pub fn build_with_stores(
        config: MeshConfig,
        store: Box<dyn Store>,
        mail: Box<dyn MailStore>,
    ) -> Result<(MeshHandle, MeshEvents, EventLoop), MeshError> {
        let peer_id = config.identity.peer_id();
        let limits = config.limits.clone();
        let quantum_resistant = config.quantum_resistant;
        let (command_tx, command_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
        let (event_loop, metrics) = net::build(config, store, mail, command_rx, event_tx)?;
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
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
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
        self.call(|reply| Command::StateView { namespace, reveal: true, reply }).await
    }

    /// Like [`state`](Self::state), but this node's private values stay
    /// sealed (`{"$sealed": …}`, ciphertext only): for callers that must
    /// not see them, such as an unauthenticated HTTP request.
    pub async fn state_sealed(&self, namespace: Option<&str>) -> Result<StateView, MeshError> {
        let namespace = namespace.map(str::to_owned);
        self.call(|reply| Command::StateView { namespace, reveal: false, reply }).await
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
        let (body, to) = if sealed {
            (Body::ToSeal(Box::new(envelope)), String::new())
        } else {
            (Body::Encoded(bytes), envelope.to)
        };
        let outbound = Outbound { id, priority, expires_at_ms, body };
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

    /// Publishes `data` on `topic`: an envelope of type `data` with
    /// priority 5 and a TTL of 5 minutes, whose payload is `data`.
    pub async fn publish_bytes(&self, topic: &str, data: Vec<u8>) -> Result<Sent, MeshError> {
        self.send(bytes_envelope(topic.to_owned(), data)).await
    }

    /// Sends `data` directly to `peer`, acknowledged: an envelope like
    /// [`MeshHandle::publish_bytes`]'s.
    pub async fn send_bytes(&self, peer: PeerId, data: Vec<u8>) -> Result<Sent, MeshError> {
        self.send(bytes_envelope(peer.to_base58(), data)).await
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

/// The envelope of [`MeshHandle::publish_bytes`] / [`MeshHandle::send_bytes`].
fn bytes_envelope(to: String, data: Vec<u8>) -> Envelope {
    let kind = MsgType::Custom(BYTES_MSG_TYPE.to_owned());
    Envelope::new(kind, to, BYTES_PRIORITY, BYTES_TTL_SECS).with_payload(data)
}
