//! Metrics of a mesh node, kept in a Prometheus registry (served natively at
//! `/metrics`) and summarised as a [`MetricsSnapshot`] for the CLI and the
//! browser.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::{
        EncodeLabelSet,
        text::{encode_eof, encode_registry},
    },
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Serialize;

use crate::{messaging::RejectReason, state::EntryRejection};

/// How a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Gossipsub broadcast on a topic.
    Gossip,
    /// Request-response to one peer.
    Direct,
}

impl Route {
    const ALL: [Route; 2] = [Route::Gossip, Route::Direct];

    fn as_str(self) -> &'static str {
        match self {
            Route::Gossip => "gossip",
            Route::Direct => "direct",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// The counters, shared by the event loop (which writes) and handles
/// (which read).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// libp2p's byte counters on their own, so that a snapshot reads them
    /// without encoding every other metric (libp2p keeps them private).
    bandwidth: Registry,
    // Handles into the registered families, resolved once: counting is then
    // one atomic add, with no label lookup.
    messages_in: [Counter; 2],
    messages_out: [Counter; 2],
    dropped: [Counter; RejectReason::ALL.len()],
    peers: Gauge,
    latency: Histogram,
    state_ingested: Counter,
    state_rejected: [Counter; EntryRejection::ALL.len()],
    state_namespaces: Gauge,
    state_entries: Gauge,
    state_lag: Histogram,
    /// The lag of the last entry that arrived, in milliseconds (for
    /// snapshots: the histogram's buckets are private to it).
    state_last_lag_ms: Arc<AtomicU64>,
    relay_reservations: Gauge,
    relay_circuits: Gauge,
    e2e_sessions: Gauge,
    e2e_rekeys: Counter,
    e2e_decrypt_failures: Counter,
    e2e_replays: Counter,
    mailbox_held: Gauge,
    mailbox_delivered: Counter,
    jobs_done: Counter,
    jobs_failed: Counter,
    job_chunks_refused: Counter,
    job_chunks_served: Counter,
    credit_checks: Counter,
    credit_caught: Counter,
    credit_records_refused: Counter,
    peers_banned: Counter,
    limits: Family<NameLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics; `register_more` adds other collectors (libp2p's)
    /// before the registries are frozen: protocol metrics to the first,
    /// the transport's byte counters to the second.
    pub(crate) fn new(register_more: impl FnOnce(&mut Registry, &mut Registry)) -> Self {
        let mut registry = Registry::default();
        let mut bandwidth = Registry::default();
        let messages_in = Family::<RouteLabel, Counter>::default();
        let messages_out = Family::<RouteLabel, Counter>::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let peers = Gauge::default();
        let latency =
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        let sub = registry.sub_registry_with_prefix("infermesh");
        sub.register("messages_in", "Envelopes accepted from the network", messages_in.clone());
        sub.register("messages_out", "Envelopes sent", messages_out.clone());
        sub.register("messages_dropped", "Inbound envelopes rejected, by reason", dropped.clone());
        sub.register("connected_peers", "Peers with at least one connection", peers.clone());
        sub.register(
            "direct_delivery_seconds",
            "Direct message send-to-acknowledgement time",
            latency.clone(),
        );
        // Every label appears in the exposition from the start, at zero.
        let by_route = |family: &Family<RouteLabel, Counter>| {
            Route::ALL.map(|route| family.get_or_create(&RouteLabel { route: route.as_str() }).clone())
        };
        let (messages_in, messages_out) = (by_route(&messages_in), by_route(&messages_out));
        let dropped = RejectReason::ALL
            .map(|reason| dropped.get_or_create(&ReasonLabel { reason: reason.as_str() }).clone());
        let state_ingested = Counter::default();
        let state_rejected = Family::<ReasonLabel, Counter>::default();
        sub.register(
            "state_entries_ingested",
            "State entries from peers that changed a value",
            state_ingested.clone(),
        );
        sub.register("state_entries_rejected", "State entries refused, by reason", state_rejected.clone());
        let state_rejected = EntryRejection::ALL
            .map(|reason| state_rejected.get_or_create(&ReasonLabel { reason: reason.as_str() }).clone());
        let (state_namespaces, state_entries) = (Gauge::default(), Gauge::default());
        sub.register("state_namespaces", "Namespaces held (own and replicas)", state_namespaces.clone());
        sub.register("state_entries", "State entries held (tombstones included)", state_entries.clone());
        let state_lag = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
        ]);
        sub.register(
            "state_sync_lag_seconds",
            "How long after it was written a peer's state entry changed a value here",
            state_lag.clone(),
        );
        let (relay_reservations, relay_circuits) = (Gauge::default(), Gauge::default());
        sub.register(
            "relay_reservations",
            "Relay reservations this node holds for others",
            relay_reservations.clone(),
        );
        sub.register("relay_circuits", "Relayed connections open through this node", relay_circuits.clone());
        let (e2e_sessions, mailbox_held) = (Gauge::default(), Gauge::default());
        let [e2e_rekeys, e2e_decrypt_failures, e2e_replays, mailbox_delivered] =
            std::array::from_fn(|_| Counter::default());
        sub.register(
            "e2e_sessions",
            "Peers with a quantum-secure end-to-end session (hybrid ML-KEM + X25519)",
            e2e_sessions.clone(),
        );
        sub.register("e2e_rekeys", "End-to-end session keys rotated", e2e_rekeys.clone());
        sub.register(
            "e2e_decrypt_failures",
            "End-to-end encrypted messages that did not decrypt",
            e2e_decrypt_failures.clone(),
        );
        sub.register(
            "e2e_replays_rejected",
            "End-to-end encrypted messages refused as replays",
            e2e_replays.clone(),
        );
        sub.register(
            "mailbox_held",
            "Sealed messages held for offline peers (until the recipient acknowledges them)",
            mailbox_held.clone(),
        );
        sub.register(
            "mailbox_delivered",
            "Held messages delivered to their recipient",
            mailbox_delivered.clone(),
        );
        let [jobs_done, jobs_failed, job_chunks_refused, job_chunks_served] =
            std::array::from_fn(|_| Counter::default());
        sub.register("jobs_done", "Jobs this node asked for that finished", jobs_done.clone());
        sub.register("jobs_failed", "Jobs this node asked for that failed", jobs_failed.clone());
        sub.register(
            "job_chunks_refused",
            "Chunks refused: from non-members or malformed, and answers that did not check out",
            job_chunks_refused.clone(),
        );
        sub.register("job_chunks_served", "Chunks run here for other members", job_chunks_served.clone());
        let [credit_checks, credit_caught, credit_records_refused] =
            std::array::from_fn(|_| Counter::default());
        sub.register(
            "credit_checks",
            "Chunks of this node's jobs drawn for a spot check",
            credit_checks.clone(),
        );
        sub.register(
            "credit_caught",
            "Workers whose answer lost a spot check of this node's",
            credit_caught.clone(),
        );
        sub.register(
            "credit_records_refused",
            "Receipts and check outcomes refused: forged, replayed, for another network or oversize",
            credit_records_refused.clone(),
        );
        let limits = Family::<NameLabel, Gauge>::default();
        sub.register("limit", "Resource limits in force, by name", limits.clone());
        let peers_banned = Counter::default();
        sub.register(
            "peers_banned",
            "Peers disconnected and kept out for a while for invalid gossip",
            peers_banned.clone(),
        );
        register_more(&mut registry, &mut bandwidth);
        Self {
            registry,
            bandwidth,
            messages_in,
            messages_out,
            dropped,
            peers,
            latency,
            state_ingested,
            state_rejected,
            state_namespaces,
            state_entries,
            state_lag,
            state_last_lag_ms: Arc::default(),
            relay_reservations,
            relay_circuits,
            e2e_sessions,
            e2e_rekeys,
            e2e_decrypt_failures,
            e2e_replays,
            mailbox_held,
            mailbox_delivered,
            jobs_done,
            jobs_failed,
            job_chunks_refused,
            job_chunks_served,
            credit_checks,
            credit_caught,
            credit_records_refused,
            peers_banned,
            limits,
        }
    }

