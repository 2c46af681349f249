//! The one libp2p `NetworkBehaviour` of every InferMesh node. Optional
//! protocols are `Toggle`d by configuration, never forked per kind of node.

use std::{num::NonZeroUsize, time::Duration};

use libp2p::{
    PeerId, StreamProtocol, connection_limits, gossipsub, identify,
    identity::Keypair,
    kad, ping, relay, request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};
use sha2::{Digest, Sha256};

use super::peer_limit::PeerLimit;
use crate::{
    MeshConfig, MeshError, platform,
    protocols::{
        direct,
        jobs::wire::{self as jobs, JobRequest, JobResponse},
        networks::wire::{self as networks, NetRequest, NetResponse},
        replication::wire::{self as replication, SyncRequest, SyncResponse},
        sessions::wire::{self as e2e, E2eRequest, E2eResponse},
    },
};

/// Identify's protocol version string for InferMesh nodes.
pub(crate) const PROTOCOL_VERSION: &str = "/infermesh/1.0.0";
/// Our DHT's protocol, kept apart from the public IPFS DHT.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/kad/1.0.0");

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) peer_limit: PeerLimit,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<platform::RelayServer>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    /// The state topic's own gossipsub: anonymous, content-addressed (the
    /// entries inside are signed; see `protocols::replication::wire`).
    pub(crate) state_gossip: gossipsub::Behaviour,
    pub(crate) direct: direct::Behaviour,
    pub(crate) state_sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub(crate) e2e: request_response::cbor::Behaviour<E2eRequest, E2eResponse>,
    pub(crate) networks: request_response::cbor::Behaviour<NetRequest, NetResponse>,
    pub(crate) jobs: request_response::cbor::Behaviour<JobRequest, JobResponse>,
    pub(crate) autonat: Toggle<platform::Autonat>,
    pub(crate) dcutr: Toggle<platform::Dcutr>,
    pub(crate) mdns: Toggle<platform::Mdns>,
}

/// Message IDs are content hashes over topic and data, so the same bytes
/// published twice are one message, and the same envelope on two topics
/// is two.
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut hash = Sha256::new();
    hash.update(message.topic.as_str().as_bytes());
    hash.update([0]);
    hash.update(&message.data);
    gossipsub::MessageId::from(&hash.finalize()[..20])
}

/// Scoring for one topic: reward time in mesh and first deliveries,
/// punish invalid messages hard. Mesh delivery deficits (P3) are not
/// scored: InferMesh topics are often quiet, and P3 would punish honest
/// peers for silence.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    }
}

fn gossip_config(config: &MeshConfig) -> gossipsub::ConfigBuilder {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .heartbeat_interval(config.timing.gossip_heartbeat)
        .validate_messages()
        .message_id_fn(message_id)
        // Small meshes are normal for us: keep every subscribed peer meshed,
        // and graft a new subscriber as soon as its subscription arrives
        // (below `mesh_n_low`). Left to the next heartbeat, a message could
        // arrive in between, be forwarded to the mesh without it, and never
        // reach it by gossip either once it is grafted.
        .mesh_n_low(5)
        .mesh_n(6)
        .mesh_n_high(12)
        .mesh_outbound_min(0)
        .flood_publish(true);
    builder
}

/// The gossipsub of user topics: every message signed by its author and
/// verified by each receiver (envelopes name their sender).
fn gossipsub(keypair: &Keypair, config: &MeshConfig) -> Result<gossipsub::Behaviour, MeshError> {
    let setup = |e: &dyn std::fmt::Display| MeshError::Setup(format!("gossipsub: {e}"));
    let gossip_config = gossip_config(config)
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Room for our envelope limit plus protobuf framing; anything bigger
        // is dropped by gossipsub's codec before decoding, anything between
        // reaches our validator and is counted as oversize.
        .max_transmit_size(config.limits.max_envelope_bytes * 2 + 64 * 1024)
        .build()
        .map_err(|e| setup(&e))?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(keypair.clone()), gossip_config)
            .map_err(|e| setup(&e))?;
    behaviour
        .with_peer_score(gossipsub::PeerScoreParams::default(), gossipsub::PeerScoreThresholds::default())
        .map_err(|e| setup(&e))?;
    Ok(behaviour)
}

