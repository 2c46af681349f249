// Over 600 lines: one peer table serves dials, backoff, liveness, relays and lookups; its pure parts (backoff) live apart.
//! Who this node is connected to, and keeping it connected: dials (the
//! user's, bootstrap, reconnects, discovery, finding a node by ID),
//! reconnection with backoff, liveness from pings, relay reservations on
//! relays it is connected to, and listen addresses. I/O-free: the event
//! loop reports what the swarm did and carries out the [`Action`]s.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, transport::ListenerId},
    multiaddr::Protocol,
    swarm::{
        ConnectionId,
        dial_opts::{DialOpts, PeerCondition},
    },
};

use super::backoff::{Backoff, Reconnector};
use crate::{
    MeshError, PeerInfo,
    addr::{is_relayed, peer_of, without_p2p},
    platform::Instant,
    protocols::Reply,
};

/// Most listen addresses remembered per peer for redialling.
const MAX_ADDRS_PER_PEER: usize = 16;
/// Most peers whose addresses are remembered.
const MAX_KNOWN_PEERS: usize = 4096;
/// Most relay reservations a light node holds at once.
const MAX_RESERVATIONS: usize = 2;
/// How often missing relay reservations are retried.
const RESERVATION_RETRY: Duration = Duration::from_secs(5);
/// A connection this young may not have told us its subscriptions yet.
const NEW_CONNECTION: Duration = Duration::from_secs(3);

/// The settings this driver uses.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Most distinct peers connected at once.
    pub max_peers: usize,
    /// Hold relay reservations on connected relays (light nodes).
    pub auto_relay: bool,
    /// Listen addresses are announced as external (servers).
    pub announce_listen_addrs: bool,
    /// Redial policy.
    pub backoff: Backoff,
    /// How often to look for new peers with a random DHT walk.
    pub discovery_interval: Duration,
    /// A connection whose pings stopped being answered this long is closed.
    pub liveness: Duration,
}

impl From<&crate::MeshConfig> for Settings {
    fn from(config: &crate::MeshConfig) -> Self {
        let timing = &config.timing;
        Settings {
            max_peers: config.max_peers,
            auto_relay: config.auto_relay,
            announce_listen_addrs: config.relay_server,
            backoff: Backoff {
                initial: timing.reconnect_initial,
                max: timing.reconnect_max,
                max_attempts: timing.reconnect_attempts,
            },
            discovery_interval: timing.discovery_interval,
            liveness: timing.ping_interval + timing.ping_timeout,
        }
    }
}

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action {
    /// Dial; if the swarm refuses at once, report it with
    /// [`Connections::on_dial_error`].
    Dial(DialOpts),
    /// Listen on a relay circuit (a reservation); report the outcome with
    /// [`Connections::on_reservation`].
    Reserve { relay: PeerId, circuit: Multiaddr },
    /// Stop a listener (a reservation on a relay that went away).
    RemoveListener(ListenerId),
    /// Close a connection that stopped answering pings.
    Close(ConnectionId),
    /// Tell the DHT where a peer listens.
    KadAddress { peer: PeerId, addr: Multiaddr },
    /// Ask the DHT for the peers closest to `target` (finding a node).
    Lookup(PeerId),
    /// Walk the DHT towards a random key (discovery).
    RandomWalk,
    /// Look ourselves up in the DHT (first contact with the mesh).
    KadBootstrap,
    /// Announce / withdraw an address others reach us at.
    AddExternal(Multiaddr),
    /// Withdraw an external address.
    RemoveExternal(Multiaddr),
    /// First connection to a peer: other protocols may start with it.
    Connected { peer: PeerId, address: Multiaddr },
    /// Last connection to a peer closed.
    Disconnected { peer: PeerId },
    /// A new listen address (with `/p2p/<own id>`).
    Listening(Multiaddr),
    /// A listen address went away.
    Expired(Multiaddr),
}

/// A ping's outcome, as the driver needs it.
#[derive(Debug)]
pub(crate) enum Ping {
    /// Answered in this time.
    Answered(Duration),
    /// The peer does not speak ping: its liveness is not checked.
    Unsupported,
    /// No answer, or the stream failed.
    Failed(String),
}