    /// Publishes the limits in force as `infermesh_limit{name}` (set once).
    pub(crate) fn set_limits(&self, limits: &BTreeMap<String, u64>) {
        for (name, value) in limits {
            self.limits.get_or_create(&NameLabel { name: name.clone() }).set(*value as i64);
        }
    }

    pub(crate) fn peer_banned(&self) {
        self.peers_banned.inc();
    }

    pub(crate) fn job_finished(&self, ok: bool) {
        if ok {
            self.jobs_done.inc()
        } else {
            self.jobs_failed.inc()
        };
    }

    pub(crate) fn job_chunk_refused(&self) {
        self.job_chunks_refused.inc();
    }

    pub(crate) fn job_chunk_served(&self) {
        self.job_chunks_served.inc();
    }

    pub(crate) fn credit_check(&self) {
        self.credit_checks.inc();
    }

    pub(crate) fn credit_caught(&self) {
        self.credit_caught.inc();
    }

    pub(crate) fn credit_record_refused(&self) {
        self.credit_records_refused.inc();
    }

    pub(crate) fn set_e2e_sessions(&self, n: usize) {
        self.e2e_sessions.set(n as i64);
    }

    pub(crate) fn e2e_rekeyed(&self) {
        self.e2e_rekeys.inc();
    }

