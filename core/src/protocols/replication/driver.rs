// Over 600 lines: writes, gossip and catch-up share one replica and one set of holders; flow control lives apart.
//! State replication, the rules: local writes (signed, applied, stored,
//! announced), live entries from the state topic, catch-up with each peer
//! (namespaces → reconcile → fetch / push, a bounded number of requests in
//! flight per peer), replicas kept for others within a quota, and asking
//! peers to hold this node's own namespace until enough do. I/O-free: the
//! event loop carries the [`Action`]s (requests, answers, gossip, storage)
//! and reports what came back.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use libp2p::{PeerId, gossipsub::MessageAcceptance};
use serde_bytes::ByteBuf;
use serde_json::Value;
use tokio::sync::oneshot;

use super::flow::Flows;
use super::wire::{
    MAX_BATCH_BYTES, MAX_FETCH_IDS, MAX_GOSSIP_BYTES, MAX_GOSSIP_ENTRIES, MAX_NAMESPACES, SyncRequest,
    SyncResponse, decode_batch, encode_batch,
};
use crate::{
    Identity, StateView,
    crypto::{Level, private::PrivateValues},
    metrics::Metrics,
    platform::{self, Instant},
    protocols::AskId,
    state::{
        Applied, Entry, EntryError, EntryRejection, Hlc, LocalState, ReplicaLimits, StateError, WriteMode,
        reconcile::{self, Initiator, digest},
    },
};

/// How long a local write waits for others to go out with it on the state
/// topic: writes in a burst travel as one gossip message (one round of
/// forwarding) instead of one each.
pub(crate) const LINGER: Duration = Duration::from_millis(10);
/// Most state-sync requests outstanding to one peer; more wait their turn.
/// (A request-response connection takes at most 32 streams in both
/// directions together and drops inbound ones beyond that, so a catch-up
/// that sent all its fetches at once would lose most of them.)
const SYNC_IN_FLIGHT: usize = 8;
/// How long a peer asked to keep a replica is not asked again.
const REPLICA_ASK_AGAIN: Duration = Duration::from_secs(60);
/// Least time between two catch-ups with a peer whose gossip was dropped.
const RESYNC_AFTER_DROPS: Duration = Duration::from_secs(2);
/// How long a namespace its owner asked this node to keep may stay empty
/// before it is let go (and stops counting towards the quota).
const REQUESTED_GRACE: Duration = Duration::from_secs(60);
/// Namespaces whose sorted entry sets are kept to answer reconciliations.
const RESPONDER_CACHE: usize = 8;
/// Most peers remembered as holders of one namespace.
const MAX_HOLDERS: usize = 64;

/// A write by this node's user.
#[derive(Debug)]
pub(crate) struct Write {
    /// The namespace (this node's own if `None`).
    pub namespace: Option<String>,
    /// The key.
    pub key: String,
    /// The new value (`None` with `Delete`).
    pub value: Option<Value>,
    /// How an existing value is treated.
    pub mode: WriteMode,
    /// Seal the value to this node's own key.
    pub private: bool,
}

/// A caller of a state write, answered once the write is durable.
pub(crate) type WriteReply = oneshot::Sender<Result<(), StateError>>;

/// The settings this driver uses.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Keep a replica of every namespace seen (within the quota).
    pub replicate: bool,
    /// Most namespaces held for others.
    pub quota: usize,
    /// How many connected peers should hold this node's own namespace.
    pub factor: usize,
    /// How often each connected peer is caught up with.
    pub sync_interval: Duration,
    /// The level private values are sealed at.
    pub level: Level,
    /// What one namespace, and the replica, may hold.
    pub limits: ReplicaLimits,
}

impl From<&crate::MeshConfig> for Settings {
    fn from(config: &crate::MeshConfig) -> Self {
        Settings {
            replicate: config.replicate,
            quota: config.replica_quota,
            factor: config.replication_factor,
            sync_interval: config.timing.state_sync_interval,
            level: config.kem_level,
            limits: config.replica_limits.clone(),
        }
    }
}

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Send a state-sync request; its answer comes back with `ask`.
    Request { peer: PeerId, ask: AskId, request: SyncRequest },
    /// Answer an inbound request.
    Respond { channel: C, response: SyncResponse },
    /// Publish this batch on the state topic.
    Gossip(Vec<u8>),
    /// A key of a namespace held here changed (tell the application).
    Changed { namespace: String, key: String, value: Option<Value> },
    /// Make these entries durable; then answer `ack`, if any.
    Persist { entries: Vec<Entry>, ack: Option<WriteReply> },
}

