//! Who may be connected: `max_peers` distinct peers, of which at most
//! three quarters came to us (the rest are kept for peers we dial, so that
//! sybils connecting to a node cannot take every slot and eclipse it), at
//! most `max_peers_per_ip` from one IP address (loopback and relayed
//! connections aside), bootstrap peers always, and no peer that is banned
//! (for invalid gossip) until its ban ends.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

use crate::platform::Instant;

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Denied {
    #[error("max_peers ({0}) reached")]
    MaxPeers(usize),
    #[error("{0} peers connected to us already (the rest of max_peers is kept for peers we dial)")]
    MaxInbound(usize),
    #[error("{0} peers from {1} already")]
    PerIp(usize, IpAddr),
    #[error("banned for invalid gossip")]
    Banned,
}

/// One connected peer.
struct Connected {
    connections: usize,
    /// Its first connection came to us.
    inbound: bool,
    /// Its IP, when it counts towards the per-IP limit.
    ip: Option<IpAddr>,
}

pub(crate) struct PeerLimit {
    max_peers: usize,
    max_inbound: usize,
    per_ip: usize,
    /// Bootstrap peers: let in whatever the counts (unless banned).
    pinned: HashSet<PeerId>,
    peers: HashMap<PeerId, Connected>,
    banned: HashMap<PeerId, Instant>,
    /// Inbound connections being set up, by the IP they count under.
    pending: HashMap<ConnectionId, IpAddr>,
}

/// The IP a connection counts under: none for loopback (tests, local
/// tools), memory and relayed connections.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let ip = addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })?;
    (!ip.is_loopback()).then_some(ip)
}

