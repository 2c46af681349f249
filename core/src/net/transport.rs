//! Transport assembly shared by both platforms: the platform's transports
//! (or the in-memory one) plus relay circuits, with bandwidth metering.

use libp2p::{
    PeerId, Transport as _,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade,
    },
    identity::Keypair,
    noise, relay, yamux,
};
use prometheus_client::registry::Registry;

use crate::{MeshError, TransportConfig, platform};

type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

fn noise(keypair: &Keypair) -> Result<noise::Config, MeshError> {
    noise::Config::new(keypair).map_err(|e| MeshError::Transport(format!("noise: {e}")))
}

fn memory(keypair: &Keypair) -> Result<BoxedTransport, MeshError> {
    Ok(MemoryTransport::default()
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise(keypair)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// The complete transport: relay circuits first (they claim only
/// `/p2p-circuit` addresses), then the base transports.
pub(crate) fn build(
    keypair: &Keypair,
    config: &TransportConfig,
    relay: relay::client::Transport,
    registry: &mut Registry,
) -> Result<BoxedTransport, MeshError> {
    let base = match config {
        TransportConfig::Platform(options) => platform::transport(keypair, options)?,
        TransportConfig::Memory => memory(keypair)?,
    };
    let relayed = relay
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise(keypair)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let combined = relayed.or_transport(base).map(|either, _| either.into_inner());
    Ok(libp2p::metrics::BandwidthTransport::new(combined, registry)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}
