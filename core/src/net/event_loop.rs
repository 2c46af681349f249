//! The event loop: the only owner of the `Swarm`. It serves commands from
//! handles, turns swarm events into [`MeshEvent`]s, validates everything
//! that arrives, and keeps the node connected (bootstrap, discovery,
//! reconnection with backoff).

#[path = "e2e_loop.rs"]
mod e2e_loop;
#[path = "state_loop.rs"]
mod state_loop;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::FusedFuture};
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::transport::ListenerId,
    gossipsub, identify,
    kad::{self, QueryResult},
    multiaddr::Protocol,
    ping, relay, request_response,
    swarm::{
        ConnectionId, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::{mpsc, oneshot};

use super::{
    BATCH, Command, Outbound, TICK,
    behaviour::{self, Behaviour, BehaviourEvent, KAD_PROTOCOL},
    codec::{Ack, DirectRequest},
    direct,
    reconnect::{Backoff, Reconnector},
};
use crate::{
    MeshConfig, MeshError,
    crypto::E2e,
    mesh::{Delivery, InboundMessage, MeshEvent, PeerInfo, Status, Via},
    messaging::{Mailbox, PriorityQueue, RejectReason, Rejection, Validator},
    metrics::{Metrics, Route},
    platform::{self, Instant},
    state::{EntryRejection, LocalState, Store},
};

/// Most listen addresses remembered per peer for redialling.
const MAX_ADDRS_PER_PEER: usize = 16;
/// Most peers whose addresses are remembered.
const MAX_KNOWN_PEERS: usize = 4096;
/// Longest topic name.
const MAX_TOPIC_LEN: usize = 256;
/// Most relay reservations a light node holds at once.
const MAX_RESERVATIONS: usize = 2;
/// A connection this young may not have told us its subscriptions yet.
const NEW_CONNECTION: Duration = Duration::from_secs(3);
/// How long a publish waits for subscribers from new connections.
const PUBLISH_GRACE: Duration = Duration::from_secs(2);
/// Least time between two state catch-ups with a peer whose gossip was
/// dropped.
const RESYNC_AFTER_DROPS: Duration = Duration::from_secs(2);
/// How often missing relay reservations are retried.
const RESERVATION_RETRY: Duration = Duration::from_secs(5);

struct PeerState {
    since: Instant,
    connections: HashMap<ConnectionId, Multiaddr>,
    /// Per connection: when a ping was last answered, or `None` if the peer
    /// does not speak ping (then liveness is not checked).
    alive: HashMap<ConnectionId, Option<Instant>>,
    rtt: Option<Duration>,
    agent: Option<String>,
    /// Gossip to this peer was dropped since the last state catch-up.
    resync_due: bool,
    /// When the last catch-up for dropped gossip started.
    resynced: Option<Instant>,
}

/// Why a dial was started, so its outcome reaches the right place.
enum DialPurpose {
    User { target: String, reply: oneshot::Sender<Result<PeerId, MeshError>> },
    Bootstrap { addr: Multiaddr, reply: Option<oneshot::Sender<Result<PeerId, MeshError>>> },
    Reconnect(PeerId),
    Discovery,
    Find(PeerId),
}

impl Default for PeerState {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            connections: HashMap::new(),
            alive: HashMap::new(),
            rtt: None,
            agent: None,
            resync_due: false,
            resynced: None,
        }
    }
}

/// A publish waiting for subscriptions to arrive from new connections.
struct PendingPublish {
    topic: String,
    outbound: Outbound,
    reply: oneshot::Sender<Result<(), MeshError>>,
    deadline: Instant,
}

struct PendingSend {
    peer: PeerId,
    id: String,
    started: Instant,
    reply: oneshot::Sender<Result<Delivery, MeshError>>,
    /// The plaintext of a sealed message (to send again with a new
    /// session, or to leave with a mailbox), and the session that sealed it.
    plain: Option<Box<crate::messaging::Envelope>>,
    session: Option<u64>,
    /// Already sent again once after the peer lost its session.
    retried: bool,
}

struct QueuedSend {
    outbound: Outbound,
    reply: oneshot::Sender<Result<Delivery, MeshError>>,
}

// A transient value that lives for one loop iteration: its size is no
// concern, and boxing would allocate once per swarm event.
#[allow(clippy::large_enum_variant)]
enum Step {
    Swarm(SwarmEvent<BehaviourEvent>),
    Command(Option<Command>),
    Tick,
    FlushState,
}