impl PeerLimit {
    pub(crate) fn new(max_peers: usize, per_ip: usize, pinned: HashSet<PeerId>) -> Self {
        let max_inbound = (max_peers - max_peers / 4).max(1);
        Self {
            max_peers,
            max_inbound,
            per_ip,
            pinned,
            peers: HashMap::new(),
            banned: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Keeps `peer` out until `until` (the caller disconnects it).
    pub(crate) fn ban(&mut self, peer: PeerId, until: Instant) {
        self.banned.insert(peer, until);
    }

    /// Whether `peer` is banned now (expired bans are forgotten).
    pub(crate) fn is_banned(&mut self, peer: &PeerId) -> bool {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        self.banned.contains_key(peer)
    }

    /// How many peers are banned now.
    pub(crate) fn banned_count(&mut self) -> usize {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        self.banned.len()
    }

    fn check(&mut self, peer: PeerId, inbound: bool, addr: &Multiaddr) -> Result<(), Denied> {
        if self.is_banned(&peer) {
            return Err(Denied::Banned);
        }
        if self.peers.contains_key(&peer) || self.pinned.contains(&peer) {
            return Ok(());
        }
        if self.peers.len() >= self.max_peers {
            return Err(Denied::MaxPeers(self.max_peers));
        }
        if inbound {
            if self.peers.values().filter(|p| p.inbound).count() >= self.max_inbound {
                return Err(Denied::MaxInbound(self.max_inbound));
            }
            if let Some(ip) = ip_of(addr)
                && self.peers.values().filter(|p| p.ip == Some(ip)).count() >= self.per_ip
            {
                return Err(Denied::PerIp(self.per_ip, ip));
            }
        }
        Ok(())
    }
}

impl NetworkBehaviour for PeerLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    /// At most `per_ip` connections from one address being set up at once
    /// (the global pending limit is `connection_limits`'): one address
    /// cannot take every handshake slot.
    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if let Some(ip) = ip_of(remote) {
            if self.pending.values().filter(|p| **p == ip).count() >= self.per_ip {
                return Err(ConnectionDenied::new(Denied::PerIp(self.per_ip, ip)));
            }
            self.pending.insert(connection, ip);
        }
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, true, remote).map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, false, addr).map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.pending.remove(&e.connection_id);
                let peer = self.peers.entry(e.peer_id).or_insert_with(|| Connected {
                    connections: 0,
                    inbound: e.endpoint.is_listener(),
                    ip: ip_of(e.endpoint.get_remote_address()),
                });
                peer.connections += 1;
            }
            FromSwarm::ListenFailure(e) => {
                self.pending.remove(&e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(peer) = self.peers.get_mut(&e.peer_id) {
                    peer.connections -= 1;
                    if peer.connections == 0 {
                        self.peers.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::time::Duration;

    use super::*;

    fn connect(limit: &mut PeerLimit, peer: PeerId, inbound: bool, addr: &Multiaddr) -> Result<(), Denied> {
        limit.check(peer, inbound, addr)?;
        let entry = limit.peers.entry(peer).or_insert(Connected { connections: 0, inbound, ip: ip_of(addr) });
        entry.connections += 1;
        Ok(())
    }

    #[test]
    fn sybils_cannot_take_every_slot_nor_keep_out_the_bootstrap_peers() {
        let bootstrap = PeerId::random();
        let mut limit = PeerLimit::new(8, 3, HashSet::from([bootstrap]));
        let from = |i: u8| -> Multiaddr { format!("/ip4/203.0.113.{i}/tcp/4001").parse().unwrap() };
        // Three from one address, then that address is full.
        for _ in 0..3 {
            connect(&mut limit, PeerId::random(), true, &from(1)).unwrap();
        }
        assert!(matches!(connect(&mut limit, PeerId::random(), true, &from(1)), Err(Denied::PerIp(3, _))));
        // Inbound fills six of the eight slots.
        for i in 2..5 {
            connect(&mut limit, PeerId::random(), true, &from(i)).unwrap();
        }
        assert!(matches!(connect(&mut limit, PeerId::random(), true, &from(9)), Err(Denied::MaxInbound(6))));
        // The rest is for peers this node dials.
        connect(&mut limit, PeerId::random(), false, &from(10)).unwrap();
        connect(&mut limit, PeerId::random(), false, &from(11)).unwrap();
        assert!(matches!(connect(&mut limit, PeerId::random(), false, &from(12)), Err(Denied::MaxPeers(8))));
        // A bootstrap peer is let in all the same, either way.
        connect(&mut limit, bootstrap, false, &from(13)).unwrap();
        // Loopback is not counted per address (local tools and tests).
        let mut local = PeerLimit::new(100, 1, HashSet::new());
        let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        for _ in 0..10 {
            connect(&mut local, PeerId::random(), true, &loopback).unwrap();
        }
    }

    #[test]
    fn one_address_cannot_take_every_handshake_slot() {
        let mut limit = PeerLimit::new(50, 3, HashSet::new());
        let local: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let from: Multiaddr = "/ip4/203.0.113.7/tcp/5000".parse().unwrap();
        for i in 0..3 {
            limit.handle_pending_inbound_connection(ConnectionId::new_unchecked(i), &local, &from).unwrap();
        }
        let fourth = limit.handle_pending_inbound_connection(ConnectionId::new_unchecked(3), &local, &from);
        assert!(fourth.is_err(), "a fourth handshake from one address at once");
        let other: Multiaddr = "/ip4/203.0.113.8/tcp/5000".parse().unwrap();
        limit.handle_pending_inbound_connection(ConnectionId::new_unchecked(4), &local, &other).unwrap();
        let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/5000".parse().unwrap();
        for i in 5..20 {
            limit
                .handle_pending_inbound_connection(ConnectionId::new_unchecked(i), &local, &loopback)
                .unwrap();
        }
    }

    #[test]
    fn a_banned_peer_stays_out_until_its_ban_ends() {
        let bootstrap = PeerId::random();
        let mut limit = PeerLimit::new(8, 3, HashSet::from([bootstrap]));
        let addr: Multiaddr = "/ip4/203.0.113.1/tcp/1".parse().unwrap();
        limit.ban(bootstrap, Instant::now() + Duration::from_secs(60));
        assert!(matches!(connect(&mut limit, bootstrap, false, &addr), Err(Denied::Banned)));
        assert!(matches!(connect(&mut limit, bootstrap, true, &addr), Err(Denied::Banned)));
        assert_eq!(limit.banned_count(), 1);
        limit.ban(bootstrap, Instant::now());
        assert!(connect(&mut limit, bootstrap, false, &addr).is_ok(), "the ban is over");
        assert_eq!(limit.banned_count(), 0);
    }
}