/// What identify told us about a peer.
#[derive(Debug, Default)]
pub(crate) struct Identified {
    /// Its software.
    pub agent: String,
    /// Where it listens.
    pub listen_addrs: Vec<Multiaddr>,
    /// It answers DHT queries.
    pub kad_server: bool,
    /// It relays (relay v2 hop).
    pub relay: bool,
}

struct Peer {
    since: Instant,
    connections: HashMap<ConnectionId, Multiaddr>,
    /// Per connection: when a ping was last answered, or `None` if the peer
    /// does not speak ping (then liveness is not checked).
    alive: HashMap<ConnectionId, Option<Instant>>,
    rtt: Option<Duration>,
    agent: Option<String>,
}

/// Why a dial was started, so its outcome reaches the right place.
enum Purpose {
    User { target: String, reply: Reply<PeerId> },
    Bootstrap { addr: Multiaddr, reply: Option<Reply<PeerId>> },
    Reconnect(PeerId),
    Discovery,
    Find(PeerId),
}

/// A search for a node by ID: DHT lookups under way and who waits.
#[derive(Default)]
struct Search {
    lookups: usize,
    waiters: Vec<Reply<()>>,
}

/// The driver; see the module documentation.
pub(crate) struct Connections {
    local: PeerId,
    settings: Settings,
    peers: HashMap<PeerId, Peer>,
    known_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    reconnect: Reconnector<PeerId>,
    bootstrap: Reconnector<Multiaddr>,
    bootstrap_peers: HashMap<PeerId, Multiaddr>,
    dials: HashMap<ConnectionId, Purpose>,
    listens: HashMap<ListenerId, (Multiaddr, Reply<Multiaddr>)>,
    listen_addrs: Vec<Multiaddr>,
    listeners: Vec<ListenerId>,
    /// Connected peers that relay.
    relays: HashSet<PeerId>,
    /// Our reservations, by relay (`None`: being asked for).
    reservations: HashMap<PeerId, Option<ListenerId>>,
    next_reservation_check: Instant,
    searches: HashMap<PeerId, Search>,
    next_discovery: Instant,
    /// Jitter for backoff (SplitMix64 state).
    rng: u64,
    actions: VecDeque<Action>,
}

impl Connections {
    /// The driver for node `local`, joining through `bootstrap`; `seed`
    /// seeds the backoff jitter.
    pub(crate) fn new(
        local: PeerId,
        settings: Settings,
        bootstrap: &[Multiaddr],
        now: Instant,
        seed: u64,
    ) -> Self {
        let mut boot = Reconnector::new(settings.backoff.clone());
        let mut bootstrap_peers = HashMap::new();
        for addr in bootstrap {
            boot.track_now(addr.clone(), true, now);
            if let Some(peer) = peer_of(addr) {
                bootstrap_peers.insert(peer, addr.clone());
            }
        }
        Self {
            local,
            reconnect: Reconnector::new(settings.backoff.clone()),
            next_discovery: now + settings.discovery_interval,
            settings,
            peers: HashMap::new(),
            known_addrs: HashMap::new(),
            bootstrap: boot,
            bootstrap_peers,
            dials: HashMap::new(),
            listens: HashMap::new(),
            listen_addrs: Vec::new(),
            listeners: Vec::new(),
            relays: HashSet::new(),
            reservations: HashMap::new(),
            next_reservation_check: now,
            searches: HashMap::new(),
            rng: seed,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn random(&mut self) -> u64 {
        // SplitMix64: jitter only, not security.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn full(&self) -> bool {
        self.peers.len() >= self.settings.max_peers
    }

    fn dial(&mut self, opts: DialOpts, purpose: Purpose) {
        self.dials.insert(opts.connection_id(), purpose);
        self.actions.push_back(Action::Dial(opts));
    }

    // ---- queries --------------------------------------------------------

    /// How many peers are connected.
    pub(crate) fn count(&self) -> usize {
        self.peers.len()
    }

    /// Whether a connection is young enough that the peer's gossip
    /// subscriptions may still be on their way.
    pub(crate) fn has_new_connection(&self, now: Instant) -> bool {
        self.peers.values().any(|p| now.duration_since(p.since) < NEW_CONNECTION)
    }

    /// Connected native nodes other than `except` (they hold mail for
    /// offline peers).
    pub(crate) fn native_peers(&self, except: &PeerId) -> Vec<PeerId> {
        let mut native: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                *peer != except && state.agent.as_deref().is_some_and(|a| a.contains("(native)"))
            })
            .map(|(peer, _)| *peer)
            .collect();
        native.sort();
        native
    }