/// What an outstanding state-sync request was for.
enum Purpose {
    Namespaces,
    Reconcile { ns: String, initiator: Box<Initiator> },
    Fetch,
    Push,
    Replicate,
}

/// A request to keep a replica of this node's namespace.
struct ReplicaAsk {
    /// Not answered yet (counts towards the factor meanwhile).
    open: bool,
    /// When this peer may be asked again.
    again_at: Instant,
}

/// Local entries waiting to be gossiped, already encoded.
#[derive(Default)]
struct GossipBatch {
    entries: Vec<ByteBuf>,
    bytes: usize,
    since: Option<Instant>,
}

/// The driver; see the module documentation.
pub(crate) struct Replication<C> {
    local: String,
    state: LocalState,
    private: PrivateValues,
    settings: Settings,
    connected: HashSet<PeerId>,
    /// Connected peers subscribed to the state topic.
    subscribers: HashSet<PeerId>,
    outgoing: GossipBatch,
    /// Requests to each peer, a few at a time.
    flows: Flows<SyncRequest, Purpose>,
    /// Peers known to hold each namespace.
    holders: HashMap<String, HashSet<PeerId>>,
    /// Namespaces asked for that this node does not own (replicated too).
    wanted: HashSet<String>,
    /// Among them, those their owners asked this node to keep, and when:
    /// let go if still empty after [`REQUESTED_GRACE`].
    requested: HashMap<String, Instant>,
    replica_asks: HashMap<PeerId, ReplicaAsk>,
    /// Peers whose gossip was dropped since their last catch-up, and when
    /// that catch-up started.
    resync: HashMap<PeerId, (bool, Option<Instant>)>,
    next_sync: Instant,
    logged: HashSet<EntryRejection>,
    /// Answers reconciliations, with the last few namespaces' sorted sets.
    responder: reconcile::Responder,
    metrics: Arc<Metrics>,
    actions: VecDeque<Action<C>>,
}