    pub(crate) fn set_mailbox_held(&self, n: usize) {
        self.mailbox_held.set(n as i64);
    }

    pub(crate) fn mailbox_delivered(&self, n: u64) {
        self.mailbox_delivered.inc_by(n);
    }

    pub(crate) fn message_in(&self, route: Route) {
        self.messages_in[route as usize].inc();
    }

    pub(crate) fn message_out(&self, route: Route) {
        self.messages_out[route as usize].inc();
    }

    pub(crate) fn dropped(&self, reason: RejectReason) {
        self.dropped[reason as usize].inc();
        match reason {
            RejectReason::Decrypt => self.e2e_decrypt_failures.inc(),
            RejectReason::Replay => self.e2e_replays.inc(),
            _ => 0,
        };
    }

    pub(crate) fn state_ingested(&self) {
        self.state_ingested.inc();
    }

    /// A peer's entry written `lag_ms` milliseconds ago changed a value here.
    pub(crate) fn state_arrived(&self, lag_ms: u64) {
        self.state_lag.observe(lag_ms as f64 / 1000.0);
        self.state_last_lag_ms.store(lag_ms, Ordering::Relaxed);
    }

    /// Relay reservations and circuits this node holds for others, by
    /// how much they changed.
    pub(crate) fn relay_changed(&self, reservations: i64, circuits: i64) {
        // Never below zero, whatever order the events come in.
        for (gauge, by) in [(&self.relay_reservations, reservations), (&self.relay_circuits, circuits)] {
            if by != 0 {
                let now = gauge.inc_by(by) + by;
                if now < 0 {
                    gauge.set(0);
                }
            }
        }
    }

    pub(crate) fn state_rejected(&self, reason: EntryRejection) {
        self.state_rejected[reason as usize].inc();
    }

    pub(crate) fn set_state_size(&self, namespaces: usize, entries: usize) {
        self.state_namespaces.set(namespaces as i64);
        self.state_entries.set(entries as i64);
    }

    pub(crate) fn set_peers(&self, n: usize) {
        self.peers.set(n as i64);
    }

    pub(crate) fn delivered(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// The whole registry in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        encode_registry(&mut out, &self.bandwidth).expect("writing to a String cannot fail");
        encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let sum = |counters: &[Counter; 2]| counters.iter().map(Counter::get).sum();
        let dropped_by_reason: BTreeMap<String, u64> = RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), self.dropped[*r as usize].get()))
            .collect();
        let mut exposition = String::new();
        encode_registry(&mut exposition, &self.bandwidth).expect("writing to a String cannot fail");
        let (bytes_in, bytes_out) = bandwidth_totals(&exposition);
        MetricsSnapshot {
            connected_peers: self.peers.get().max(0) as u64,
            bytes_in,
            bytes_out,
            messages_in: sum(&self.messages_in),
            messages_out: sum(&self.messages_out),
            messages_dropped: dropped_by_reason.values().sum(),
            dropped_by_reason,
            state_entries_ingested: self.state_ingested.get(),
            state_entries_rejected: self.state_rejected.iter().map(Counter::get).sum(),
            state_namespaces: self.state_namespaces.get().max(0) as u64,
            state_entries: self.state_entries.get().max(0) as u64,
            state_last_sync_lag_ms: self.state_last_lag_ms.load(Ordering::Relaxed),
            e2e_sessions: self.e2e_sessions.get().max(0) as u64,
            e2e_rekeys: self.e2e_rekeys.get(),
            e2e_decrypt_failures: self.e2e_decrypt_failures.get(),
            e2e_replays_rejected: self.e2e_replays.get(),
            mailbox_held: self.mailbox_held.get().max(0) as u64,
            mailbox_delivered: self.mailbox_delivered.get(),
            relay_reservations: self.relay_reservations.get().max(0) as u64,
            relay_circuits: self.relay_circuits.get().max(0) as u64,
            jobs_done: self.jobs_done.get(),
            jobs_failed: self.jobs_failed.get(),
            job_chunks_refused: self.job_chunks_refused.get(),
            job_chunks_served: self.job_chunks_served.get(),
            credit_checks: self.credit_checks.get(),
            credit_caught: self.credit_caught.get(),
            credit_records_refused: self.credit_records_refused.get(),
            peers_banned: self.peers_banned.get(),
            state_rejected_by_reason: EntryRejection::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.state_rejected[*r as usize].get()))
                .collect(),
        }
    }
}

