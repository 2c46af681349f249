//! How a node is set up: [`MeshConfig`] and its parts. A leaf module: every
//! other part of the crate may read it.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::{Identity, messaging::Limits, platform::TransportOptions};

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
    /// Most distinct peers connected at once. Three quarters at most may
    /// be peers that connected to this node; the rest are kept for peers it
    /// dials (bootstrap peers are let in beyond it), so that sybils cannot
    /// eclipse it.
    pub max_peers: usize,
    /// Most peers connected from one IP address (loopback and relayed
    /// connections aside).
    pub max_peers_per_ip: usize,
    /// How long a peer whose gossip scored it below gossipsub's graylist
    /// threshold (invalid messages) is disconnected and kept out.
    pub ban_duration: Duration,
    /// Most connections being set up at once, in each direction.
    pub max_pending_connections: u32,
    /// Most streams of each request-response protocol (state sync, e2e,
    /// jobs) open at once on one connection; more are refused.
    pub max_streams_per_protocol: usize,
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
    /// What one namespace (entries, bytes), and the replica as a whole
    /// (bytes of others' namespaces), may hold.
    pub replica_limits: crate::state::ReplicaLimits,
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
    /// The weakest direct message this node accepts: `None` (the default)
    /// takes every sender, plaintext ones (`quantum_resistant` off)
    /// included; `Some(level)` refuses plaintext direct messages and
    /// sessions below `level` (`e2e_too_weak`), so that a node at level 5
    /// is not talked to at level 1.
    pub min_kem_level: Option<crate::crypto::Level>,
    /// Hold sealed direct messages for offline peers and deliver them when
    /// they connect (native nodes).
    pub mailbox: bool,
    /// Bounds of that mailbox.
    pub mailbox_limits: crate::messaging::MailboxLimits,
    /// When end-to-end session keys are rotated (by default after 2^20
    /// messages or an hour), with a fresh encapsulation.
    pub e2e_rekey: crate::crypto::Rekey,
    /// Tests of the spot checks only (feature `liar`): the share of the
    /// chunks this node runs for others that it answers with plausible
    /// wrong vectors.
    #[cfg(feature = "liar")]
    pub lie_rate: f64,
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
            max_peers_per_ip: 8,
            ban_duration: Duration::from_secs(600),
            max_pending_connections: 64,
            max_streams_per_protocol: 32,
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
            replica_limits: crate::state::ReplicaLimits::default(),
            replication_factor: 3,
            quantum_resistant: true,
            kem_level: crate::crypto::Level::L3,
            min_kem_level: None,
            mailbox: true,
            mailbox_limits: crate::messaging::MailboxLimits::default(),
            e2e_rekey: crate::crypto::Rekey::default(),
            #[cfg(feature = "liar")]
            lie_rate: 0.0,
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

impl MeshConfig {
    /// Every resource limit in force, by name (reported by `status` and as
    /// the `infermesh_limit` metric).
    pub fn limits_report(&self) -> std::collections::BTreeMap<String, u64> {
        let replica = &self.replica_limits;
        let mailbox = &self.mailbox_limits;
        let n = |v: usize| v as u64;
        [
            ("max_peers", n(self.max_peers)),
            ("max_inbound_peers", n((self.max_peers - self.max_peers / 4).max(1))),
            ("max_peers_per_ip", n(self.max_peers_per_ip)),
            ("max_pending_connections", u64::from(self.max_pending_connections)),
            ("max_streams_per_protocol", n(self.max_streams_per_protocol)),
            ("ban_seconds", self.ban_duration.as_secs()),
            ("max_envelope_bytes", n(self.limits.max_envelope_bytes)),
            ("direct_window", n(self.direct_window)),
            ("direct_queue", n(self.direct_queue)),
            ("event_buffer", n(self.event_buffer)),
            ("hub_topics", n(self.hub_topics)),
            ("replica_quota", n(self.replica_quota)),
            ("replica_entries_per_namespace", n(replica.entries_per_namespace)),
            ("replica_bytes_per_namespace", n(replica.bytes_per_namespace)),
            ("replica_total_bytes", n(replica.total_bytes)),
            ("mailbox_per_recipient", n(mailbox.per_recipient)),
            ("mailbox_bytes_per_recipient", n(mailbox.bytes_per_recipient)),
            ("mailbox_recipients", n(mailbox.recipients)),
            ("mailbox_per_depositor", n(mailbox.per_depositor)),
            ("mailbox_bytes_per_depositor", n(mailbox.bytes_per_depositor)),
            ("mailbox_total_bytes", n(mailbox.total_bytes)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Sets one limit by its name in [`MeshConfig::limits_report`]
    /// (`max_inbound_peers` follows from `max_peers`).
    pub fn set_limit(&mut self, name: &str, value: u64) -> Result<(), String> {
        let n = usize::try_from(value).map_err(|_| format!("{value} is too large"))?;
        let replica = &mut self.replica_limits;
        let mailbox = &mut self.mailbox_limits;
        match name {
            "max_peers" => self.max_peers = n,
            "max_peers_per_ip" => self.max_peers_per_ip = n,
            "max_pending_connections" => {
                self.max_pending_connections =
                    u32::try_from(value).map_err(|_| format!("{value} is too large"))?
            }
            "max_streams_per_protocol" => self.max_streams_per_protocol = n,
            "ban_seconds" => self.ban_duration = Duration::from_secs(value),
            "max_envelope_bytes" => self.limits.max_envelope_bytes = n,
            "direct_window" => self.direct_window = n.max(1),
            "direct_queue" => self.direct_queue = n,
            "event_buffer" => self.event_buffer = n.max(1),
            "hub_topics" => self.hub_topics = n,
            "replica_quota" => self.replica_quota = n,
            "replica_entries_per_namespace" => replica.entries_per_namespace = n,
            "replica_bytes_per_namespace" => replica.bytes_per_namespace = n,
            "replica_total_bytes" => replica.total_bytes = n,
            "mailbox_per_recipient" => mailbox.per_recipient = n,
            "mailbox_bytes_per_recipient" => mailbox.bytes_per_recipient = n,
            "mailbox_recipients" => mailbox.recipients = n,
            "mailbox_per_depositor" => mailbox.per_depositor = n,
            "mailbox_bytes_per_depositor" => mailbox.bytes_per_depositor = n,
            "mailbox_total_bytes" => mailbox.total_bytes = n,
            _ => {
                let known: Vec<String> =
                    self.limits_report().into_keys().filter(|k| k != "max_inbound_peers").collect();
                return Err(format!("unknown limit '{name}': one of {}", known.join(", ")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn every_reported_limit_can_be_set_by_its_name() {
        let mut config = MeshConfig::server(Identity::from_seed([1; 32]));
        for name in config.limits_report().into_keys().filter(|k| k != "max_inbound_peers") {
            config.set_limit(&name, 7).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.limits_report()[&name], 7, "{name}");
        }
        assert!(config.set_limit("max_bananas", 1).unwrap_err().contains("max_peers_per_ip"));
    }
}