/// Drives one node. Obtain it from [`crate::Mesh::build`] and spawn
/// [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: MeshConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MeshEvent>,
    metrics: Arc<Metrics>,
    libp2p_metrics: platform::EventRecorder,
    validator: Validator,
    local_id: String,

    peers: HashMap<PeerId, PeerState>,
    known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    reconnect: Reconnector<PeerId>,
    bootstrap: Reconnector<Multiaddr>,
    bootstrap_peers: HashMap<PeerId, Multiaddr>,
    dials: HashMap<ConnectionId, DialPurpose>,
    listens: HashMap<ListenerId, (Multiaddr, oneshot::Sender<Result<Multiaddr, MeshError>>)>,
    listen_addrs: Vec<Multiaddr>,
    listeners: Vec<ListenerId>,

    sends: HashMap<direct::RequestId, PendingSend>,
    in_flight: HashMap<PeerId, usize>,
    queues: HashMap<PeerId, PriorityQueue<QueuedSend>>,

    pending_publishes: Vec<PendingPublish>,
    /// The replicated state (own namespace and replicas).
    state: LocalState<Box<dyn Store + Send>>,
    /// Outstanding state-sync requests.
    syncs: HashMap<request_response::OutboundRequestId, (PeerId, state_loop::SyncStep)>,
    /// Peers known to hold each namespace.
    holders: HashMap<String, HashSet<PeerId>>,
    next_state_sync: Instant,
    logged_state_reasons: HashSet<EntryRejection>,
    /// Namespaces asked for that this node does not own (replicated too).
    wanted: HashSet<String>,
    /// State-sync requests outstanding and waiting, per peer.
    sync_flow: HashMap<PeerId, state_loop::SyncFlow>,
    /// Peers asked to keep a replica of this node's namespace.
    replica_asks: HashMap<PeerId, state_loop::ReplicaAsk>,
    /// Entries written here, waiting to go out together on the state topic.
    outgoing: state_loop::Outgoing,
    /// Topics this node's user subscribed to (their messages are delivered).
    user_topics: HashSet<String>,
    /// Topics joined only to relay for peers (gossip hub).
    hub_topics: HashSet<String>,

    /// Connected peers that offer relay v2 circuits.
    relays: HashSet<PeerId>,
    /// Our reservations, by relay.
    reservations: HashMap<PeerId, ListenerId>,
    next_reservation_check: Instant,

    find_queries: HashMap<kad::QueryId, PeerId>,
    find_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), MeshError>>>>,

    next_discovery: Instant,
    logged_reasons: HashSet<RejectReason>,

    /// End-to-end sessions and known KEM keys.
    e2e: E2e,
    /// Sealed sends waiting for their recipient's KEM key.
    awaiting_key: HashMap<PeerId, Vec<QueuedSend>>,
    /// Key requests outstanding, per node whose key is asked for.
    key_asks_open: HashMap<PeerId, usize>,
    /// Outstanding requests of the e2e protocol.
    e2e_asks: HashMap<request_response::OutboundRequestId, e2e_loop::E2eAsk>,
    /// Messages left with mailbox holders, waiting for their answers.
    deposits: HashMap<u64, e2e_loop::Deposit>,
    next_deposit: u64,
    /// This node's own signed KEM key is in its namespace.
    kem_key_published: bool,
    /// Messages held for offline peers.
    mailbox: Mailbox,
    /// Recipients with a delivery of held messages under way.
    mail_in_flight: HashSet<PeerId>,
    /// Recipients that could not take all their mail yet, and when to try again.
    mail_retry: HashMap<PeerId, e2e_loop::MailRetry>,
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter only: a failing random source degrades to no jitter.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        state: LocalState<Box<dyn Store + Send>>,
        config: MeshConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<MeshEvent>,
        metrics: Arc<Metrics>,
        libp2p_metrics: platform::EventRecorder,
    ) -> Self {
        let policy = Backoff {
            initial: config.timing.reconnect_initial,
            max: config.timing.reconnect_max,
            max_attempts: config.timing.reconnect_attempts,
        };
        let now = Instant::now();
        let mut bootstrap = Reconnector::new(policy.clone());
        let mut bootstrap_peers = HashMap::new();
        for addr in &config.bootstrap {
            bootstrap.track_now(addr.clone(), true, now);
            if let Some(peer) = peer_of(addr) {
                bootstrap_peers.insert(peer, addr.clone());
            }
        }
        let local_id = swarm.local_peer_id().to_base58();
        Self {
            validator: Validator::new(config.limits.clone()),
            next_discovery: now + config.timing.discovery_interval,
            swarm,
            commands,
            events,
            metrics,
            libp2p_metrics,
            local_id,
            peers: HashMap::new(),
            known_addrs: HashMap::new(),
            reconnect: Reconnector::new(policy),
            bootstrap,
            bootstrap_peers,
            dials: HashMap::new(),
            listens: HashMap::new(),
            listen_addrs: Vec::new(),
            listeners: Vec::new(),
            sends: HashMap::new(),
            in_flight: HashMap::new(),
            queues: HashMap::new(),
            pending_publishes: Vec::new(),
            state,
            syncs: HashMap::new(),
            holders: HashMap::new(),
            next_state_sync: now + config.timing.state_sync_interval,
            logged_state_reasons: HashSet::new(),
            wanted: HashSet::new(),
            replica_asks: HashMap::new(),
            sync_flow: HashMap::new(),
            outgoing: state_loop::Outgoing::default(),
            user_topics: HashSet::new(),
            hub_topics: HashSet::new(),
            relays: HashSet::new(),
            reservations: HashMap::new(),
            next_reservation_check: now,
            find_queries: HashMap::new(),
            find_waiters: HashMap::new(),
            logged_reasons: HashSet::new(),
            e2e: E2e::new(config.identity.clone(), config.kem_level).with_rekey(config.e2e_rekey),
            awaiting_key: HashMap::new(),
            key_asks_open: HashMap::new(),
            e2e_asks: HashMap::new(),
            deposits: HashMap::new(),
            next_deposit: 0,
            kem_key_published: false,
            mailbox: Mailbox::new(config.mailbox_limits.clone()),
            mail_in_flight: HashSet::new(),
            mail_retry: HashMap::new(),
            config,
        }
    }

    /// Runs the node until [`crate::MeshHandle::shutdown`] is called or every
    /// handle is dropped.
    pub async fn run(mut self) {
        self.join_state_topic();
        self.count_state();
        self.restore_mail();
        if self.config.quantum_resistant {
            // Published from the start, so that a node that goes offline
            // before it ever used end-to-end encryption can still be written
            // to: senders find its key with the replicas of its namespace.
            self.publish_kem_key();
        }
        self.on_tick();
        let mut tick = platform::sleep(TICK).fuse();
        let mut linger = futures::future::Fuse::terminated();
        let shutdown_reply = loop {
            if linger.is_terminated() && self.outgoing.is_waiting() {
                linger = platform::sleep(state_loop::LINGER).fuse();
            }
            let step = futures::select! {
                event = self.swarm.select_next_some() => Step::Swarm(event),
                command = futures::future::poll_fn(|cx| self.commands.poll_recv(cx)).fuse() => Step::Command(command),
                _ = tick => Step::Tick,
                _ = linger => Step::FlushState,
            };
            match step {
                Step::Swarm(event) => {
                    self.on_swarm_event(event);
                    // Under load many events are ready at once: take them
                    // here rather than one per trip through `select!`.
                    for _ in 0..BATCH {
                        let Some(Some(event)) = self.swarm.next().now_or_never() else { break };
                        self.on_swarm_event(event);
                    }
                }
                Step::Command(Some(command)) => {
                    if let Some(reply) = self.on_command(command) {
                        break Some(reply);
                    }
                    let mut stop = None;
                    for _ in 0..BATCH {
                        let Ok(command) = self.commands.try_recv() else { break };
                        stop = self.on_command(command);
                        if stop.is_some() {
                            break;
                        }
                    }
                    if stop.is_some() {
                        break stop;
                    }
                }
                Step::Command(None) => break None,
                Step::Tick => {
                    tick = platform::sleep(TICK).fuse();
                    self.on_tick();
                }
                Step::FlushState => self.flush_state(),
            }
        };
        // Entries written in the last moments go out before the connections close.
        self.flush_state();
        // Close every listener and connection before saying we are done, so
        // the caller may reuse the addresses at once.
        for id in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
        }
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn emit(&mut self, event: MeshEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            tracing::debug!("event stream full; event dropped");
        }
    }

    /// Hands a validated message to the application.
    fn deliver(&mut self, message: InboundMessage) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(MeshEvent::Message(message)) {
            self.count_rejection(
                None,
                &Rejection { reason: RejectReason::QueueFull, detail: "event stream full".into() },
            );
        }
    }

    /// Counts a rejection and logs it: the first of each reason at `warn`,
    /// the rest at `debug`, so a hostile peer cannot flood the log.
    fn count_rejection(&mut self, peer: Option<&PeerId>, rejection: &Rejection) {
        self.metrics.dropped(rejection.reason);
        let from = peer.map(|p| p.to_string()).unwrap_or_else(|| "local".into());
        if self.logged_reasons.insert(rejection.reason) {
            tracing::warn!(%from, "dropped message: {rejection} (further drops for this reason are logged at debug)");
        } else {
            tracing::debug!(%from, "dropped message: {rejection}");
        }
    }

    // ---- timers -------------------------------------------------------

    fn on_tick(&mut self) {
        let now = Instant::now();
        let full = self.peers.len() >= self.config.max_peers;
        for addr in self.bootstrap.due(now) {
            if full {
                self.bootstrap.dial_failed(&addr, now, random_u64());
                continue;
            }
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            if let Err(e) = self.dial(opts, DialPurpose::Bootstrap { addr: addr.clone(), reply: None }) {
                tracing::debug!(%addr, "bootstrap dial not started: {e}");
                self.bootstrap.dial_failed(&addr, now, random_u64());
            }
        }
        for peer in self.reconnect.due(now) {
            if self.peers.contains_key(&peer) {
                self.reconnect.connected(&peer);
                continue;
            }
            let addrs = self.known_addrs.get(&peer).cloned().unwrap_or_default();
            if addrs.is_empty() || full {
                self.reconnect.dial_failed(&peer, now, random_u64());
                continue;
            }
            tracing::debug!(%peer, "reconnecting");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if self.dial(opts, DialPurpose::Reconnect(peer)).is_err() {
                self.reconnect.dial_failed(&peer, now, random_u64());
            }
        }
        if !self.pending_publishes.is_empty() {
            self.retry_publishes(now);
        }
        self.close_silent_connections(now);
        self.resync_dropped(now);
        self.seek_replicas(now);
        self.expire_mail();
        self.retry_mail(now);
        if now >= self.next_state_sync {
            self.next_state_sync = now + self.config.timing.state_sync_interval;
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            for peer in peers {
                self.start_state_sync(peer);
            }
        }
        if now >= self.next_reservation_check {
            self.next_reservation_check = now + RESERVATION_RETRY;
            let relays: Vec<PeerId> = self.relays.iter().copied().collect();
            for relay in relays {
                self.reserve(relay);
            }
        }
        if now >= self.next_discovery {
            self.next_discovery = now + self.config.timing.discovery_interval;
            if !self.peers.is_empty() {
                self.swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
            }
        }
    }

    fn dial(&mut self, opts: DialOpts, purpose: DialPurpose) -> Result<(), libp2p::swarm::DialError> {
        let id = opts.connection_id();
        self.swarm.dial(opts)?;
        self.dials.insert(id, purpose);
        Ok(())
    }

    /// Dials a peer found by discovery, if there is room for it.
    fn dial_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.peers.contains_key(&peer)
            || self.peers.len() >= self.config.max_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let _ = self.dial(opts, DialPurpose::Discovery);
    }

    fn remember_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if addrs.is_empty() {
            return;
        }
        if self.known_addrs.len() >= MAX_KNOWN_PEERS && !self.known_addrs.contains_key(&peer) {
            let (peers, reconnect) = (&self.peers, &self.reconnect);
            self.known_addrs.retain(|p, _| peers.contains_key(p) || reconnect.contains(p));
        }
        self.known_addrs.insert(peer, addrs);
    }

    /// Our address of a peer over a direct (not relayed) connection, without
    /// `/p2p/…`.
    fn direct_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        let state = self.peers.get(peer)?;
        let addr = state.connections.values().find(|a| !is_relayed(a))?;
        Some(addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect())
    }

    /// Takes a reservation on `relay` if this node wants one and has room.
    fn reserve(&mut self, relay: PeerId) {
        if !self.config.auto_relay
            || self.reservations.contains_key(&relay)
            || self.reservations.len() >= MAX_RESERVATIONS
        {
            return;
        }
        let Some(addr) = self.direct_addr(&relay) else { return };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::debug!(%circuit, "asking for a relay reservation");
                self.reservations.insert(relay, id);
            }
            Err(e) => tracing::debug!(%circuit, "cannot ask for a relay reservation: {e}"),
        }
    }

    /// Addresses that reach `peer` through each relay we are connected to.
    fn circuit_addrs(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .filter(|relay| **relay != peer)
            .filter_map(|relay| {
                let addr = self.direct_addr(relay)?;
                Some(addr.with(Protocol::P2p(*relay)).with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
            })
            .collect()
    }

    // ---- swarm events -------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        let local = *self.swarm.local_peer_id();
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { listener_id, address } => {
                let full = address.clone().with_p2p(local).unwrap_or(address.clone());
                tracing::info!("listening on {full}");
                if self.config.relay_server {
                    // A server node's listen addresses are where others reach
                    // it; relay reservations and the DHT need them.
                    self.swarm.add_external_address(address);
                }
                self.listen_addrs.push(full.clone());
                if let Some((_, reply)) = self.listens.remove(&listener_id) {
                    let _ = reply.send(Ok(full.clone()));
                }
                self.emit(MeshEvent::NewListenAddr(full));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.clone().with_p2p(local).unwrap_or(address.clone());
                self.listen_addrs.retain(|a| *a != full);
                self.swarm.remove_external_address(&address);
                self.emit(MeshEvent::ExpiredListenAddr(full));
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                self.listeners.retain(|id| *id != listener_id);
                self.reservations.retain(|relay, id| {
                    let keep = *id != listener_id;
                    if !keep {
                        tracing::info!(%relay, "relay reservation ended: {reason:?}");
                    }
                    keep
                });
                if let Some((addr, reply)) = self.listens.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(MeshError::Listen { addr, reason }));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!("listener error: {error}");
                if let Some((addr, reply)) = self.listens.remove(&listener_id) {
                    let _ = reply.send(Err(MeshError::Listen { addr, reason: error.to_string() }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                let address = match &endpoint {
                    // Someone reached us through our relay reservation: all
                    // we know of them is `/p2p/<id>`; keep the circuit (our
                    // listen address on the relay) so the connection counts
                    // as relayed.
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
                        local_addr.clone()
                    }
                    _ => endpoint.get_remote_address().clone(),
                };
                let state = self.peers.entry(peer_id).or_default();
                state.connections.insert(connection_id, address.clone());
                state.alive.insert(connection_id, Some(Instant::now()));
                match self.dials.remove(&connection_id) {
                    Some(DialPurpose::User { reply, .. }) => {
                        let _ = reply.send(Ok(peer_id));
                    }
                    Some(DialPurpose::Bootstrap { addr, reply }) => {
                        self.bootstrap_peers.insert(peer_id, addr);
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(peer_id));
                        }
                    }
                    _ => {}
                }
                if let Some(addr) = self.bootstrap_peers.get(&peer_id) {
                    self.bootstrap.connected(addr);
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, %address, "peer connected");
                    self.metrics.set_peers(self.peers.len());
                    self.reconnect.connected(&peer_id);
                    for waiter in self.find_waiters.remove(&peer_id).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                    if self.peers.len() == 1 {
                        // First contact with the mesh: look ourselves up to
                        // learn the peers around us.
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                    self.emit(MeshEvent::PeerConnected { peer: peer_id, address });
                    self.flush_mail(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.remove(&connection_id);
                    state.alive.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.state_peer_gone(&peer_id);
                    self.relays.remove(&peer_id);
                    for topic in self.hub_topics.clone() {
                        self.leave_hub_topic_if_unused(&topic);
                    }
                    if let Some(id) = self.reservations.remove(&peer_id) {
                        self.swarm.remove_listener(id);
                    }
                    self.metrics.set_peers(self.peers.len());
                    tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
                    let now = Instant::now();
                    if let Some(addr) = self.bootstrap_peers.get(&peer_id) {
                        self.bootstrap.disconnected(addr.clone(), now, random_u64());
                    } else if self.known_addrs.contains_key(&peer_id) {
                        self.reconnect.disconnected(peer_id, now, random_u64());
                    }
                    self.emit(MeshEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                let now = Instant::now();
                match self.dials.remove(&connection_id) {
                    Some(DialPurpose::User { target, reply }) => {
                        let _ = reply.send(Err(MeshError::Dial { target, reason: error.to_string() }));
                    }
                    Some(DialPurpose::Bootstrap { addr, reply }) => {
                        tracing::debug!(%addr, "bootstrap dial failed: {error}");
                        self.bootstrap.dial_failed(&addr, now, random_u64());
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(MeshError::Dial {
                                target: addr.to_string(),
                                reason: error.to_string(),
                            }));
                        }
                    }
                    Some(DialPurpose::Reconnect(peer)) => {
                        tracing::debug!(%peer, "reconnect failed: {error}");
                        self.reconnect.dial_failed(&peer, now, random_u64());
                    }
                    Some(DialPurpose::Find(peer)) => {
                        for waiter in self.find_waiters.remove(&peer).unwrap_or_default() {
                            let _ = waiter.send(Err(MeshError::Dial {
                                target: peer.to_string(),
                                reason: error.to_string(),
                            }));
                        }
                    }
                    Some(DialPurpose::Discovery) | None => {
                        tracing::debug!(peer = ?peer_id, "dial failed: {error}");
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(%send_back_addr, "incoming connection failed: {error}");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("external address confirmed: {address}");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                self.libp2p_metrics.record(&event);
                self.on_gossipsub(event);
            }
            BehaviourEvent::Direct(event) => self.on_direct(event),
            BehaviourEvent::StateSync(event) => self.on_state_sync(event),
            BehaviourEvent::E2e(event) => self.on_e2e(event),
            BehaviourEvent::Identify(event) => {
                self.libp2p_metrics.record(&event);
                self.on_identify(event);
            }
            BehaviourEvent::Kad(event) => {
                self.libp2p_metrics.record(&event);
                self.on_kad(event);
            }
            BehaviourEvent::Ping(event) => {
                self.libp2p_metrics.record(&event);
                self.on_ping(event);
            }
            BehaviourEvent::Mdns(event) => {
                for (peer, addr) in platform::mdns_discovered(event) {
                    tracing::debug!(%peer, %addr, "found on the local network");
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    self.dial_discovered(peer, vec![addr]);
                }
            }
            BehaviourEvent::RelayClient(event) => match event {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                    if !renewal {
                        tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    }
                }
                other => tracing::debug!("relay client: {other:?}"),
            },
            BehaviourEvent::RelayServer(event) => {
                tracing::debug!("relay: {event:?}");
                let (reservations, circuits) = platform::relay_change(&event);
                self.metrics.relay_changed(reservations, circuits);
            }
            BehaviourEvent::Autonat(event) => {
                if let Some(status) = platform::autonat_status(event) {
                    tracing::info!("reachability: {status}");
                }
            }
            BehaviourEvent::Dcutr(event) => {
                tracing::debug!("dcutr: {event:?}");
            }
            BehaviourEvent::Limits(never) | BehaviourEvent::PeerLimit(never) => match never {},
        }
    }

    /// Starts a state catch-up with each peer whose gossip was dropped, at
    /// most once per [`RESYNC_AFTER_DROPS`] each.
    fn resync_dropped(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| {
                p.resync_due && p.resynced.is_none_or(|at| now.duration_since(at) >= RESYNC_AFTER_DROPS)
            })
            .map(|(id, p)| {
                p.resync_due = false;
                p.resynced = Some(now);
                *id
            })
            .collect();
        for peer in due {
            self.start_state_sync(peer);
        }
    }

    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match &event {
            gossipsub::Event::Subscribed { peer_id, topic } if self.config.gossip_hub => {
                let topic = topic.as_str();
                // The state topic is always joined, never as a hub topic.
                let joined = self.user_topics.contains(topic)
                    || self.hub_topics.contains(topic)
                    || topic == super::state_sync::STATE_TOPIC;
                if !joined && self.hub_topics.len() < self.config.hub_topics {
                    tracing::debug!(peer = %peer_id, %topic, "joining topic as a hub");
                    if self.join_topic(topic).is_ok() {
                        self.hub_topics.insert(topic.to_owned());
                    }
                }
            }
            gossipsub::Event::Unsubscribed { topic, .. } => self.leave_hub_topic_if_unused(topic.as_str()),
            _ => {}
        }
        if let gossipsub::Event::Subscribed { peer_id, topic } = &event
            && topic.as_str() == super::state_sync::STATE_TOPIC
        {
            // Catch up once the peer gets live entries from us: whatever we
            // published before we knew it listened comes by reconciliation.
            self.start_state_sync(*peer_id);
        }
        if let gossipsub::Event::SlowPeer { peer_id, failed_messages } = &event
            && let Some(peer) = self.peers.get_mut(peer_id)
        {
            // Gossip to this peer was dropped (its queue overflowed or timed
            // out): state entries among it come by a catch-up instead (see
            // `resync_dropped`).
            tracing::debug!(peer = %peer_id, ?failed_messages, "gossip dropped");
            peer.resync_due = true;
        }
        if matches!(event, gossipsub::Event::Subscribed { .. }) && !self.pending_publishes.is_empty() {
            self.retry_publishes(Instant::now());
        }
        if let gossipsub::Event::Message { propagation_source, message_id, message } = event {
            if message.topic.as_str() == super::state_sync::STATE_TOPIC {
                let acceptance = self.on_state_gossip(&message.data, message.source);
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
                return;
            }
            let topic = message.topic.as_str().to_owned();
            let now = platform::now_ms();
            let result = match &message.source {
                Some(source) => self.validator.accept(&message.data, source, &topic, now),
                None => {
                    Err(Rejection { reason: RejectReason::Schema, detail: "unsigned gossip message".into() })
                }
            };
            let acceptance = match result {
                Ok(envelope) => {
                    self.metrics.message_in(Route::Gossip);
                    let sender = message.source.expect("validated messages are signed");
                    // Hub topics are relayed, not delivered.
                    if self.user_topics.contains(&topic) {
                        self.deliver(InboundMessage { envelope, sender, via: Via::Topic(topic), e2e: None });
                    }
                    gossipsub::MessageAcceptance::Accept
                }
                Err(rejection) => {
                    self.count_rejection(message.source.as_ref(), &rejection);
                    if rejection.reason.is_peer_fault() {
                        gossipsub::MessageAcceptance::Reject
                    } else {
                        gossipsub::MessageAcceptance::Ignore
                    }
                }
            };
            self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                &message_id,
                &propagation_source,
                acceptance,
            );
        }
    }

    fn on_direct(&mut self, event: direct::Event) {
        match event {
            direct::Event::Request { peer, request, channel } => {
                let outcome = match request {
                    DirectRequest::Oversize(len) => Err(Rejection {
                        reason: RejectReason::Oversize,
                        detail: format!(
                            "{len} bytes announced, limit {}",
                            self.validator.limits().max_envelope_bytes
                        ),
                    }),
                    DirectRequest::Frame(bytes) => self.accept_direct(&bytes, &peer),
                };
                let ack = match outcome {
                    Ok(message) => {
                        self.metrics.message_in(Route::Direct);
                        let id = message.envelope.id.clone();
                        self.deliver(message);
                        Ack { id, rejected: None }
                    }
                    Err(rejection) => {
                        self.count_rejection(Some(&peer), &rejection);
                        Ack { id: String::new(), rejected: Some(rejection.reason.as_str().to_owned()) }
                    }
                };
                self.swarm.behaviour_mut().direct.send_response(channel, ack);
            }
            direct::Event::Response { request_id, response } => {
                if let Some(pending) = self.sends.remove(&request_id) {
                    let peer = pending.peer;
                    let rtt = pending.started.elapsed();
                    if response.rejected.as_deref() == Some(RejectReason::NoSession.as_str()) {
                        let Some(pending) = self.retry_sealed(pending, true) else {
                            self.send_finished(peer);
                            return;
                        };
                        let reason = RejectReason::NoSession.as_str().to_owned();
                        let _ = pending.reply.send(Err(MeshError::RejectedByPeer { peer, reason }));
                        self.send_finished(peer);
                        return;
                    }
                    let result = match response.rejected {
                        None => {
                            self.metrics.delivered(rtt.as_secs_f64());
                            if let Some(session) = pending.session {
                                self.e2e.confirm(&peer, session);
                            }
                            let encrypted = pending.session.is_some();
                            Ok(Delivery { id: pending.id, rtt, held_by: None, encrypted })
                        }
                        Some(reason) => Err(MeshError::RejectedByPeer {
                            peer: pending.peer,
                            reason: reason.chars().take(64).collect(),
                        }),
                    };
                    let _ = pending.reply.send(result);
                    self.send_finished(pending.peer);
                }
            }
            direct::Event::OutboundFailure { request_id, error } => {
                if let Some(pending) = self.sends.remove(&request_id) {
                    let peer = pending.peer;
                    let Some(pending) = self.recover_send(pending, &error) else {
                        self.send_finished(peer);
                        return;
                    };
                    let reason = error.to_string();
                    let _ = pending.reply.send(Err(MeshError::Delivery { peer: pending.peer, reason }));
                    self.send_finished(pending.peer);
                }
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            if let Some(state) = self.peers.get_mut(&peer_id) {
                state.agent = Some(info.agent_version.clone());
            }
            let dialable: Vec<Multiaddr> =
                info.listen_addrs.into_iter().filter(|a| !is_relayed(a)).take(MAX_ADDRS_PER_PEER).collect();
            if info.protocols.contains(&KAD_PROTOCOL) {
                for addr in &dialable {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr.clone());
                }
            }
            self.remember_addrs(peer_id, dialable);
            if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) && self.peers.contains_key(&peer_id) {
                self.relays.insert(peer_id);
                self.reserve(peer_id);
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, addresses, is_new_peer: true, .. } => {
                self.dial_discovered(peer, addresses.into_vec());
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetClosestPeers(result),
                step,
                ..
            } => {
                let Some(target) = self.find_queries.get(&id).copied() else {
                    return;
                };
                let found = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let addrs: Vec<Multiaddr> =
                    found.into_iter().filter(|p| p.peer_id == target).flat_map(|p| p.addrs).collect();
                if !addrs.is_empty() && !self.peers.contains_key(&target) {
                    self.find_queries.remove(&id);
                    let opts = DialOpts::peer_id(target).addresses(addrs).build();
                    if let Err(e) = self.dial(opts, DialPurpose::Find(target)) {
                        for waiter in self.find_waiters.remove(&target).unwrap_or_default() {
                            let _ = waiter.send(Err(MeshError::Dial {
                                target: target.to_string(),
                                reason: e.to_string(),
                            }));
                        }
                    }
                } else if step.last {
                    self.find_queries.remove(&id);
                    if !self.peers.contains_key(&target) {
                        for waiter in self.find_waiters.remove(&target).unwrap_or_default() {
                            let _ = waiter.send(Err(MeshError::PeerNotFound(target)));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        let Some(state) = self.peers.get_mut(&event.peer) else { return };
        match event.result {
            Ok(rtt) => {
                state.rtt = Some(rtt);
                state.alive.insert(event.connection, Some(Instant::now()));
            }
            Err(ping::Failure::Unsupported) => {
                tracing::debug!(peer = %event.peer, "peer does not support ping");
                state.alive.insert(event.connection, None);
            }
            Err(e) => {
                tracing::debug!(peer = %event.peer, "ping failed ({e}); closing connection");
                self.swarm.close_connection(event.connection);
            }
        }
    }

    /// Closes connections whose pings stopped being answered. libp2p's ping
    /// forgives one failure and then waits for a new stream's negotiation to
    /// time out, so a peer that vanished (a closed browser tab on
    /// WebRTC-direct never says goodbye) would linger for ~20 s.
    fn close_silent_connections(&mut self, now: Instant) {
        let timing = &self.config.timing;
        let limit = timing.ping_interval + timing.ping_timeout;
        let mut silent = Vec::new();
        for (peer, state) in &self.peers {
            for (connection, alive) in &state.alive {
                if alive.is_some_and(|at| now.duration_since(at) > limit) {
                    silent.push((*peer, *connection));
                }
            }
        }
        for (peer, connection) in silent {
            tracing::debug!(%peer, "no ping answered for {limit:?}; closing connection");
            if let Some(state) = self.peers.get_mut(&peer) {
                state.alive.insert(connection, None);
            }
            self.swarm.close_connection(connection);
        }
    }

    // ---- commands -----------------------------------------------------

    /// Serves a command; returns the reply channel when it asks to shut down.
    fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.listeners.push(id);
                    self.listens.insert(id, (addr, reply));
                }
                Err(e) => {
                    let reason = match e.to_string() {
                        text if text.is_empty() => format!("{e:?}"),
                        text => text,
                    };
                    let _ = reply.send(Err(MeshError::Listen { addr, reason }));
                }
            },
            Command::Dial { addr, reply } => self.dial_user(addr, reply),
            Command::Join { addr, reply } => self.join(addr, reply),
            Command::FindPeer { peer, reply } => self.find_peer(peer, reply),
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Subscribe { topic, reply } if topic == super::state_sync::STATE_TOPIC => {
                let reason = "reserved for state replication".to_owned();
                let _ = reply.send(Err(MeshError::Subscribe { topic, reason }));
            }
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::Unsubscribe { topic, reply } => {
                let was = self.user_topics.remove(&topic);
                if was {
                    if self.config.gossip_hub && self.topic_has_peers(&topic) {
                        // Peers still use it: keep relaying it.
                        self.hub_topics.insert(topic);
                    } else {
                        self.swarm.behaviour_mut().gossipsub.unsubscribe(&gossipsub::IdentTopic::new(topic));
                    }
                }
                let _ = reply.send(was);
            }
            Command::TopicPeers { topic, reply } => {
                let hash = gossipsub::IdentTopic::new(topic).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(peer, _)| *peer)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Publish { topic, outbound, reply } => {
                let now = Instant::now();
                let fresh = self.peers.values().any(|p| now.duration_since(p.since) < NEW_CONNECTION);
                match self.publish(&topic, &outbound) {
                    // Just connected: the peers' subscriptions may still be on
                    // their way. Try again as they arrive, for a little while.
                    Err(MeshError::NoSubscribers(_)) if fresh => {
                        self.pending_publishes.push(PendingPublish {
                            topic,
                            outbound,
                            reply,
                            deadline: now + PUBLISH_GRACE,
                        });
                    }
                    result => {
                        let _ = reply.send(result);
                    }
                }
            }
            Command::SendDirect { peer, outbound, reply } => self.send_direct(peer, outbound, reply),
            Command::StateWrite { namespace, key, value, mode, private, reply } => {
                self.state_write(namespace, key, value, mode, private, reply)
            }
            Command::StateGet { namespace, key, reply } => {
                let _ = reply.send(self.state_get(namespace, &key));
            }
            Command::StateView { namespace, reply } => {
                let _ = reply.send(self.state_view(namespace));
            }
            Command::HeldMail { reply } => {
                let _ = reply.send(self.held_frames());
            }
            Command::Shutdown { reply } => {
                tracing::info!("shutting down");
                return Some(reply);
            }
        }
        None
    }

    fn dial_user(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, MeshError>>) {
        let target = addr.to_string();
        let opts = match peer_of(&addr) {
            Some(peer) if self.peers.contains_key(&peer) => {
                let _ = reply.send(Ok(peer));
                return;
            }
            Some(peer) => {
                DialOpts::peer_id(peer).addresses(vec![addr]).condition(PeerCondition::Always).build()
            }
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, DialPurpose::User { target, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(MeshError::Dial { target, reason: e.to_string() }));
            }
        }
    }

    /// Adds a bootstrap address (kept connected, redialled with backoff) and
    /// dials it now; `reply` gets the outcome of this first dial.
    fn join(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, MeshError>>) {
        if let Some(peer) = peer_of(&addr) {
            self.bootstrap_peers.insert(peer, addr.clone());
            if self.peers.contains_key(&peer) {
                self.bootstrap.track_dialing(addr.clone(), true);
                self.bootstrap.connected(&addr);
                let _ = reply.send(Ok(peer));
                return;
            }
        }
        self.bootstrap.track_dialing(addr.clone(), true);
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, DialPurpose::Bootstrap { addr, reply: Some(reply) });
            }
            Err(e) => {
                self.bootstrap.dial_failed(&addr, Instant::now(), random_u64());
                let _ = reply.send(Err(MeshError::Dial { target: addr.to_string(), reason: e.to_string() }));
            }
        }
    }

    fn find_peer(&mut self, peer: PeerId, reply: oneshot::Sender<Result<(), MeshError>>) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply
                .send(Err(MeshError::Dial { target: peer.to_string(), reason: "that is this node".into() }));
            return;
        }
        if self.peers.contains_key(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.find_waiters.entry(peer).or_default().push(reply);
        let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        self.find_queries.insert(query, peer);
    }

    /// The user subscribes: messages on `topic` are delivered from now on.
    fn subscribe(&mut self, topic: String) -> Result<bool, MeshError> {
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(MeshError::Subscribe {
                topic,
                reason: format!("topic names are 1-{MAX_TOPIC_LEN} bytes"),
            });
        }
        if self.user_topics.contains(&topic) {
            return Ok(false);
        }
        if !self.hub_topics.remove(&topic) {
            self.join_topic(&topic)?;
        }
        self.user_topics.insert(topic);
        Ok(true)
    }

    /// Subscribes in gossipsub, with our topic scoring.
    fn join_topic(&mut self, topic: &str) -> Result<(), MeshError> {
        let ident = gossipsub::IdentTopic::new(topic);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub
            .subscribe(&ident)
            .map_err(|e| MeshError::Subscribe { topic: topic.to_owned(), reason: e.to_string() })?;
        if let Err(e) = gossipsub.set_topic_params(ident, behaviour::topic_score_params()) {
            tracing::warn!("topic scoring not set: {e}");
        }
        Ok(())
    }

    fn topic_has_peers(&self, topic: &str) -> bool {
        let hash = gossipsub::IdentTopic::new(topic).hash();
        self.swarm.behaviour().gossipsub.all_peers().any(|(_, topics)| topics.contains(&&hash))
    }

    /// Leaves a hub topic nobody uses any more.
    fn leave_hub_topic_if_unused(&mut self, topic: &str) {
        if self.hub_topics.contains(topic) && !self.topic_has_peers(topic) {
            self.hub_topics.remove(topic);
            self.swarm.behaviour_mut().gossipsub.unsubscribe(&gossipsub::IdentTopic::new(topic));
        }
    }

    /// Retries publishes that were waiting for subscribers.
    fn retry_publishes(&mut self, now: Instant) {
        for pending in std::mem::take(&mut self.pending_publishes) {
            match self.publish(&pending.topic, &pending.outbound) {
                Err(MeshError::NoSubscribers(_)) if now < pending.deadline => {
                    self.pending_publishes.push(pending)
                }
                result => {
                    let _ = pending.reply.send(result);
                }
            }
        }
    }

    fn publish(&mut self, topic: &str, outbound: &Outbound) -> Result<(), MeshError> {
        if topic == super::state_sync::STATE_TOPIC {
            return Err(MeshError::Publish {
                topic: topic.to_owned(),
                reason: "reserved for state replication".to_owned(),
            });
        }
        let ident = gossipsub::IdentTopic::new(topic);
        let topic = topic.to_owned();
        match self.swarm.behaviour_mut().gossipsub.publish(ident, outbound.bytes.clone()) {
            Ok(_) => {
                self.metrics.message_out(Route::Gossip);
                Ok(())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(MeshError::NoSubscribers(topic)),
            Err(gossipsub::PublishError::Duplicate) => Err(MeshError::Publish {
                topic,
                reason: format!("message {} was already published", outbound.id),
            }),
            Err(e) => Err(MeshError::Publish { topic, reason: e.to_string() }),
        }
    }

    fn send_direct(
        &mut self,
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
    ) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err(MeshError::Delivery { peer, reason: "that is this node".into() }));
            return;
        }
        let (outbound, reply) = if outbound.seal.is_some() {
            match self.await_kem_key(peer, outbound, reply) {
                Some(ready) => ready,
                None => return,
            }
        } else {
            (outbound, reply)
        };
        if self.in_flight.get(&peer).copied().unwrap_or(0) < self.config.direct_window {
            self.start_send(peer, outbound, reply);
            return;
        }
        let capacity = self.config.direct_queue;
        let queue = self.queues.entry(peer).or_insert_with(|| PriorityQueue::new(capacity));
        if let Err(full) = queue.push(outbound.priority, QueuedSend { outbound, reply }) {
            let _ = full.0.reply.send(Err(MeshError::QueueFull(peer)));
        }
    }

    fn start_send(
        &mut self,
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
    ) {
        self.start_send_with(peer, outbound, reply, false)
    }

    fn start_send_with(
        &mut self,
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
        retried: bool,
    ) {
        let (bytes, plain, session) = match outbound.seal {
            Some(plain) => match self.seal_for(&peer, &plain) {
                Ok((bytes, session)) => (bytes, Some(plain), Some(session)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            None => (outbound.bytes, None, None),
        };
        // Not connected: besides what discovery knows, try a circuit through
        // every relay we are connected to (how browser pages, which cannot be
        // dialled, reach each other).
        let via = if self.peers.contains_key(&peer) { Vec::new() } else { self.circuit_addrs(peer) };
        let request_id = self.swarm.behaviour_mut().direct.send_request(&peer, bytes, via);
        *self.in_flight.entry(peer).or_default() += 1;
        self.metrics.message_out(Route::Direct);
        self.sends.insert(
            request_id,
            PendingSend { peer, id: outbound.id, started: Instant::now(), reply, plain, session, retried },
        );
    }

    /// A send to `peer` completed: let the next queued one (highest
    /// priority first) take its slot.
    fn send_finished(&mut self, peer: PeerId) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
        let now = platform::now_ms();
        while self.in_flight.get(&peer).copied().unwrap_or(0) < self.config.direct_window {
            let Some(queue) = self.queues.get_mut(&peer) else {
                return;
            };
            let Some(next) = queue.pop() else {
                self.queues.remove(&peer);
                return;
            };
            if next.outbound.expires_at_ms <= now {
                let _ = next.reply.send(Err(MeshError::InvalidMessage(Rejection {
                    reason: RejectReason::Expired,
                    detail: "expired while waiting in the send queue".into(),
                })));
                continue;
            }
            self.start_send(peer, next.outbound, next.reply);
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut infos: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, state)| PeerInfo {
                peer_id: peer.to_base58(),
                transport: state
                    .connections
                    .values()
                    .next()
                    .map(crate::transport_name)
                    .unwrap_or("other")
                    .to_owned(),
                connections: state
                    .connections
                    .values()
                    .map(|a| {
                        a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect::<Multiaddr>().to_string()
                    })
                    .collect(),
                rtt_ms: state.rtt.map(|d| d.as_secs_f64() * 1000.0),
                agent: state.agent.clone(),
                quantum_secure: self.e2e.session_with(peer).is_some(),
                kem_level: self.e2e.session_with(peer).map(|(level, _)| level.number()),
            })
            .collect();
        infos.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        infos
    }

    fn status(&self) -> Status {
        Status {
            peer_id: self.local_id.clone(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            external_addrs: self.swarm.external_addresses().map(|a| a.to_string()).collect(),
            connected_peers: self.peers.len(),
            max_peers: self.config.max_peers,
            topics: {
                let mut topics: Vec<String> = self.user_topics.iter().cloned().collect();
                topics.sort();
                topics
            },
            hub_topics: {
                let mut topics: Vec<String> = self.hub_topics.iter().cloned().collect();
                topics.sort();
                topics
            },
            dht_server: self.config.kad_server,
            relay_server: self.config.relay_server,
            quantum_resistant: self.config.quantum_resistant,
            kem_level: self.config.kem_level.number(),
            mailbox: self.config.mailbox,
            metrics: self.metrics.snapshot(),
        }
    }
}