/// Sums libp2p's bandwidth counters (`libp2p_bandwidth_bytes_total`) by
/// direction from the text exposition; the counters themselves are private
/// to `libp2p-metrics`.
fn bandwidth_totals(exposition: &str) -> (u64, u64) {
    let (mut inbound, mut outbound) = (0u64, 0u64);
    for line in exposition.lines().filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{")) {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if line.contains("direction=\"Inbound\"") {
            inbound += value as u64;
        } else if line.contains("direction=\"Outbound\"") {
            outbound += value as u64;
        }
    }
    (inbound, outbound)
}

/// A point-in-time summary of a node's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Peers with at least one connection.
    pub connected_peers: u64,
    /// Bytes received over all connections.
    pub bytes_in: u64,
    /// Bytes sent over all connections.
    pub bytes_out: u64,
    /// Envelopes accepted from the network.
    pub messages_in: u64,
    /// Envelopes sent.
    pub messages_out: u64,
    /// Inbound envelopes rejected.
    pub messages_dropped: u64,
    /// Rejections by reason label (see [`RejectReason::as_str`]).
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// State entries from peers that changed a value.
    pub state_entries_ingested: u64,
    /// State entries refused (bad signature, not authorised, …).
    pub state_entries_rejected: u64,
    /// State refusals by reason label (see [`EntryRejection::as_str`]).
    pub state_rejected_by_reason: BTreeMap<String, u64>,
    /// Namespaces held (this node's own and its replicas).
    pub state_namespaces: u64,
    /// State entries held, tombstones included.
    pub state_entries: u64,
    /// How long after it was written the last entry from a peer changed a
    /// value here (ms; 0 before any arrived).
    pub state_last_sync_lag_ms: u64,
    /// Peers with a quantum-secure end-to-end session.
    pub e2e_sessions: u64,
    /// End-to-end session keys rotated.
    pub e2e_rekeys: u64,
    /// End-to-end encrypted messages that did not decrypt.
    pub e2e_decrypt_failures: u64,
    /// End-to-end encrypted messages refused as replays.
    pub e2e_replays_rejected: u64,
    /// Sealed messages held for offline peers.
    pub mailbox_held: u64,
    /// Held messages delivered to their recipient.
    pub mailbox_delivered: u64,
    /// Relay reservations this node holds for others (native nodes).
    pub relay_reservations: u64,
    /// Relayed connections open through this node (native nodes).
    pub relay_circuits: u64,
    /// Jobs this node asked for that finished.
    pub jobs_done: u64,
    /// Jobs this node asked for that failed.
    pub jobs_failed: u64,
    /// Chunks refused (from non-members, malformed) and answers refused.
    pub job_chunks_refused: u64,
    /// Chunks run here for other members.
    pub job_chunks_served: u64,
    /// Chunks of this node's jobs drawn for a spot check.
    pub credit_checks: u64,
    /// Workers whose answer lost a spot check of this node's.
    pub credit_caught: u64,
    /// Receipts and check outcomes refused (forged, replayed, not ours).
    pub credit_records_refused: u64,
    /// Peers banned for invalid gossip.
    pub peers_banned: u64,
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn snapshot_counts_and_exposition() {
        let m = Metrics::new(|_, _| {});
        m.message_in(Route::Gossip);
        m.message_in(Route::Direct);
        m.message_out(Route::Direct);
        m.dropped(RejectReason::Expired);
        m.dropped(RejectReason::Expired);
        m.set_peers(3);
        let s = m.snapshot();
        assert_eq!((s.messages_in, s.messages_out, s.messages_dropped, s.connected_peers), (2, 1, 2, 3));
        assert_eq!(s.dropped_by_reason["expired"], 2);
        assert_eq!(s.dropped_by_reason["oversize"], 0);
        let text = m.encode();
        assert!(text.contains("infermesh_messages_dropped_total{reason=\"expired\"} 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The transport's byte counters, kept apart, are in the exposition
    /// and in snapshots.
    #[test]
    fn bandwidth_is_counted_from_its_own_registry() {
        let m = Metrics::new(|_, bandwidth| {
            #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct Direction {
                direction: &'static str,
            }
            let family = Family::<Direction, Counter>::default();
            bandwidth.sub_registry_with_prefix("libp2p").register("bandwidth_bytes", "bytes", family.clone());
            family.get_or_create(&Direction { direction: "Inbound" }).inc_by(40);
            family.get_or_create(&Direction { direction: "Outbound" }).inc_by(2);
        });
        let s = m.snapshot();
        assert_eq!((s.bytes_in, s.bytes_out), (40, 2));
        let text = m.encode();
        assert!(text.contains("libp2p_bandwidth_bytes_total{direction=\"Inbound\"} 40"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn bandwidth_lines_are_summed_by_direction() {
        let text = "libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Inbound\"} 10\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip4/udp/quic-v1\",direction=\"Inbound\"} 5\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Outbound\"} 7\n";
        assert_eq!(bandwidth_totals(text), (15, 7));
    }
}