impl<C> Replication<C> {
    /// The state of `identity` from what its store held; also returns how
    /// many stored entries no longer verified (skipped).
    pub(crate) fn new(
        identity: Identity,
        stored: Vec<Entry>,
        settings: Settings,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> (Self, usize) {
        let local = identity.peer_id().to_base58();
        let private = PrivateValues::new(identity.clone(), settings.level);
        let (state, skipped) = LocalState::open_with_limits(identity, stored, settings.limits.clone());
        let driver = Self {
            local,
            state,
            private,
            next_sync: now + settings.sync_interval,
            settings,
            connected: HashSet::new(),
            subscribers: HashSet::new(),
            outgoing: GossipBatch::default(),
            flows: Flows::new(SYNC_IN_FLIGHT),
            holders: HashMap::new(),
            wanted: HashSet::new(),
            requested: HashMap::new(),
            replica_asks: HashMap::new(),
            resync: HashMap::new(),
            logged: HashSet::new(),
            responder: reconcile::Responder::new(RESPONDER_CACHE),
            metrics,
            actions: VecDeque::new(),
        };
        driver.count();
        (driver, skipped)
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// The replicated state (read-only).
    pub(crate) fn state(&self) -> &LocalState {
        &self.state
    }

    fn count(&self) {
        let replica = self.state.replica();
        self.metrics.set_state_size(replica.namespace_count(), replica.entry_count());
    }

    // ---- local writes and reads ------------------------------------------

    /// A write by this node's user: applied at once (visible to reads);
    /// `reply` is answered once the entry is durable.
    pub(crate) fn write(&mut self, write: Write, reply: WriteReply, now: Instant) {
        let Write { namespace, key, value, mode, private } = write;
        let key = key.as_str();
        let namespace = namespace.unwrap_or_else(|| self.local.clone());
        let value = match value {
            Some(value) if private => {
                if namespace != self.local {
                    let error = "only this node's own namespace holds private values".to_owned();
                    let _ = reply.send(Err(StateError::Private(error)));
                    return;
                }
                match self.private.seal(&namespace, key, &value) {
                    Ok(sealed) => Some(sealed),
                    Err(e) => {
                        let _ = reply.send(Err(StateError::Private(e.to_string())));
                        return;
                    }
                }
            }
            other => other,
        };
        match self.state.write(&namespace, key, value.as_ref(), mode, platform::now_ms()) {
            Ok(entry) => self.written(entry, Some(reply), now),
            Err(e) => {
                if let StateError::Rejected(rejection) = &e {
                    self.metrics.state_rejected(rejection.reason);
                }
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A write this node makes for itself (its published KEM key): nothing
    /// is written when the key already holds `value`.
    pub(crate) fn write_own(&mut self, key: &str, value: Value, now: Instant) {
        if self.state.get(&self.local, key).as_ref() == Some(&value) {
            return;
        }
        let local = self.local.clone();
        match self.state.write(&local, key, Some(&value), WriteMode::Update, platform::now_ms()) {
            Ok(entry) => self.written(entry, None, now),
            Err(e) => tracing::warn!(key, "could not write to this node's namespace: {e}"),
        }
    }

    /// A write of InferMesh's own records (networks) to this node's
    /// namespace; `None` deletes (nothing happens if the key holds nothing).
    pub(crate) fn write_internal(&mut self, key: &str, value: Option<Value>, now: Instant) {
        let local = self.local.clone();
        let mode = match value {
            Some(_) => WriteMode::Update,
            None if self.state.get(&local, key).is_none() => return,
            None => WriteMode::Delete,
        };
        match self.state.write(&local, key, value.as_ref(), mode, platform::now_ms()) {
            Ok(entry) => self.written(entry, None, now),
            Err(e) => tracing::warn!(key, "could not write to this node's namespace: {e}"),
        }
    }

    fn written(&mut self, entry: Entry, ack: Option<WriteReply>, now: Instant) {
        self.count();
        self.changed(&entry.namespace, &entry.key);
        self.report_purged();
        self.announce(&entry, now);
        self.actions.push_back(Action::Persist { entries: vec![entry], ack });
    }

    /// Tells the application about keys a revocation took back (the
    /// revoked writer's entries from after it).
    fn report_purged(&mut self) {
        for (namespace, key) in self.state.take_purged() {
            self.changed(&namespace, &key);
        }
    }

    /// Tells the application a key changed (internal keys are not shown).
    fn changed(&mut self, namespace: &str, key: &str) {
        if crate::state::is_internal_key(key) {
            return;
        }
        let value = self.state.get(namespace, key).map(|v| self.reveal(namespace, key, v));
        self.actions.push_back(Action::Changed {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value,
        });
    }

    /// A value as this node shows it: private values of its own namespace
    /// opened; anything else as stored (others' private values stay sealed).
    fn reveal(&mut self, namespace: &str, key: &str, value: Value) -> Value {
        if namespace != self.local {
            return value;
        }
        match self.private.open(namespace, key, &value) {
            Some(Ok(open)) => open,
            Some(Err(e)) => {
                tracing::debug!(key, "a sealed value of this namespace does not open: {e}");
                value
            }
            None => value,
        }
    }

    /// The value of `key` in `namespace` (this node's own if `None`).
    /// Asking about a namespace this node does not hold starts replicating it.
    pub(crate) fn get(&mut self, namespace: Option<String>, key: &str) -> Option<Value> {
        let namespace = namespace.unwrap_or_else(|| self.local.clone());
        self.want(&namespace);
        let value = self.state.get(&namespace, key)?;
        Some(self.reveal(&namespace, key, value))
    }

    /// A namespace (this node's own if `None`) as this node holds it; its
    /// own private values opened if `reveal`.
    pub(crate) fn view(&mut self, namespace: Option<String>, reveal: bool) -> StateView {
        let namespace = namespace.unwrap_or_else(|| self.local.clone());
        self.want(&namespace);
        let mut replicas: Vec<String> = self
            .holders
            .get(&namespace)
            .map(|h| h.iter().map(|p| p.to_base58()).collect())
            .unwrap_or_default();
        replicas.sort();
        let mut data = self.state.data(&namespace);
        if reveal
            && namespace == self.local
            && let Some(values) = data.as_object_mut()
        {
            for (key, value) in values.iter_mut() {
                *value = self.reveal(&namespace, key, std::mem::take(value));
            }
        }
        StateView { data, replicas, namespace }
    }

    /// Starts replicating a namespace this node was asked about (or needs:
    /// the owner's of a network it is in).
    pub(crate) fn want(&mut self, namespace: &str) {
        if namespace == self.local
            || self.wanted.contains(namespace)
            || self.wanted.len() >= MAX_NAMESPACES
            || namespace.parse::<PeerId>().is_err()
        {
            return;
        }
        self.wanted.insert(namespace.to_owned());
        for peer in self.sorted(&self.connected) {
            self.start_sync(peer);
        }
    }

    fn sorted(&self, peers: &HashSet<PeerId>) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = peers.iter().copied().collect();
        peers.sort();
        peers
    }

    // ---- gossip -----------------------------------------------------------

    /// Queues a local entry for the state topic; a full batch goes at once,
    /// the rest when the linger ends ([`Replication::flush_due`]).
    fn announce(&mut self, entry: &Entry, now: Instant) {
        let encoded = entry.encode();
        if self.outgoing.bytes + encoded.len() > MAX_GOSSIP_BYTES {
            self.flush();
        }
        self.outgoing.bytes += encoded.len();
        self.outgoing.entries.push(ByteBuf::from(encoded));
        self.outgoing.since.get_or_insert(now);
        if self.outgoing.entries.len() >= MAX_GOSSIP_ENTRIES {
            self.flush();
        }
    }

    /// When the waiting entries must go out, if any wait.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        self.outgoing.since.map(|since| since + LINGER)
    }

    /// Publishes the waiting entries as one gossip message.
    pub(crate) fn flush(&mut self) {
        let batch = std::mem::take(&mut self.outgoing);
        if !batch.entries.is_empty() {
            self.actions.push_back(Action::Gossip(encode_batch(&batch.entries, batch.bytes)));
        }
    }

    /// A batch from the state topic, forwarded to us by `from`: merged
    /// before it may be forwarded. A batch with an entry that is wrong by
    /// itself (bad signature, malformed, too large) is rejected, which
    /// penalises the peer; one refused only by this node's view
    /// (authorisation, clock) is not forwarded, without penalty.
    pub(crate) fn on_gossip(&mut self, from: PeerId, data: &[u8]) -> MessageAcceptance {
        let encoded = match decode_batch(data) {
            Ok(list) => list,
            Err(e) => {
                self.metrics.state_rejected(EntryRejection::Malformed);
                tracing::debug!(peer = %from, "undecodable state gossip: {e}");
                return MessageAcceptance::Reject;
            }
        };
        if encoded.len() > MAX_GOSSIP_ENTRIES {
            self.metrics.state_rejected(EntryRejection::Oversize);
            return MessageAcceptance::Reject;
        }
        let mut entries = Vec::with_capacity(encoded.len());
        for bytes in &encoded {
            match Entry::decode(bytes) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    self.metrics.state_rejected(e.reason);
                    return MessageAcceptance::Reject;
                }
            }
        }
        entries.retain(|e| self.replicates(&e.namespace));
        if entries.is_empty() {
            return MessageAcceptance::Ignore;
        }
        let results = self.ingest(entries, Some(from));
        let reasons: Vec<EntryRejection> =
            results.iter().filter_map(|r| r.as_ref().err().map(|e| e.reason)).collect();
        if reasons.iter().any(|r| {
            !matches!(
                r,
                EntryRejection::Unauthorized | EntryRejection::FutureTimestamp | EntryRejection::Full
            )
        }) {
            MessageAcceptance::Reject
        } else if !reasons.is_empty() {
            MessageAcceptance::Ignore
        } else {
            MessageAcceptance::Accept
        }
    }

    /// Takes entries from a peer (signatures verified as one batch),
    /// stores the new winners, counts each refusal by reason.
    fn ingest(&mut self, entries: Vec<Entry>, from: Option<PeerId>) -> Vec<Result<Applied, EntryError>> {
        let now = platform::now_ms();
        let ingested = self.state.ingest_all(entries, now);
        let mut results = Vec::with_capacity(ingested.outcomes.len());
        for outcome in ingested.outcomes {
            match &outcome.result {
                Ok(Applied::Changed) => {
                    if let Some(peer) = from {
                        self.holder(&outcome.namespace, peer);
                    }
                    self.metrics.state_ingested();
                    self.metrics.state_arrived(now.saturating_sub(Hlc::millis(outcome.timestamp)));
                    self.changed(&outcome.namespace, &outcome.key);
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.state_rejected(e.reason);
                    if self.logged.insert(e.reason) {
                        tracing::warn!(peer = ?from, "refused a state entry: {e}");
                    }
                }
            }
            results.push(outcome.result);
        }
        self.report_purged();
        self.count();
        if !ingested.winners.is_empty() {
            self.actions.push_back(Action::Persist { entries: ingested.winners, ack: None });
        }
        results
    }

    /// Entries that could not be stored: stored again from what this node
    /// holds now (the node keeps trying while it runs).
    pub(crate) fn on_not_stored(&mut self, keys: Vec<(String, String)>) {
        let entries: Vec<Entry> =
            keys.iter().filter_map(|(ns, key)| self.state.replica().get(ns, key)).cloned().collect();
        if !entries.is_empty() {
            self.actions.push_back(Action::Persist { entries, ack: None });
        }
    }

    // ---- which namespaces -------------------------------------------------

    /// Whether this node keeps a replica of `ns`: its own always; others if
    /// it replicates for the mesh (servers), within the quota.
    fn replicates(&self, ns: &str) -> bool {
        self.holds(ns) || (self.settings.replicate && self.has_room())
    }

    /// Whether `ns` is this node's own, asked for, or already held.
    fn holds(&self, ns: &str) -> bool {
        ns == self.local || self.wanted.contains(ns) || self.state.replica().len(ns) > 0
    }

    /// Whether the quota leaves room for one more namespace of others.
    fn has_room(&self) -> bool {
        let own = usize::from(self.state.replica().len(&self.local) > 0);
        let others = self.state.replica().namespace_count().saturating_sub(own);
        others.max(self.wanted.len()) < self.settings.quota
    }

    /// Remembers that `peer` holds `ns`, for namespaces this node holds
    /// itself (the others are no business of its), up to [`MAX_HOLDERS`]
    /// each: a full set makes room by forgetting a disconnected peer.
    fn holder(&mut self, ns: &str, peer: PeerId) {
        if !self.holds(ns) {
            return;
        }
        let connected = &self.connected;
        let holders = self.holders.entry(ns.to_owned()).or_default();
        if holders.len() >= MAX_HOLDERS && !holders.contains(&peer) {
            let Some(gone) = holders.iter().find(|p| !connected.contains(p)).copied() else { return };
            holders.remove(&gone);
        }
        holders.insert(peer);
    }

    /// Connected peers known to hold `ns`.
    fn live_holders(&self, ns: &str) -> usize {
        self.holders.get(ns).map_or(0, |h| h.iter().filter(|p| self.connected.contains(p)).count())
    }

    // ---- peers ------------------------------------------------------------

    /// A peer connected.
    pub(crate) fn on_peer_up(&mut self, peer: PeerId) {
        self.connected.insert(peer);
    }

    /// A peer's last connection closed: its outstanding requests fail on
    /// their own; the waiting ones are dropped.
    pub(crate) fn on_peer_down(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
        self.subscribers.remove(peer);
        self.resync.remove(peer);
        self.flows.peer_gone(peer);
    }

    /// A peer joined the state topic: catch up with it (whatever was
    /// published before it listened comes by reconciliation).
    pub(crate) fn on_subscribed(&mut self, peer: PeerId) {
        self.subscribers.insert(peer);
        self.start_sync(peer);
    }

    /// A peer left the state topic.
    pub(crate) fn on_unsubscribed(&mut self, peer: &PeerId) {
        self.subscribers.remove(peer);
    }

    /// Gossip to `peer` was dropped (its queue overflowed or timed out):
    /// the entries among it come by a catch-up instead.
    pub(crate) fn on_gossip_dropped(&mut self, peer: PeerId) {
        if self.connected.contains(&peer) {
            self.resync.entry(peer).or_default().0 = true;
        }
    }

    /// Catch-ups that are due: after dropped gossip (at most once per
    /// [`RESYNC_AFTER_DROPS`] a peer), and every `sync_interval` with
    /// every peer; and asks for replicas while too few peers hold ours.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        let mut due: Vec<PeerId> = self
            .resync
            .iter_mut()
            .filter(|(_, (dropped, last))| {
                *dropped && last.is_none_or(|at| now.duration_since(at) >= RESYNC_AFTER_DROPS)
            })
            .map(|(peer, state)| {
                *state = (false, Some(now));
                *peer
            })
            .collect();
        due.sort();
        for peer in due {
            self.start_sync(peer);
        }
        self.seek_replicas(now);
        self.let_go_of_empty(now);
        if now >= self.next_sync {
            self.next_sync = now + self.settings.sync_interval;
            for peer in self.sorted(&self.connected) {
                self.start_sync(peer);
            }
        }
    }

