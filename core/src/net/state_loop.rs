//! The event loop's state replication: local writes, live entries on the
//! state topic, and catch-up with each peer (namespaces → reconcile →
//! fetch / push). See `state_sync.rs` for the wire messages.

use std::{collections::HashSet, time::Duration};

use libp2p::{PeerId, gossipsub, request_response};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

use super::EventLoop;
use crate::{
    mesh::{StateView, WriteMode},
    net::state_sync::{
        MAX_BATCH_BYTES, MAX_FETCH_IDS, MAX_NAMESPACES, STATE_TOPIC, SyncRequest, SyncResponse,
    },
    platform::{self, Instant},
    state::{
        Applied, Entry, EntryError, EntryRejection, Hlc, StateError,
        sync::{Initiator, digest},
    },
};

/// How long a local write waits for others to go out with it on the state
/// topic: writes in a burst travel as one gossip message (one signature,
/// one round of forwarding) instead of one each.
pub(super) const LINGER: Duration = Duration::from_millis(10);
/// Most entries in one gossip message.
const MAX_GOSSIP_ENTRIES: usize = 256;
/// Most bytes of entries in one gossip message.
const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Most state-sync requests outstanding to one peer; more wait their turn.
/// (A request-response connection takes at most 32 streams in both
/// directions together and drops inbound ones beyond that, so a catch-up
/// that sent all its fetches at once would lose most of them.)
const SYNC_IN_FLIGHT: usize = 8;
/// How long a peer asked to keep a replica is not asked again.
const REPLICA_ASK_AGAIN: Duration = Duration::from_secs(60);

/// Local entries waiting to be gossiped, already encoded.
#[derive(Default)]
pub(super) struct Outgoing {
    entries: Vec<ByteBuf>,
    bytes: usize,
}

impl Outgoing {
    /// Whether entries wait for the linger to end.
    pub(super) fn is_waiting(&self) -> bool {
        !self.entries.is_empty()
    }
}

/// A request to keep a replica of this node's namespace.
pub(super) struct ReplicaAsk {
    /// Not answered yet (counts towards the factor meanwhile).
    open: bool,
    /// When this peer may be asked again.
    again_at: Instant,
}

/// State-sync requests to one peer: how many are outstanding, and the ones
/// waiting for a slot.
#[derive(Default)]
pub(super) struct SyncFlow {
    in_flight: usize,
    waiting: std::collections::VecDeque<(SyncRequest, SyncStep)>,
}

/// What an outstanding state-sync request was for.
pub(super) enum SyncStep {
    Namespaces,
    Reconcile { ns: String, initiator: Box<Initiator> },
    Fetch,
    Push,
    Replicate,
}

impl EventLoop {
    /// Joins the state topic (at start).
    pub(super) fn join_state_topic(&mut self) {
        let topic = gossipsub::IdentTopic::new(STATE_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            tracing::warn!("cannot join the state topic: {e}");
        }
    }

    /// Whether this node keeps a replica of `ns`: its own always; others if
    /// it replicates for the mesh (servers), within the quota.
    fn replicates(&self, ns: &str) -> bool {
        if self.holds(ns) {
            return true;
        }
        self.config.replicate && self.has_room()
    }

    /// Whether `ns` is this node's own, asked for, or already held.
    fn holds(&self, ns: &str) -> bool {
        ns == self.local_id || self.wanted.contains(ns) || self.state.replica().len(ns) > 0
    }

    /// Whether the quota leaves room for one more namespace of others.
    fn has_room(&self) -> bool {
        let own = usize::from(self.state.replica().len(&self.local_id) > 0);
        let others = self.state.replica().namespace_count().saturating_sub(own);
        others.max(self.wanted.len()) < self.config.replica_quota
    }

    /// Connected peers known to hold `ns`.
    fn live_holders(&self, ns: &str) -> usize {
        self.holders.get(ns).map_or(0, |h| h.iter().filter(|p| self.peers.contains_key(p)).count())
    }

