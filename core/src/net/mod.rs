//! The network layer: the libp2p behaviour, transports, the direct-message
//! codec, discovery helpers and the event loop that owns the `Swarm`.
//! Nothing here is public outside the crate except [`EventLoop`].

mod behaviour;
mod codec;
mod direct;
mod e2e_proto;
mod event_loop;
mod peer_limit;
mod reconnect;
mod state_sync;
mod transport;

use std::{sync::Arc, time::Duration};

use libp2p::{Multiaddr, PeerId, Swarm, relay};
use tokio::sync::{mpsc, oneshot};

pub use event_loop::EventLoop;

use crate::{
    MeshConfig, MeshError,
    mesh::{Delivery, MeshEvent, PeerInfo, StateView, Status, WriteMode},
    metrics::Metrics,
    platform,
};

/// An encoded envelope on its way out.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub id: String,
    pub priority: u8,
    pub expires_at_ms: u64,
    /// The encoded envelope; empty when it is to be sealed.
    pub bytes: Vec<u8>,
    /// A direct message to seal end-to-end before it goes.
    pub seal: Option<Box<crate::messaging::Envelope>>,
}

/// Requests from handles to the event loop; each carries its reply channel.
pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, MeshError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    Join {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<bool, MeshError>>,
    },
    Unsubscribe {
        topic: String,
        reply: oneshot::Sender<bool>,
    },
    TopicPeers {
        topic: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Publish {
        topic: String,
        outbound: Outbound,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    SendDirect {
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
    },
    StateWrite {
        namespace: Option<String>,
        key: String,
        value: Option<serde_json::Value>,
        mode: WriteMode,
        private: bool,
        reply: oneshot::Sender<Result<(), crate::state::StateError>>,
    },
    StateGet {
        namespace: Option<String>,
        key: String,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    StateView {
        namespace: Option<String>,
        reply: oneshot::Sender<StateView>,
    },
    HeldMail {
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Builds the swarm and the event loop around it.
pub(crate) fn build(
    config: MeshConfig,
    store: Box<dyn crate::state::Store + Send>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MeshEvent>,
) -> Result<(EventLoop, Arc<Metrics>), MeshError> {
    let keypair = config.identity.keypair().clone();
    let peer_id = keypair.public().to_peer_id();
    let (relay_transport, relay_client) = relay::client::new(peer_id);

    let mut transport = None;
    let mut libp2p_metrics = None;
    let mut transport_error = None;
    let metrics = Arc::new(Metrics::new(|registry, bandwidth| {
        match transport::build(&keypair, &config.transport, relay_transport, bandwidth) {
            Ok(t) => transport = Some(t),
            Err(e) => transport_error = Some(e),
        }
        libp2p_metrics = Some(platform::EventRecorder::new(registry));
    }));
    if let Some(e) = transport_error {
        return Err(e);
    }
    let transport = transport.expect("set when no error");
    let state = crate::state::LocalState::open(config.identity.clone(), store)
        .map_err(|e| MeshError::Setup(e.to_string()))?;
    if state.skipped_at_load > 0 {
        tracing::warn!("{} stored state entries no longer verify and were skipped", state.skipped_at_load);
    }
    let behaviour = behaviour::build(&config, relay_client)?;
    let swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        platform::swarm_config().with_idle_connection_timeout(config.timing.idle_timeout),
    );
    let event_loop = EventLoop::new(
        swarm,
        state,
        config,
        commands,
        events,
        metrics.clone(),
        libp2p_metrics.expect("set by the registry callback"),
    );
    Ok((event_loop, metrics))
}

/// How often the event loop checks its timers (reconnects, discovery).
const TICK: Duration = Duration::from_millis(100);
/// Most ready events (or commands) handled in one go before the event loop
/// looks at its other sources again.
const BATCH: usize = 64;