    /// Namespaces their owners asked this node to keep that are still
    /// empty after [`REQUESTED_GRACE`] are let go: throwaway keys asking
    /// for replicas of nothing do not fill the quota for good.
    fn let_go_of_empty(&mut self, now: Instant) {
        let replica = self.state.replica();
        let empty: Vec<String> = self
            .requested
            .iter()
            .filter(|(ns, at)| now.duration_since(**at) >= REQUESTED_GRACE && replica.len(ns) == 0)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in empty {
            tracing::debug!(%ns, "letting go of a replica that stayed empty");
            self.requested.remove(&ns);
            self.wanted.remove(&ns);
            self.holders.remove(&ns);
        }
        self.requested.retain(|ns, _| replica.len(ns) == 0);
    }

    /// Keeps the replication factor of this node's own namespace: while
    /// fewer connected peers than wanted are known to hold it (counting
    /// requests still open), asks more peers on the state topic, each at
    /// most once a minute.
    fn seek_replicas(&mut self, now: Instant) {
        let factor = self.settings.factor;
        if factor == 0 || self.state.replica().len(&self.local) == 0 {
            return;
        }
        self.replica_asks.retain(|_, ask| ask.open || now < ask.again_at);
        let open = self.replica_asks.values().filter(|ask| ask.open).count();
        let mut missing = factor.saturating_sub(self.live_holders(&self.local) + open);
        if missing == 0 {
            return;
        }
        let holders = self.holders.get(&self.local);
        let mut candidates: Vec<PeerId> = self
            .subscribers
            .iter()
            .filter(|peer| {
                self.connected.contains(peer)
                    && !holders.is_some_and(|h| h.contains(peer))
                    && self.replica_asks.get(peer).is_none_or(|ask| now >= ask.again_at)
            })
            .copied()
            .collect();
        candidates.sort();
        for peer in candidates {
            if missing == 0 {
                break;
            }
            missing -= 1;
            let ns = self.local.clone();
            self.send(peer, SyncRequest::Replicate { ns }, Purpose::Replicate);
            self.replica_asks.insert(peer, ReplicaAsk { open: true, again_at: now + REPLICA_ASK_AGAIN });
        }
    }