    /// Keeps the replication factor of this node's own namespace: while
    /// fewer connected peers than wanted are known to hold it (counting
    /// requests still open), asks more peers on the state topic, each at
    /// most once a minute.
    pub(super) fn seek_replicas(&mut self, now: Instant) {
        let factor = self.config.replication_factor;
        if factor == 0 || self.state.replica().len(&self.local_id) == 0 {
            return;
        }
        // Forget answered asks once they may be repeated.
        self.replica_asks.retain(|_, ask| ask.open || now < ask.again_at);
        let open = self.replica_asks.values().filter(|ask| ask.open).count();
        let mut missing = factor.saturating_sub(self.live_holders(&self.local_id) + open);
        if missing == 0 {
            return;
        }
        let topic = gossipsub::IdentTopic::new(STATE_TOPIC).hash();
        let holders = self.holders.get(&self.local_id);
        let candidates: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(peer, topics)| {
                topics.contains(&&topic)
                    && self.peers.contains_key(peer)
                    && !holders.is_some_and(|h| h.contains(peer))
                    && self.replica_asks.get(peer).is_none_or(|ask| now >= ask.again_at)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in candidates {
            if missing == 0 {
                break;
            }
            missing -= 1;
            let ns = self.local_id.clone();
            self.send_sync(peer, SyncRequest::Replicate { ns }, SyncStep::Replicate);
            self.replica_asks.insert(peer, ReplicaAsk { open: true, again_at: now + REPLICA_ASK_AGAIN });
        }
    }

    /// Sends a state-sync request, or queues it while `SYNC_IN_FLIGHT`
    /// requests to that peer are outstanding.
    fn send_sync(&mut self, peer: PeerId, request: SyncRequest, step: SyncStep) {
        let flow = self.sync_flow.entry(peer).or_default();
        if flow.in_flight >= SYNC_IN_FLIGHT {
            flow.waiting.push_back((request, step));
            return;
        }
        flow.in_flight += 1;
        self.dispatch_sync(peer, request, step);
    }

    fn dispatch_sync(&mut self, peer: PeerId, request: SyncRequest, step: SyncStep) {
        let id = self.swarm.behaviour_mut().state_sync.send_request(&peer, request);
        self.syncs.insert(id, (peer, step));
    }

    /// A request to `peer` was answered or failed: the next waiting one
    /// takes its slot.
    fn sync_done(&mut self, peer: PeerId) {
        let Some(flow) = self.sync_flow.get_mut(&peer) else { return };
        flow.in_flight = flow.in_flight.saturating_sub(1);
        match flow.waiting.pop_front() {
            Some((request, step)) => {
                flow.in_flight += 1;
                self.dispatch_sync(peer, request, step);
            }
            None if flow.in_flight == 0 => {
                self.sync_flow.remove(&peer);
            }
            None => {}
        }
    }

    /// The last connection to `peer` closed: its outstanding requests fail
    /// on their own (freeing their slots); the waiting ones are dropped.
    pub(super) fn state_peer_gone(&mut self, peer: &PeerId) {
        if let Some(flow) = self.sync_flow.get_mut(peer) {
            flow.waiting.clear();
        }
    }

    /// An answer (or a failure) to a replication request.
    fn replica_answered(&mut self, peer: PeerId) {
        if let Some(ask) = self.replica_asks.get_mut(&peer) {
            ask.open = false;
        }
    }

    /// A local write: durable, then announced.
    pub(super) fn state_write(
        &mut self,
        namespace: Option<String>,
        key: String,
        value: Option<serde_json::Value>,
        mode: WriteMode,
        private: bool,
        reply: oneshot::Sender<Result<(), StateError>>,
    ) {
        let namespace = namespace.unwrap_or_else(|| self.local_id.clone());
        let value = match value {
            Some(value) if private => {
                if namespace != self.local_id {
                    let error = "only this node's own namespace holds private values".to_owned();
                    let _ = reply.send(Err(StateError::Private(error)));
                    return;
                }
                match self.e2e.seal_value(&namespace, &key, &value) {
                    Ok(sealed) => Some(sealed),
                    Err(e) => {
                        let _ = reply.send(Err(StateError::Private(e.to_string())));
                        return;
                    }
                }
            }
            other => other,
        };
        let result = self.state.write(&namespace, &key, value.as_ref(), mode, platform::now_ms());
        match result {
            Ok(entry) => {
                // Counted before the reply: a caller that reads the metrics
                // after its write sees the write.
                self.count_state();
                let _ = reply.send(Ok(()));
                self.announce(&entry);
                self.state_changed(&entry.namespace, &entry.key);
            }
            Err(e) => {
                if let StateError::Rejected(rejection) = &e {
                    self.metrics.state_rejected(rejection.reason);
                }
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Tells the application a key changed (access-list keys are internal).
    fn state_changed(&mut self, namespace: &str, key: &str) {
        if crate::state::is_internal_key(key) {
            return;
        }
        let value = self.state.get(namespace, key).map(|v| self.reveal(namespace, key, v));
        self.emit(crate::mesh::MeshEvent::StateChanged {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value,
        });
    }

    /// Queues a local entry for the state topic; a full batch goes at once,
    /// the rest when the linger ends.
    pub(super) fn announce(&mut self, entry: &Entry) {
        let encoded = entry.encode();
        if self.outgoing.bytes + encoded.len() > MAX_GOSSIP_BYTES {
            self.flush_state();
        }
        self.outgoing.bytes += encoded.len();
        self.outgoing.entries.push(ByteBuf::from(encoded));
        if self.outgoing.entries.len() >= MAX_GOSSIP_ENTRIES {
            self.flush_state();
        }
    }

    /// Publishes the waiting entries as one gossip message.
    pub(super) fn flush_state(&mut self) {
        if self.outgoing.entries.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.outgoing);
        let mut data = Vec::with_capacity(batch.bytes + 16);
        if let Err(e) = ciborium::into_writer(&batch.entries, &mut data) {
            tracing::warn!("cannot encode state entries: {e}");
            return;
        }
        let topic = gossipsub::IdentTopic::new(STATE_TOPIC);
        // No peer yet is fine: reconciliation brings them up to date.
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            tracing::debug!("state entries not gossiped now: {e}");
        }
    }

    /// Starts replicating a namespace this node was asked about.
    fn want(&mut self, namespace: &str) {
        if namespace == self.local_id
            || self.wanted.contains(namespace)
            || namespace.parse::<PeerId>().is_err()
        {
            return;
        }
        if self.wanted.len() >= MAX_NAMESPACES {
            return;
        }
        self.wanted.insert(namespace.to_owned());
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.start_state_sync(peer);
        }
    }

    pub(super) fn state_view(&mut self, namespace: Option<String>) -> StateView {
        let namespace = namespace.unwrap_or_else(|| self.local_id.clone());
        self.want(&namespace);
        let mut replicas: Vec<String> = self
            .holders
            .get(&namespace)
            .map(|h| h.iter().map(|p| p.to_base58()).collect())
            .unwrap_or_default();
        replicas.sort();
        let mut data = self.state.data(&namespace);
        if let Some(values) = data.as_object_mut().filter(|_| namespace == self.local_id) {
            for (key, value) in values.iter_mut() {
                *value = self.reveal(&namespace, key, std::mem::take(value));
            }
        }
        StateView { data, replicas, namespace }
    }

    /// A value as this node shows it: private values of its own namespace
    /// opened; anything else as stored (others' private values stay sealed).
    fn reveal(&mut self, namespace: &str, key: &str, value: serde_json::Value) -> serde_json::Value {
        if namespace != self.local_id {
            return value;
        }
        match self.e2e.open_value(namespace, key, &value) {
            Some(Ok(open)) => open,
            Some(Err(e)) => {
                tracing::debug!(key, "a sealed value of this namespace does not open: {e}");
                value
            }
            None => value,
        }
    }

    pub(super) fn state_get(&mut self, namespace: Option<String>, key: &str) -> Option<serde_json::Value> {
        let namespace = namespace.unwrap_or_else(|| self.local_id.clone());
        self.want(&namespace);
        let value = self.state.get(&namespace, key)?;
        Some(self.reveal(&namespace, key, value))
    }

    /// Takes entries from a peer (signatures verified as one batch);
    /// counts each refusal by reason. Returns the outcome of each.
    fn ingest(&mut self, entries: Vec<Entry>, from: Option<&PeerId>) -> Vec<Result<Applied, EntryError>> {
        let now = platform::now_ms();
        let outcomes = match self.state.ingest_all(entries, now) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Not stored, so not merged; reconciliation brings them again.
                tracing::warn!("cannot store state entries: {e}");
                return Vec::new();
            }
        };
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            match &outcome.result {
                Ok(Applied::Changed) => {
                    if let Some(peer) = from {
                        self.holders.entry(outcome.namespace.clone()).or_default().insert(*peer);
                    }
                    self.metrics.state_ingested();
                    let lag_ms = now.saturating_sub(Hlc::millis(outcome.timestamp));
                    self.metrics.state_arrived(lag_ms);
                    self.state_changed(&outcome.namespace, &outcome.key);
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.state_rejected(e.reason);
                    if self.logged_state_reasons.insert(e.reason) {
                        tracing::warn!(peer = ?from, "refused a state entry: {e}");
                    }
                }
            }
            results.push(outcome.result);
        }
        self.count_state();
        results
    }

    /// Updates the state size gauges.
    pub(super) fn count_state(&self) {
        let replica = self.state.replica();
        self.metrics.set_state_size(replica.namespace_count(), replica.entry_count());
    }

    /// Gossiped entries (one message carries up to 256): merged before the
    /// message may be forwarded. A message with an entry that is wrong by
    /// itself (bad signature, malformed, too large) is rejected, which
    /// penalises the peer; one refused only by this node's view
    /// (authorisation, clock) is not forwarded, without penalty.
    pub(super) fn on_state_gossip(
        &mut self,
        data: &[u8],
        source: Option<PeerId>,
    ) -> gossipsub::MessageAcceptance {
        let encoded: Vec<ByteBuf> = match ciborium::from_reader(data) {
            Ok(list) => list,
            Err(e) => {
                self.metrics.state_rejected(EntryRejection::Malformed);
                tracing::debug!(peer = ?source, "undecodable state gossip: {e}");
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        if encoded.len() > MAX_GOSSIP_ENTRIES {
            self.metrics.state_rejected(EntryRejection::Oversize);
            return gossipsub::MessageAcceptance::Reject;
        }
        let mut entries = Vec::with_capacity(encoded.len());
        for bytes in &encoded {
            match Entry::decode(bytes) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    self.metrics.state_rejected(e.reason);
                    return gossipsub::MessageAcceptance::Reject;
                }
            }
        }
        entries.retain(|e| self.replicates(&e.namespace));
        if entries.is_empty() {
            return gossipsub::MessageAcceptance::Ignore;
        }
        let results = self.ingest(entries, source.as_ref());
        if results.is_empty() {
            // Not stored here; it may still be good for others.
            return gossipsub::MessageAcceptance::Ignore;
        }
        let reasons: Vec<EntryRejection> =
            results.iter().filter_map(|r| r.as_ref().err().map(|e| e.reason)).collect();
        if reasons
            .iter()
            .any(|r| !matches!(r, EntryRejection::Unauthorized | EntryRejection::FutureTimestamp))
        {
            gossipsub::MessageAcceptance::Reject
        } else if !reasons.is_empty() {
            gossipsub::MessageAcceptance::Ignore
        } else {
            gossipsub::MessageAcceptance::Accept
        }
    }

    /// Starts catching up with a peer: ask which namespaces it holds.
    pub(super) fn start_state_sync(&mut self, peer: PeerId) {
        self.send_sync(peer, SyncRequest::Namespaces, SyncStep::Namespaces);
    }

    pub(super) fn on_state_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let response = self.serve_sync(peer, request);
                    let _ = self.swarm.behaviour_mut().state_sync.send_response(channel, response);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((peer, step)) = self.syncs.remove(&request_id) {
                        self.sync_done(peer);
                        self.on_sync_response(peer, step, response);
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, peer, error, .. } => {
                if let Some((_, step)) = self.syncs.remove(&request_id) {
                    self.sync_done(peer);
                    if matches!(step, SyncStep::Replicate) {
                        self.replica_answered(peer);
                    }
                }
                // Peers that do not speak the protocol (other libp2p nodes) land here too.
                tracing::debug!(%peer, "state sync request failed: {error}");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "state sync: inbound failure: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn serve_sync(&mut self, peer: PeerId, request: SyncRequest) -> SyncResponse {
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
                match crate::state::sync::respond(self.state.replica(), &ns, &msg) {
                    Ok(answer) => {
                        self.holders.entry(ns).or_default().insert(peer);
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
                let (accepted, rejected) = self.ingest_batch(entries.into_iter().take(MAX_FETCH_IDS), peer);
                SyncResponse::Pushed { accepted, rejected }
            }
            SyncRequest::Replicate { ns } => {
                if ns.parse::<PeerId>().is_err() {
                    return SyncResponse::Refused("not a namespace".into());
                }
                if !self.holds(&ns) {
                    if self.config.replica_quota == 0 {
                        return SyncResponse::Refused("this node keeps no replicas for others".into());
                    }
                    if !self.has_room() {
                        return SyncResponse::Refused("replica quota reached".into());
                    }
                    tracing::debug!(%peer, %ns, "keeping a replica on request");
                    self.wanted.insert(ns);
                    // Catch up with the asker now, not at the next round.
                    self.start_state_sync(peer);
                }
                SyncResponse::Replicating
            }
        }
    }

    /// Decodes and merges a batch (access-list entries first).
    fn ingest_batch(&mut self, encoded: impl Iterator<Item = ByteBuf>, peer: PeerId) -> (u32, u32) {
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
        for result in self.ingest(entries, Some(&peer)) {
            match result {
                Ok(_) => accepted += 1,
                Err(_) => rejected += 1,
            }
        }
        (accepted, rejected)
    }

    fn on_sync_response(&mut self, peer: PeerId, step: SyncStep, response: SyncResponse) {
        match (step, response) {
            (SyncStep::Namespaces, SyncResponse::Namespaces(theirs)) => {
                let mut wanted: HashSet<String> =
                    self.state.replica().namespaces().map(String::from).collect();
                wanted.insert(self.local_id.clone());
                for (ns, their_digest) in theirs.into_iter().take(MAX_NAMESPACES) {
                    if ns.parse::<PeerId>().is_err() {
                        continue;
                    }
                    self.holders.entry(ns.clone()).or_default().insert(peer);
                    if their_digest.as_ref() == digest(self.state.replica(), &ns) {
                        // Already the same: nothing to reconcile.
                        wanted.remove(&ns);
                    } else if self.replicates(&ns) {
                        wanted.insert(ns);
                    }
                }
                for ns in wanted {
                    match Initiator::start(self.state.replica(), &ns) {
                        Ok((initiator, first)) => {
                            let request =
                                SyncRequest::Reconcile { ns: ns.clone(), msg: ByteBuf::from(first) };
                            let step = SyncStep::Reconcile { ns, initiator: Box::new(initiator) };
                            self.send_sync(peer, request, step);
                        }
                        Err(e) => tracing::debug!(%ns, "cannot start reconciling: {e}"),
                    }
                }
            }
            (SyncStep::Reconcile { ns, mut initiator }, SyncResponse::Reconcile(answer)) => {
                match initiator.step(&answer) {
                    Ok(Some(next)) => {
                        let request = SyncRequest::Reconcile { ns: ns.clone(), msg: ByteBuf::from(next) };
                        self.send_sync(peer, request, SyncStep::Reconcile { ns, initiator });
                    }
                    Ok(None) => self.finish_reconcile(peer, ns, &initiator),
                    Err(e) => tracing::debug!(%peer, %ns, "reconciliation failed: {e}"),
                }
            }
            (SyncStep::Fetch, SyncResponse::Entries(entries)) => {
                self.ingest_batch(entries.into_iter().take(MAX_FETCH_IDS), peer);
            }
            (SyncStep::Push, SyncResponse::Pushed { .. }) => {}
            (SyncStep::Replicate, SyncResponse::Replicating) => {
                // It has undertaken to hold our namespace and is catching up.
                self.replica_answered(peer);
                self.holders.entry(self.local_id.clone()).or_default().insert(peer);
            }
            (SyncStep::Replicate, SyncResponse::Refused(reason)) => {
                tracing::debug!(%peer, "replica refused: {reason}");
                self.replica_answered(peer);
            }
            (_, SyncResponse::Refused(reason)) => tracing::debug!(%peer, "state sync refused: {reason}"),
            _ => tracing::debug!(%peer, "state sync: unexpected response"),
        }
    }

    /// Fetches what we lack and pushes what the peer lacks, in batches.
    fn finish_reconcile(&mut self, peer: PeerId, ns: String, initiator: &Initiator) {
        if !initiator.have.is_empty() || !initiator.need.is_empty() {
            tracing::debug!(%peer, %ns, have = initiator.have.len(), need = initiator.need.len(), "reconciled");
        }
        for chunk in initiator.need.chunks(MAX_FETCH_IDS) {
            let ids = chunk.iter().map(|id| ByteBuf::from(id.to_vec())).collect();
            self.send_sync(peer, SyncRequest::Fetch { ns: ns.clone(), ids }, SyncStep::Fetch);
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        let have: Vec<Vec<u8>> = initiator
            .have
            .iter()
            .filter_map(|id| self.state.replica().by_id(id))
            .map(Entry::encode)
            .collect();
        for encoded in have {
            if !batch.is_empty() && (bytes + encoded.len() > MAX_BATCH_BYTES || batch.len() >= MAX_FETCH_IDS)
            {
                self.push(peer, std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += encoded.len();
            batch.push(ByteBuf::from(encoded));
        }
        if !batch.is_empty() {
            self.push(peer, batch);
        }
    }

    fn push(&mut self, peer: PeerId, entries: Vec<ByteBuf>) {
        self.send_sync(peer, SyncRequest::Push { entries }, SyncStep::Push);
    }
}
