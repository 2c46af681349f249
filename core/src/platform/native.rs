//! Native platform: tokio executor, TCP + WebSocket (with DNS), QUIC v1 and
//! WebRTC-direct transports, and mDNS.

use libp2p::{
    Multiaddr, PeerId, Transport as _,
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade},
    dns,
    identity::Keypair,
    mdns, noise, quic, tcp, websocket, yamux,
};

use super::PlatformError;

/// Options for the platform transports.
#[derive(Clone, Debug, Default)]
pub struct TransportOptions {
    /// The WebRTC certificate in PEM (certificate and private key). Keep it
    /// to keep the `/certhash` part of the WebRTC-direct address stable;
    /// `None` makes a fresh one.
    pub webrtc_certificate_pem: Option<String>,
}

/// Makes a new WebRTC certificate, returned as PEM to be stored.
pub fn generate_webrtc_certificate() -> Result<String, PlatformError> {
    let cert = libp2p_webrtc::tokio::Certificate::generate(&mut rand::rng())
        .map_err(|e| PlatformError(format!("WebRTC certificate: {e}")))?;
    Ok(cert.serialize_pem())
}

/// Where this build runs (a native process), as announced in identify's agent version.
pub(crate) const NAME: &str = "native";

pub(crate) fn swarm_config() -> libp2p::swarm::Config {
    libp2p::swarm::Config::with_tokio_executor()
}

pub(crate) fn transport(
    keypair: &Keypair,
    options: &TransportOptions,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, PlatformError> {
    // DNS goes around everything: it resolves `/dns*` and hands the result to
    // whichever transport supports it. Wrapped around only some transports it
    // would claim the others' addresses and fail them.
    match dns::tokio::Transport::system(transports(keypair, options)?) {
        Ok(with_dns) => Ok(with_dns.boxed()),
        Err(e) => {
            tracing::warn!("no system DNS configuration ({e}); /dns addresses cannot be dialled");
            transports(keypair, options)
        }
    }
}

/// The largest WebSocket frame (and message) a peer may send. The largest
/// a libp2p peer writes is one Noise frame (64 KiB and its length prefix).
const MAX_WEBSOCKET_FRAME: usize = 256 * 1024;
/// Longest a TCP or WebSocket connection may take to be set up (protocol
/// negotiation, Noise, Yamux).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TCP and WebSocket (Noise, Yamux), QUIC v1 and WebRTC-direct.
fn transports(
    keypair: &Keypair,
    options: &TransportOptions,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, PlatformError> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let mut ws = websocket::Config::new(tcp::tokio::Transport::new(tcp_config.clone()));
    // libp2p-websocket's default (256 MiB) is allocated on the length a
    // frame announces, before the peer is authenticated.
    ws.set_max_data_size(MAX_WEBSOCKET_FRAME);
    let streams = ws
        .or_transport(tcp::tokio::Transport::new(tcp_config))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(keypair).map_err(|e| PlatformError(e.to_string()))?)
        .multiplex(yamux::Config::default())
        // A connection that does not finish its handshake in time is
        // dropped: half-open sockets must not hold the pending slots.
        .timeout(HANDSHAKE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));

    let quic = quic::tokio::Transport::new(quic::Config::new(keypair))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));

    // QUIC brings rustls' aws-lc-rs provider and WebRTC's DTLS brings ring;
    // with both compiled in, rustls cannot pick a process default, which
    // the DTLS handshake relies on. Choose ring (what DTLS is built with);
    // an error means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = match &options.webrtc_certificate_pem {
        Some(pem) => libp2p_webrtc::tokio::Certificate::from_pem(pem)
            .map_err(|e| PlatformError(format!("stored WebRTC certificate is unusable: {e}")))?,
        None => libp2p_webrtc::tokio::Certificate::generate(&mut rand::rng())
            .map_err(|e| PlatformError(format!("WebRTC certificate: {e}")))?,
    };
    let webrtc = libp2p_webrtc::tokio::Transport::new(keypair.clone(), certificate)
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));

    Ok(streams
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .or_transport(webrtc)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// Records libp2p's protocol events into the Prometheus registry (served at
/// `/metrics` natively).
pub(crate) struct EventRecorder(libp2p::metrics::Metrics);

impl EventRecorder {
    pub(crate) fn new(registry: &mut prometheus_client::registry::Registry) -> Self {
        Self(libp2p::metrics::Metrics::new(registry))
    }

    pub(crate) fn record<E>(&self, event: &E)
    where
        libp2p::metrics::Metrics: libp2p::metrics::Recorder<E>,
    {
        libp2p::metrics::Recorder::record(&self.0, event)
    }
}

/// Relay v2 server (native nodes relay for browsers).
pub(crate) type RelayServer = libp2p::relay::Behaviour;
/// AutoNAT (reachability probing).
pub(crate) type Autonat = libp2p::autonat::Behaviour;
/// DCUtR (hole punching through relayed connections).
pub(crate) type Dcutr = libp2p::dcutr::Behaviour;

pub(crate) fn relay_server(peer: PeerId) -> RelayServer {
    libp2p::relay::Behaviour::new(
        peer,
        libp2p::relay::Config {
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: std::time::Duration::from_secs(3600),
            max_circuit_bytes: 64 * 1024 * 1024,
            ..Default::default()
        },
    )
}

pub(crate) fn autonat(peer: PeerId) -> Autonat {
    libp2p::autonat::Behaviour::new(peer, libp2p::autonat::Config::default())
}

pub(crate) fn dcutr(peer: PeerId) -> Dcutr {
    libp2p::dcutr::Behaviour::new(peer)
}

/// What an AutoNAT event says about our reachability, if anything.
pub(crate) fn autonat_status(event: libp2p::autonat::Event) -> Option<String> {
    match event {
        libp2p::autonat::Event::StatusChanged { new, .. } => Some(format!("{new:?}")),
        _ => None,
    }
}

/// How a relay-server event changes the reservations and the circuits
/// this node holds for others: `(reservations, circuits)`.
pub(crate) fn relay_change(event: &libp2p::relay::Event) -> (i64, i64) {
    use libp2p::relay::Event;
    match event {
        Event::ReservationReqAccepted { renewed: false, .. } => (1, 0),
        Event::ReservationClosed { .. } | Event::ReservationTimedOut { .. } => (-1, 0),
        Event::CircuitReqAccepted { .. } => (0, 1),
        Event::CircuitClosed { .. } => (0, -1),
        _ => (0, 0),
    }
}

/// mDNS discovery of peers on the local network.
pub(crate) type Mdns = mdns::tokio::Behaviour;

pub(crate) fn mdns(peer: PeerId) -> std::io::Result<Mdns> {
    mdns::tokio::Behaviour::new(mdns::Config::default(), peer)
}

/// The peers an mDNS event announces.
pub(crate) fn mdns_discovered(event: mdns::Event) -> Vec<(PeerId, Multiaddr)> {
    match event {
        mdns::Event::Discovered(found) => found,
        mdns::Event::Expired(_) => Vec::new(),
    }
}