    // ---- catch-up -----------------------------------------------------------

    /// Starts catching up with a peer: ask which namespaces it holds.
    fn start_sync(&mut self, peer: PeerId) {
        self.send(peer, SyncRequest::Namespaces, Purpose::Namespaces);
    }

    /// Sends a request, or queues it while `SYNC_IN_FLIGHT` requests to
    /// that peer are outstanding.
    fn send(&mut self, peer: PeerId, request: SyncRequest, step: Purpose) {
        if let Some((ask, request)) = self.flows.send(peer, request, step) {
            self.actions.push_back(Action::Request { peer, ask, request });
        }
    }

    /// Request `ask` was answered or failed: its peer and purpose (the
    /// next waiting request to that peer goes).
    fn done(&mut self, ask: AskId) -> Option<(PeerId, Purpose)> {
        let (peer, step, next) = self.flows.finish(ask)?;
        if let Some((ask, request)) = next {
            self.actions.push_back(Action::Request { peer, ask, request });
        }
        Some((peer, step))
    }

    /// A request of ours failed (timeout, closed connection, a peer that
    /// does not speak the protocol).
    pub(crate) fn on_failure(&mut self, ask: AskId, error: &str) {
        let Some((peer, step)) = self.done(ask) else { return };
        if matches!(step, Purpose::Replicate) {
            self.replica_answered(peer);
        }
        tracing::debug!(%peer, "state sync request failed: {error}");
    }