/// The gossipsub of the state topic. Its messages are batches of entries
/// that carry their own signatures, so the messages themselves are
/// anonymous (no signature for gossipsub to check on every copy that
/// arrives) and identified by their content. A batch that fails our checks
/// is rejected, which counts against the peer that sent it.
fn state_gossip(config: &MeshConfig) -> Result<gossipsub::Behaviour, MeshError> {
    let setup = |e: &dyn std::fmt::Display| MeshError::Setup(format!("state gossipsub: {e}"));
    let gossip_config = gossip_config(config)
        .protocol_id_prefix(replication::GOSSIP_PROTOCOL)
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .max_transmit_size(replication::MAX_GOSSIP_BYTES * 2 + 64 * 1024)
        .build()
        .map_err(|e| setup(&e))?;
    let mut behaviour = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| setup(&e))?;
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(gossipsub::IdentTopic::new(replication::STATE_TOPIC).hash(), topic_score_params());
    behaviour.with_peer_score(params, gossipsub::PeerScoreThresholds::default()).map_err(|e| setup(&e))?;
    Ok(behaviour)
}

pub(crate) fn build(
    config: &MeshConfig,
    relay_client: relay::client::Behaviour,
) -> Result<Behaviour, MeshError> {
    let keypair = config.identity.keypair();
    let peer_id: PeerId = keypair.public().to_peer_id();
    let timing = &config.timing;

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(config.max_pending_connections))
        .with_max_pending_outgoing(Some(config.max_pending_connections))
        .with_max_established_per_peer(Some(4))
        .with_max_established(Some((config.max_peers as u32).saturating_mul(2).saturating_add(8)));

    let relay_server = config.relay_server.then(|| platform::relay_server(peer_id));

    let identify = identify::Behaviour::new(
        identify::Config::new(PROTOCOL_VERSION.to_owned(), keypair.public())
            .with_agent_version(format!("infermesh/{} ({})", env!("CARGO_PKG_VERSION"), platform::NAME))
            .with_push_listen_addr_updates(true),
    );

    let ping = ping::Behaviour::new(
        ping::Config::new().with_interval(timing.ping_interval).with_timeout(timing.ping_timeout),
    );

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_query_timeout(Duration::from_secs(30))
        .set_periodic_bootstrap_interval(Some(timing.discovery_interval.max(Duration::from_secs(1))))
        .set_replication_factor(NonZeroUsize::new(20).expect("non-zero"));
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    kad.set_mode(Some(if config.kad_server { kad::Mode::Server } else { kad::Mode::Client }));

    let direct = direct::Behaviour::new(config.limits.max_envelope_bytes, timing.request_timeout);

    let state_sync = request_response::cbor::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(replication::MAX_REQUEST_BYTES)
            .set_response_size_maximum(replication::MAX_RESPONSE_BYTES),
        [(replication::PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timing.request_timeout)
            .with_max_concurrent_streams(config.max_streams_per_protocol),
    );

    let e2e = request_response::cbor::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(e2e::MAX_REQUEST_BYTES)
            .set_response_size_maximum(e2e::MAX_RESPONSE_BYTES),
        [(e2e::PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timing.request_timeout)
            .with_max_concurrent_streams(config.max_streams_per_protocol),
    );

    let networks = request_response::cbor::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(networks::MAX_REQUEST_BYTES)
            .set_response_size_maximum(networks::MAX_RESPONSE_BYTES),
        [(networks::PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timing.request_timeout)
            .with_max_concurrent_streams(8),
    );

    // The jobs driver times chunks out itself (from what it measured of
    // each worker); this bound only frees a stream nobody answers.
    let jobs = request_response::cbor::Behaviour::with_codec(
        request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(jobs::MAX_REQUEST_BYTES)
            .set_response_size_maximum(jobs::MAX_RESPONSE_BYTES),
        [(jobs::PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(600))
            .with_max_concurrent_streams(config.max_streams_per_protocol),
    );

    let mdns = if config.mdns {
        match platform::mdns(peer_id) {
            Ok(mdns) => Some(mdns),
            Err(e) => {
                tracing::warn!("mDNS unavailable: {e}");
                None
            }
        }
    } else {
        None
    };

    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        peer_limit: PeerLimit::new(
            config.max_peers,
            config.max_peers_per_ip,
            config
                .bootstrap
                .iter()
                .filter_map(|addr| {
                    addr.iter().find_map(|p| match p {
                        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                        _ => None,
                    })
                })
                .collect(),
        ),
        relay_client,
        relay_server: relay_server.into(),
        identify,
        ping,
        kad,
        gossipsub: gossipsub(keypair, config)?,
        state_gossip: state_gossip(config)?,
        direct,
        state_sync,
        e2e,
        networks,
        jobs,
        autonat: config.autonat.then(|| platform::autonat(peer_id)).into(),
        dcutr: config.dcutr.then(|| platform::dcutr(peer_id)).into(),
        mdns: mdns.into(),
    })
}
