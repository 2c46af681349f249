//! The network layer: the one libp2p behaviour of every node, the
//! transports, and the event loop that owns the `Swarm`, routes what
//! happens to the protocol drivers in [`crate::protocols`] and carries out
//! their actions. Nothing here is public outside the crate except
//! [`EventLoop`].

mod behaviour;
mod command;
mod event_loop;
mod event_sink;
mod peer_limit;
mod persist;
mod transport;

use std::{sync::Arc, time::Duration};

use libp2p::{Swarm, relay};
use tokio::sync::mpsc;

pub(crate) use command::{Command, PoolCommand};
pub use event_loop::EventLoop;

use crate::{
    MeshConfig, MeshError, MeshEvent,
    metrics::Metrics,
    platform,
    store::{MailStore, Store},
};

/// Builds the swarm and the event loop around it, with what the stores
/// hold loaded.
pub(crate) fn build(
    config: MeshConfig,
    mut store: Box<dyn Store>,
    mut mail: Box<dyn MailStore>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MeshEvent>,
) -> Result<(EventLoop, Arc<Metrics>), MeshError> {
    let keypair = config.identity.keypair().clone();
    let peer_id = keypair.public().to_peer_id();
    let (relay_transport, relay_client) = relay::client::new(peer_id);

    let mut transport = None;
    let mut recorder = None;
    let mut transport_error = None;
    let metrics = Arc::new(Metrics::new(|registry, bandwidth| {
        match transport::build(&keypair, &config.transport, relay_transport, bandwidth) {
            Ok(t) => transport = Some(t),
            Err(e) => transport_error = Some(e),
        }
        recorder = Some(platform::EventRecorder::new(registry));
    }));
    if let Some(e) = transport_error {
        return Err(e);
    }
    metrics.set_limits(&config.limits_report());
    let transport = transport.expect("set when no error");
    let stored = store.load().map_err(|e| MeshError::Setup(e.to_string()))?;
    // Also without a mailbox: the store keeps receipts of held messages
    // this node received (its replay guard across restarts).
    let stored_mail = mail.load_mail().map_err(|e| MeshError::Setup(e.to_string()))?;
    let behaviour = behaviour::build(&config, relay_client)?;
    let swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        platform::swarm_config().with_idle_connection_timeout(config.timing.idle_timeout),
    );
    let parts = event_loop::Parts {
        swarm,
        commands,
        events,
        metrics: metrics.clone(),
        recorder: recorder.expect("set by the registry callback"),
        stored,
        stored_mail,
        store,
        mail,
    };
    Ok((EventLoop::new(config, parts), metrics))
}

/// How often the event loop checks its timers (reconnects, discovery).
const TICK: Duration = Duration::from_millis(100);
/// Most ready events (or commands) handled in one go before the event loop
/// looks at its other sources again.
const BATCH: usize = 64;