    fn replica_answered(&mut self, peer: PeerId) {
        if let Some(ask) = self.replica_asks.get_mut(&peer) {
            ask.open = false;
        }
    }

    /// An answer to a request of ours.
    pub(crate) fn on_response(&mut self, ask: AskId, response: SyncResponse) {
        let Some((peer, step)) = self.done(ask) else { return };
        match (step, response) {
            (Purpose::Namespaces, SyncResponse::Namespaces(theirs)) => self.compare(peer, theirs),
            (Purpose::Reconcile { ns, mut initiator }, SyncResponse::Reconcile(answer)) => {
                match initiator.step(&answer) {
                    Ok(Some(next)) => {
                        let request = SyncRequest::Reconcile { ns: ns.clone(), msg: ByteBuf::from(next) };
                        self.send(peer, request, Purpose::Reconcile { ns, initiator });
                    }
                    Ok(None) => self.exchange(peer, ns, &initiator),
                    Err(e) => tracing::debug!(%peer, %ns, "reconciliation failed: {e}"),
                }
            }
            (Purpose::Fetch, SyncResponse::Entries(entries)) => {
                self.ingest_encoded(entries.into_iter().take(MAX_FETCH_IDS), peer);
            }
            (Purpose::Push, SyncResponse::Pushed { .. }) => {}
            (Purpose::Replicate, SyncResponse::Replicating) => {
                // It has undertaken to hold our namespace and is catching up.
                self.replica_answered(peer);
                let local = self.local.clone();
                self.holder(&local, peer);
            }
            (Purpose::Replicate, SyncResponse::Refused(reason)) => {
                tracing::debug!(%peer, "replica refused: {reason}");
                self.replica_answered(peer);
            }
            (_, SyncResponse::Refused(reason)) => tracing::debug!(%peer, "state sync refused: {reason}"),
            _ => tracing::debug!(%peer, "state sync: unexpected response"),
        }
    }