    /// Our listen addresses, each ending in `/p2p/<own id>`.
    pub(crate) fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Every listener, to close at shutdown.
    pub(crate) fn take_listeners(&mut self) -> Vec<ListenerId> {
        std::mem::take(&mut self.listeners)
    }

    /// Our address of a peer over a direct (not relayed) connection, without
    /// `/p2p/…`.
    fn direct_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        let state = self.peers.get(peer)?;
        state.connections.values().find(|a| !is_relayed(a)).map(without_p2p)
    }

    /// Addresses that reach `peer` through each relay we are connected to
    /// (how browser pages, which cannot be dialled, reach each other).
    /// Empty when `peer` is connected.
    pub(crate) fn circuit_addrs(&self, peer: PeerId) -> Vec<Multiaddr> {
        if self.peers.contains_key(&peer) {
            return Vec::new();
        }
        let mut relays: Vec<&PeerId> = self.relays.iter().filter(|relay| **relay != peer).collect();
        relays.sort();
        relays
            .into_iter()
            .filter_map(|relay| {
                let addr = self.direct_addr(relay)?;
                Some(addr.with(Protocol::P2p(*relay)).with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
            })
            .collect()
    }

    /// Connected peers as `peers()` reports them; `session` tells the
    /// end-to-end session level with a peer, if any.
    pub(crate) fn peer_infos(&self, session: impl Fn(&PeerId) -> Option<u8>) -> Vec<PeerInfo> {
        let mut infos: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, state)| {
                let level = session(peer);
                PeerInfo {
                    peer_id: peer.to_base58(),
                    transport: state
                        .connections
                        .values()
                        .next()
                        .map(crate::transport_name)
                        .unwrap_or("other")
                        .to_owned(),
                    connections: state.connections.values().map(|a| without_p2p(a).to_string()).collect(),
                    rtt_ms: state.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    agent: state.agent.clone(),
                    quantum_secure: level.is_some(),
                    kem_level: level,
                }
            })
            .collect();
        infos.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        infos
    }

    // ---- commands -------------------------------------------------------

    /// The user dials an address (with or without `/p2p/<id>`).
    pub(crate) fn dial_user(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
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
        self.dial(opts, Purpose::User { target, reply });
    }

    /// Adds a bootstrap address (kept connected, redialled with backoff)
    /// and dials it now; `reply` gets the outcome of this first dial.
    pub(crate) fn join(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
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
        self.dial(opts, Purpose::Bootstrap { addr, reply: Some(reply) });
    }

    /// Finds a node by ID (already connected, or through the DHT) and
    /// connects to it.
    pub(crate) fn find(&mut self, peer: PeerId, reply: Reply<()>) {
        if peer == self.local {
            let _ = reply
                .send(Err(MeshError::Dial { target: peer.to_string(), reason: "that is this node".into() }));
            return;
        }
        if self.peers.contains_key(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let search = self.searches.entry(peer).or_default();
        search.waiters.push(reply);
        search.lookups += 1;
        self.actions.push_back(Action::Lookup(peer));
    }

    /// The swarm started a listener for the user.
    pub(crate) fn on_listen_started(&mut self, id: ListenerId, addr: Multiaddr, reply: Reply<Multiaddr>) {
        self.listeners.push(id);
        self.listens.insert(id, (addr, reply));
    }

    // ---- what the swarm did ---------------------------------------------

    /// A dial the swarm refused at once.
    pub(crate) fn on_dial_error(&mut self, connection: ConnectionId, reason: String, now: Instant) {
        self.dial_failed(connection, reason, now);
    }

    /// A dial (ours) failed.
    pub(crate) fn on_outgoing_error(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        reason: String,
        now: Instant,
    ) {
        if !self.dials.contains_key(&connection) {
            tracing::debug!(?peer, "dial failed: {reason}");
        }
        self.dial_failed(connection, reason, now);
    }

    fn dial_failed(&mut self, connection: ConnectionId, reason: String, now: Instant) {
        match self.dials.remove(&connection) {
            Some(Purpose::User { target, reply }) => {
                let _ = reply.send(Err(MeshError::Dial { target, reason }));
            }
            Some(Purpose::Bootstrap { addr, reply }) => {
                tracing::debug!(%addr, "bootstrap dial failed: {reason}");
                let random = self.random();
                self.bootstrap.dial_failed(&addr, now, random);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(MeshError::Dial { target: addr.to_string(), reason }));
                }
            }
            Some(Purpose::Reconnect(peer)) => {
                tracing::debug!(%peer, "reconnect failed: {reason}");
                let random = self.random();
                self.reconnect.dial_failed(&peer, now, random);
            }
            Some(Purpose::Find(peer)) => {
                for waiter in self.searches.remove(&peer).map(|s| s.waiters).unwrap_or_default() {
                    let _ = waiter
                        .send(Err(MeshError::Dial { target: peer.to_string(), reason: reason.clone() }));
                }
            }
            Some(Purpose::Discovery) | None => {}
        }
    }

    /// A connection opened.
    pub(crate) fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        first: bool,
        now: Instant,
    ) {
        let address = match endpoint {
            // Someone reached us through our relay reservation: all we know
            // of them is `/p2p/<id>`; keep the circuit (our listen address
            // on the relay) so the connection counts as relayed.
            ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => local_addr.clone(),
            _ => endpoint.get_remote_address().clone(),
        };
        let state = self.peers.entry(peer).or_insert_with(|| Peer {
            since: now,
            connections: HashMap::new(),
            alive: HashMap::new(),
            rtt: None,
            agent: None,
        });
        state.connections.insert(connection, address.clone());
        state.alive.insert(connection, Some(now));
        match self.dials.remove(&connection) {
            Some(Purpose::User { reply, .. }) => {
                let _ = reply.send(Ok(peer));
            }
            Some(Purpose::Bootstrap { addr, reply }) => {
                self.bootstrap_peers.insert(peer, addr);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(peer));
                }
            }
            _ => {}
        }
        if let Some(addr) = self.bootstrap_peers.get(&peer) {
            self.bootstrap.connected(addr);
        }
        if !first {
            return;
        }
        tracing::info!(%peer, %address, "peer connected");
        self.reconnect.connected(&peer);
        for waiter in self.searches.remove(&peer).map(|s| s.waiters).unwrap_or_default() {
            let _ = waiter.send(Ok(()));
        }
        if self.peers.len() == 1 {
            // First contact with the mesh: look ourselves up to learn the
            // peers around us.
            self.actions.push_back(Action::KadBootstrap);
        }
        self.actions.push_back(Action::Connected { peer, address });
    }

    /// A connection closed; `last` when it was the peer's last one.
    pub(crate) fn on_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        last: bool,
        cause: Option<String>,
        now: Instant,
    ) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.connections.remove(&connection);
            state.alive.remove(&connection);
        }
        if !last {
            return;
        }
        self.peers.remove(&peer);
        self.relays.remove(&peer);
        if let Some(Some(id)) = self.reservations.remove(&peer) {
            self.actions.push_back(Action::RemoveListener(id));
        }
        tracing::info!(%peer, ?cause, "peer disconnected");
        let random = self.random();
        if let Some(addr) = self.bootstrap_peers.get(&peer) {
            self.bootstrap.disconnected(addr.clone(), now, random);
        } else if self.known_addrs.contains_key(&peer) {
            self.reconnect.disconnected(peer, now, random);
        }
        self.actions.push_back(Action::Disconnected { peer });
    }

    /// Identify told us about a connected peer.
    pub(crate) fn on_identify(&mut self, peer: PeerId, info: Identified) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.agent = Some(info.agent);
        }
        let dialable: Vec<Multiaddr> =
            info.listen_addrs.into_iter().filter(|a| !is_relayed(a)).take(MAX_ADDRS_PER_PEER).collect();
        if info.kad_server {
            for addr in &dialable {
                self.actions.push_back(Action::KadAddress { peer, addr: addr.clone() });
            }
        }
        self.remember_addrs(peer, dialable);
        if info.relay && self.peers.contains_key(&peer) {
            self.relays.insert(peer);
            self.reserve(peer);
        }
    }

    fn remember_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if addrs.is_empty() {
            return;
        }
        if self.known_addrs.len() >= MAX_KNOWN_PEERS && !self.known_addrs.contains_key(&peer) {
            let (peers, reconnect) = (&self.peers, &self.reconnect);
            self.known_addrs.retain(|p, _| peers.contains_key(p) || reconnect.contains(p));
            if self.known_addrs.len() >= MAX_KNOWN_PEERS {
                return;
            }
        }
        self.known_addrs.insert(peer, addrs);
    }

    /// Takes a reservation on `relay` if this node wants one and has room.
    fn reserve(&mut self, relay: PeerId) {
        if !self.settings.auto_relay
            || self.reservations.contains_key(&relay)
            || self.reservations.len() >= MAX_RESERVATIONS
        {
            return;
        }
        let Some(addr) = self.direct_addr(&relay) else { return };
        let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        self.reservations.insert(relay, None);
        self.actions.push_back(Action::Reserve { relay, circuit });
    }

    /// The swarm's answer to [`Action::Reserve`].
    pub(crate) fn on_reservation(&mut self, relay: PeerId, listener: Result<ListenerId, String>) {
        match listener {
            Ok(id) if self.relays.contains(&relay) => {
                tracing::debug!(%relay, "asking for a relay reservation");
                self.listeners.push(id);
                self.reservations.insert(relay, Some(id));
            }
            Ok(id) => self.actions.push_back(Action::RemoveListener(id)),
            Err(e) => {
                tracing::debug!(%relay, "cannot ask for a relay reservation: {e}");
                self.reservations.remove(&relay);
            }
        }
    }

    /// The DHT added a peer we did not know.
    pub(crate) fn on_discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == self.local || self.peers.contains_key(&peer) || self.full() || addrs.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        self.dial(opts, Purpose::Discovery);
    }

    /// A DHT lookup for `target` made progress: `addrs` are the addresses
    /// it found for the target itself; `last` when the lookup is over.
    pub(crate) fn on_lookup(&mut self, target: PeerId, addrs: Vec<Multiaddr>, last: bool) {
        let Some(search) = self.searches.get_mut(&target) else { return };
        if !addrs.is_empty() && !self.peers.contains_key(&target) {
            search.lookups = search.lookups.saturating_sub(1);
            let opts = DialOpts::peer_id(target).addresses(addrs).build();
            self.dial(opts, Purpose::Find(target));
        } else if last {
            search.lookups = search.lookups.saturating_sub(1);
            let dialling = self.dials.values().any(|p| matches!(p, Purpose::Find(t) if *t == target));
            if search.lookups == 0 && !dialling && !self.peers.contains_key(&target) {
                for waiter in self.searches.remove(&target).map(|s| s.waiters).unwrap_or_default() {
                    let _ = waiter.send(Err(MeshError::PeerNotFound(target)));
                }
            }
        }
    }

    /// A ping finished.
    pub(crate) fn on_ping(&mut self, peer: PeerId, connection: ConnectionId, outcome: Ping, now: Instant) {
        let Some(state) = self.peers.get_mut(&peer) else { return };
        match outcome {
            Ping::Answered(rtt) => {
                state.rtt = Some(rtt);
                state.alive.insert(connection, Some(now));
            }
            Ping::Unsupported => {
                tracing::debug!(%peer, "peer does not support ping");
                state.alive.insert(connection, None);
            }
            Ping::Failed(e) => {
                tracing::debug!(%peer, "ping failed ({e}); closing connection");
                self.actions.push_back(Action::Close(connection));
            }
        }
    }

    /// A listener has a new address.
    pub(crate) fn on_new_listen_addr(&mut self, listener: ListenerId, address: Multiaddr) {
        let full = address.clone().with_p2p(self.local).unwrap_or_else(|a| a);
        tracing::info!("listening on {full}");
        if self.settings.announce_listen_addrs {
            // A server node's listen addresses are where others reach it;
            // relay reservations and the DHT need them.
            self.actions.push_back(Action::AddExternal(address));
        }
        self.listen_addrs.push(full.clone());
        if let Some((_, reply)) = self.listens.remove(&listener) {
            let _ = reply.send(Ok(full.clone()));
        }
        self.actions.push_back(Action::Listening(full));
    }

    /// A listen address went away.
    pub(crate) fn on_expired_listen_addr(&mut self, address: Multiaddr) {
        let full = address.clone().with_p2p(self.local).unwrap_or_else(|a| a);
        self.listen_addrs.retain(|a| *a != full);
        self.actions.push_back(Action::RemoveExternal(address));
        self.actions.push_back(Action::Expired(full));
    }

    /// A listener closed (`error` says why, if it failed).
    pub(crate) fn on_listener_closed(&mut self, listener: ListenerId, error: Option<String>) {
        self.listeners.retain(|id| *id != listener);
        self.reservations.retain(|relay, id| {
            let keep = *id != Some(listener);
            if !keep {
                tracing::info!(%relay, ?error, "relay reservation ended");
            }
            keep
        });
        if let Some((addr, reply)) = self.listens.remove(&listener) {
            let reason = error.unwrap_or_else(|| "listener closed".to_owned());
            let _ = reply.send(Err(MeshError::Listen { addr, reason }));
        }
    }

    /// A listener reported an error (it may go on).
    pub(crate) fn on_listener_error(&mut self, listener: ListenerId, error: String) {
        tracing::warn!("listener error: {error}");
        if let Some((addr, reply)) = self.listens.remove(&listener) {
            let _ = reply.send(Err(MeshError::Listen { addr, reason: error }));
        }
    }

    // ---- time -----------------------------------------------------------

    /// Redials what is due, closes silent connections, retries relay
    /// reservations, walks the DHT.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        let full = self.full();
        for addr in self.bootstrap.due(now) {
            if full {
                let random = self.random();
                self.bootstrap.dial_failed(&addr, now, random);
                continue;
            }
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            self.dial(opts, Purpose::Bootstrap { addr, reply: None });
        }
        for peer in self.reconnect.due(now) {
            if self.peers.contains_key(&peer) {
                self.reconnect.connected(&peer);
                continue;
            }
            let addrs = self.known_addrs.get(&peer).cloned().unwrap_or_default();
            if addrs.is_empty() || full {
                let random = self.random();
                self.reconnect.dial_failed(&peer, now, random);
                continue;
            }
            tracing::debug!(%peer, "reconnecting");
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            self.dial(opts, Purpose::Reconnect(peer));
        }
        self.close_silent(now);
        if now >= self.next_reservation_check {
            self.next_reservation_check = now + RESERVATION_RETRY;
            let mut relays: Vec<PeerId> = self.relays.iter().copied().collect();
            relays.sort();
            for relay in relays {
                self.reserve(relay);
            }
        }
        if now >= self.next_discovery {
            self.next_discovery = now + self.settings.discovery_interval;
            if !self.peers.is_empty() {
                self.actions.push_back(Action::RandomWalk);
            }
        }
    }

    /// Closes connections whose pings stopped being answered. libp2p's ping
    /// forgives one failure and then waits for a new stream's negotiation
    /// to time out, so a peer that vanished (a closed browser tab on
    /// WebRTC-direct never says goodbye) would linger for ~20 s.
    fn close_silent(&mut self, now: Instant) {
        let limit = self.settings.liveness;
        for (peer, state) in &mut self.peers {
            for (connection, alive) in &mut state.alive {
                if alive.is_some_and(|at| now.duration_since(at) > limit) {
                    tracing::debug!(%peer, "no ping answered for {limit:?}; closing connection");
                    *alive = None;
                    self.actions.push_back(Action::Close(*connection));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use libp2p::core::{Endpoint, transport::PortUse};

    use super::*;

    fn settings() -> Settings {
        Settings {
            max_peers: 2,
            auto_relay: true,
            announce_listen_addrs: false,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                max_attempts: 3,
            },
            discovery_interval: Duration::from_secs(30),
            liveness: Duration::from_secs(5),
        }
    }

    fn actions(c: &mut Connections) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    fn addr(port: u16, peer: PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}").parse().unwrap()
    }

    fn dialer(address: Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer { address, role_override: Endpoint::Dialer, port_use: PortUse::New }
    }

    /// The dial among `actions`, by the peer it is for.
    fn dials(actions: &[Action]) -> Vec<(ConnectionId, Option<PeerId>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dial(opts) => Some((opts.connection_id(), opts.get_peer_id())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_user_dial_is_answered_when_the_connection_opens_or_fails() {
        let now = Instant::now();
        let mut c = Connections::new(PeerId::random(), settings(), &[], now, 1);
        let peer = PeerId::random();
        let (reply, mut answer) = oneshot::channel();
        c.dial_user(addr(1, peer), reply);
        let [(id, Some(dialled))] = dials(&actions(&mut c))[..] else { panic!("one dial") };
        assert_eq!(dialled, peer);
        c.on_established(peer, id, &dialer(addr(1, peer)), true, now);
        assert_eq!(answer.try_recv().unwrap().unwrap(), peer);
        let done = actions(&mut c);
        assert!(matches!(done[..], [Action::KadBootstrap, Action::Connected { peer: p, .. }] if p == peer));

        // Dialling a connected peer answers at once; a failed dial names why.
        let (reply, mut answer) = oneshot::channel();
        c.dial_user(addr(1, peer), reply);
        assert_eq!(answer.try_recv().unwrap().unwrap(), peer);
        let (reply, mut answer) = oneshot::channel();
        let other = PeerId::random();
        c.dial_user(addr(2, other), reply);
        let [(id, _)] = dials(&actions(&mut c))[..] else { panic!("one dial") };
        c.on_outgoing_error(id, Some(other), "connection refused".into(), now);
        let error = answer.try_recv().unwrap().unwrap_err().to_string();
        assert!(error.contains("connection refused"), "{error}");
    }

    #[test]
    fn a_bootstrap_peer_is_redialled_with_backoff_and_never_forgotten() {
        let now = Instant::now();
        let boot = PeerId::random();
        let mut c = Connections::new(PeerId::random(), settings(), &[addr(1, boot)], now, 7);
        c.on_tick(now);
        let mut ids = dials(&actions(&mut c));
        let mut t = now;
        for _ in 0..6 {
            let (id, _) = ids.pop().expect("a bootstrap dial");
            c.on_outgoing_error(id, None, "refused".into(), t);
            // Nothing until the backoff is over (at least half the base delay).
            c.on_tick(t + Duration::from_millis(10));
            assert!(dials(&actions(&mut c)).is_empty(), "not redialled at once");
            t += Duration::from_secs(2);
            c.on_tick(t);
            ids = dials(&actions(&mut c));
            assert_eq!(ids.len(), 1, "redialled after the backoff, past max_attempts too");
        }
        let (id, _) = ids.pop().unwrap();
        c.on_established(boot, id, &dialer(addr(1, boot)), true, t);
        c.on_closed(boot, id, true, None, t);
        assert!(matches!(actions(&mut c).last(), Some(Action::Disconnected { peer }) if *peer == boot));
        c.on_tick(t + Duration::from_secs(2));
        assert_eq!(dials(&actions(&mut c)).len(), 1, "a lost bootstrap peer is redialled");
    }

    #[test]
    fn silent_connections_are_closed_and_max_peers_stops_discovery_dials() {
        let now = Instant::now();
        let mut c = Connections::new(PeerId::random(), settings(), &[], now, 3);
        let (a, b) = (PeerId::random(), PeerId::random());
        let (ca, cb) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        c.on_established(a, ca, &dialer(addr(1, a)), true, now);
        c.on_established(b, cb, &dialer(addr(2, b)), true, now);
        c.on_ping(b, cb, Ping::Unsupported, now);
        actions(&mut c);
        c.on_ping(a, ca, Ping::Answered(Duration::from_millis(3)), now + Duration::from_secs(4));
        c.on_tick(now + Duration::from_secs(6));
        assert!(actions(&mut c).iter().all(|a| !matches!(a, Action::Close(_))), "answered 2 s ago");
        c.on_tick(now + Duration::from_secs(10));
        let closed: Vec<ConnectionId> = actions(&mut c)
            .into_iter()
            .filter_map(|a| if let Action::Close(id) = a { Some(id) } else { None })
            .collect();
        assert_eq!(closed, [ca], "silent for 6 s: closed; one that does not ping is left alone");
        c.on_ping(a, ca, Ping::Failed("timeout".into()), now);
        assert!(matches!(actions(&mut c)[..], [Action::Close(id)] if id == ca));

        c.on_discovered(PeerId::random(), vec![addr(3, PeerId::random())]);
        assert!(dials(&actions(&mut c)).is_empty(), "two peers is max_peers here");
        c.on_closed(b, cb, true, None, now);
        actions(&mut c);
        c.on_discovered(PeerId::random(), vec![addr(3, PeerId::random())]);
        assert_eq!(dials(&actions(&mut c)).len(), 1);
    }

    #[test]
    fn finding_a_node_by_id_succeeds_through_the_dht_or_fails_clearly() {
        let now = Instant::now();
        let local = PeerId::random();
        let mut c = Connections::new(local, settings(), &[], now, 3);
        let (reply, mut answer) = oneshot::channel();
        c.find(local, reply);
        assert!(answer.try_recv().unwrap().unwrap_err().to_string().contains("this node"));

        let target = PeerId::random();
        let (reply, mut answer) = oneshot::channel();
        c.find(target, reply);
        assert!(matches!(actions(&mut c)[..], [Action::Lookup(t)] if t == target));
        c.on_lookup(target, Vec::new(), true);
        assert!(matches!(answer.try_recv().unwrap(), Err(MeshError::PeerNotFound(t)) if t == target));

        let (reply, mut answer) = oneshot::channel();
        c.find(target, reply);
        actions(&mut c);
        c.on_lookup(target, vec![addr(9, target)], false);
        let [(id, Some(_))] = dials(&actions(&mut c))[..] else { panic!("dials the found address") };
        c.on_lookup(target, Vec::new(), true);
        assert!(answer.try_recv().is_err(), "still dialling: no answer yet");
        c.on_established(target, id, &dialer(addr(9, target)), true, now);
        assert!(answer.try_recv().unwrap().is_ok());
    }

    #[test]
    fn a_light_node_reserves_on_relays_and_reaches_others_through_them() {
        let now = Instant::now();
        let mut c = Connections::new(PeerId::random(), settings(), &[], now, 3);
        let relay = PeerId::random();
        let conn = ConnectionId::new_unchecked(5);
        c.on_established(relay, conn, &dialer(addr(4001, relay)), true, now);
        actions(&mut c);
        c.on_identify(
            relay,
            Identified { agent: "infermesh/0 (native)".into(), relay: true, ..Default::default() },
        );
        let reserve = actions(&mut c);
        let [Action::Reserve { relay: r, circuit }] = &reserve[..] else { panic!("{reserve:?}") };
        assert_eq!(*r, relay);
        assert_eq!(circuit.to_string(), format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit"));
        let listener = ListenerId::next();
        c.on_reservation(relay, Ok(listener));
        let page = PeerId::random();
        assert_eq!(
            c.circuit_addrs(page)[0].to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{page}")
        );
        assert_eq!(c.native_peers(&page), [relay]);
        // The relay goes: its reservation's listener is removed.
        c.on_closed(relay, conn, true, None, now);
        assert!(matches!(actions(&mut c)[0], Action::RemoveListener(id) if id == listener));
        assert!(c.circuit_addrs(page).is_empty());
    }
}
