//! Small facts about multiaddrs that several protocols need.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Whether the address goes through a relay (`/p2p-circuit`).
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The node ID an address ends with (`…/p2p/<id>`), if it does.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// The address without its `/p2p/<id>` parts.
pub(crate) fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn relayed_addresses_and_their_peers() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let direct: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}").parse().unwrap();
        let circuit: Multiaddr = format!("{direct}/p2p-circuit/p2p/{peer}").parse().unwrap();
        assert!(!is_relayed(&direct) && is_relayed(&circuit));
        assert_eq!((peer_of(&direct), peer_of(&circuit)), (Some(relay), Some(peer)));
        assert_eq!(peer_of(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()), None);
        assert_eq!(without_p2p(&circuit).to_string(), "/ip4/127.0.0.1/tcp/1/p2p-circuit");
    }
}