    /// The namespaces a peer holds: reconcile each one held differently
    /// that this node replicates (and its own, always).
    fn compare(&mut self, peer: PeerId, theirs: Vec<(String, ByteBuf)>) {
        let mut differ: Vec<String> = self.state.replica().namespaces().map(String::from).collect();
        differ.push(self.local.clone());
        let mut differ: HashSet<String> = differ.into_iter().collect();
        for (ns, their_digest) in theirs.into_iter().take(MAX_NAMESPACES) {
            if ns.parse::<PeerId>().is_err() {
                continue;
            }
            self.holder(&ns, peer);
            if their_digest.as_ref() == digest(self.state.replica(), &ns) {
                differ.remove(&ns);
            } else if self.replicates(&ns) {
                differ.insert(ns);
            }
        }
        let mut differ: Vec<String> = differ.into_iter().collect();
        differ.sort();
        for ns in differ {
            match Initiator::start(self.state.replica(), &ns) {
                Ok((initiator, first)) => {
                    let request = SyncRequest::Reconcile { ns: ns.clone(), msg: ByteBuf::from(first) };
                    self.send(peer, request, Purpose::Reconcile { ns, initiator: Box::new(initiator) });
                }
                Err(e) => tracing::debug!(%ns, "cannot start reconciling: {e}"),
            }
        }
    }

    /// Reconciled: fetch what we lack and push what the peer lacks, in batches.
    fn exchange(&mut self, peer: PeerId, ns: String, initiator: &Initiator) {
        if !initiator.have.is_empty() || !initiator.need.is_empty() {
            tracing::debug!(%peer, %ns, have = initiator.have.len(), need = initiator.need.len(), "reconciled");
        }
        for chunk in initiator.need.chunks(MAX_FETCH_IDS) {
            let ids = chunk.iter().map(|id| ByteBuf::from(id.to_vec())).collect();
            self.send(peer, SyncRequest::Fetch { ns: ns.clone(), ids }, Purpose::Fetch);
        }
        let have: Vec<Vec<u8>> = initiator
            .have
            .iter()
            .filter_map(|id| self.state.replica().by_id(id))
            .map(Entry::encode)
            .collect();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for encoded in have {
            if !batch.is_empty() && (bytes + encoded.len() > MAX_BATCH_BYTES || batch.len() >= MAX_FETCH_IDS)
            {
                self.send(peer, SyncRequest::Push { entries: std::mem::take(&mut batch) }, Purpose::Push);
                bytes = 0;
            }
            bytes += encoded.len();
            batch.push(ByteBuf::from(encoded));
        }
        if !batch.is_empty() {
            self.send(peer, SyncRequest::Push { entries: batch }, Purpose::Push);
        }
    }

