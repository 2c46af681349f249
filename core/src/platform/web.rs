//! Browser platform: the wasm-bindgen executor, and WebSocket and
//! WebRTC-direct transports from `web-sys`. No mDNS in a browser.

use libp2p::{
    Multiaddr, PeerId, Transport as _,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade},
    identity::Keypair,
    noise,
    swarm::dummy,
    webrtc_websys, websocket_websys, yamux,
};

use super::PlatformError;

/// Options for the platform transports (none are needed in a browser).
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {}

/// Where this build runs (a web page), as announced in identify's agent version.
pub(crate) const NAME: &str = "browser";

pub(crate) fn swarm_config() -> libp2p::swarm::Config {
    libp2p::swarm::Config::with_wasm_executor()
}

pub(crate) fn transport(
    keypair: &Keypair,
    _options: &TransportOptions,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, PlatformError> {
    let ws = websocket_websys::Transport::default()
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(keypair).map_err(|e| PlatformError(e.to_string()))?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let webrtc = webrtc_websys::Transport::new(webrtc_websys::Config::new(keypair))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    Ok(ws.or_transport(webrtc).map(|either, _| either.into_inner()).boxed())
}

/// Browsers have no Prometheus endpoint: libp2p's protocol events are not
/// recorded (byte counts still are, for `metrics()`).
pub(crate) struct EventRecorder;

impl EventRecorder {
    pub(crate) fn new(_registry: &mut prometheus_client::registry::Registry) -> Self {
        EventRecorder
    }

    pub(crate) fn record<E>(&self, _event: &E) {}
}

/// Browsers do not relay for others, probe reachability or punch holes:
/// those protocols are not even compiled in.
pub(crate) type RelayServer = dummy::Behaviour;
pub(crate) type Autonat = dummy::Behaviour;
pub(crate) type Dcutr = dummy::Behaviour;

pub(crate) fn relay_server(_peer: PeerId) -> RelayServer {
    dummy::Behaviour
}

pub(crate) fn autonat(_peer: PeerId) -> Autonat {
    dummy::Behaviour
}

pub(crate) fn dcutr(_peer: PeerId) -> Dcutr {
    dummy::Behaviour
}

pub(crate) fn autonat_status(event: std::convert::Infallible) -> Option<String> {
    match event {}
}

/// A page relays for nobody: no relay-server events.
pub(crate) fn relay_change(event: &std::convert::Infallible) -> (i64, i64) {
    match *event {}
}

/// There is no mDNS in a browser: a behaviour that does nothing.
pub(crate) type Mdns = dummy::Behaviour;

pub(crate) fn mdns(_peer: PeerId) -> std::io::Result<Mdns> {
    Ok(dummy::Behaviour)
}

pub(crate) fn mdns_discovered(event: std::convert::Infallible) -> Vec<(PeerId, Multiaddr)> {
    match event {}
}