    /// Decodes and merges a batch (access-list entries first).
    fn ingest_encoded(&mut self, encoded: impl Iterator<Item = ByteBuf>, peer: PeerId) -> (u32, u32) {
        let mut rejected = 0;
        let mut entries = Vec::new();
        for bytes in encoded {
            match Entry::decode(&bytes) {
                Ok(entry) if self.replicates(&entry.namespace) => entries.push(entry),
                Ok(_) => {}
                Err(e) => {
                    self.metrics.state_rejected(e.reason);
                    rejected += 1;
                }
            }
        }
        let mut accepted = 0;
        for result in self.ingest(entries, Some(peer)) {
            match result {
                Ok(_) => accepted += 1,
                Err(_) => rejected += 1,
            }
        }
        (accepted, rejected)
    }

    /// A peer's request; the answer goes back on `channel`.
    pub(crate) fn on_request(&mut self, peer: PeerId, request: SyncRequest, channel: C, now: Instant) {
        let response = self.serve(peer, request, now);
        self.actions.push_back(Action::Respond { channel, response });
    }

    fn serve(&mut self, peer: PeerId, request: SyncRequest, now: Instant) -> SyncResponse {
        match request {
            SyncRequest::Namespaces => {
                let replica = self.state.replica();
                SyncResponse::Namespaces(
                    replica
                        .namespaces()
                        .take(MAX_NAMESPACES)
                        .map(|ns| (ns.to_owned(), ByteBuf::from(digest(replica, ns).to_vec())))
                        .collect(),
                )
            }
            SyncRequest::Reconcile { ns, msg } => {
                match self.responder.respond(self.state.replica(), &ns, &msg) {
                    Ok(answer) => {
                        self.holder(&ns, peer);
                        SyncResponse::Reconcile(ByteBuf::from(answer))
                    }
                    Err(e) => SyncResponse::Refused(e.to_string()),
                }
            }
            SyncRequest::Fetch { ns, ids } => {
                let mut out = Vec::new();
                let mut bytes = 0;
                for id in ids.iter().take(MAX_FETCH_IDS) {
                    let Ok(id) = <[u8; 32]>::try_from(id.as_ref()) else { continue };
                    let Some(entry) = self.state.replica().by_id(&id) else { continue };
                    if entry.namespace != ns {
                        continue;
                    }
                    let encoded = entry.encode();
                    bytes += encoded.len();
                    if bytes > MAX_BATCH_BYTES {
                        break;
                    }
                    out.push(ByteBuf::from(encoded));
                }
                SyncResponse::Entries(out)
            }
            SyncRequest::Push { entries } => {
                let (accepted, rejected) = self.ingest_encoded(entries.into_iter().take(MAX_FETCH_IDS), peer);
                SyncResponse::Pushed { accepted, rejected }
            }
            SyncRequest::Replicate { ns } => {
                if ns.parse::<PeerId>().is_err() {
                    return SyncResponse::Refused("not a namespace".into());
                }
                if ns != peer.to_base58() {
                    return SyncResponse::Refused("only a namespace's owner asks for replicas of it".into());
                }
                if !self.holds(&ns) {
                    if self.settings.quota == 0 {
                        return SyncResponse::Refused("this node keeps no replicas for others".into());
                    }
                    if !self.has_room() {
                        return SyncResponse::Refused("replica quota reached".into());
                    }
                    tracing::debug!(%peer, %ns, "keeping a replica on request");
                    self.wanted.insert(ns.clone());
                    self.requested.insert(ns, now);
                    // Catch up with the asker now, not at the next round.
                    self.start_sync(peer);
                }
                SyncResponse::Replicating
            }
        }
    }
}

#[cfg(test)]
mod tests;
