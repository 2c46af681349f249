//! Enforces `max_peers`: a connection to a peer we are not yet connected to
//! is denied once that many distinct peers are connected.

use std::{
    collections::HashMap,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};

/// The error a denied connection carries.
#[derive(Debug, thiserror::Error)]
#[error("max_peers ({0}) reached")]
pub(crate) struct MaxPeersReached(pub usize);

pub(crate) struct PeerLimit {
    max_peers: usize,
    connections: HashMap<PeerId, usize>,
}

impl PeerLimit {
    pub(crate) fn new(max_peers: usize) -> Self {
        Self { max_peers, connections: HashMap::new() }
    }

    fn check(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self.connections.contains_key(&peer) || self.connections.len() < self.max_peers {
            Ok(())
        } else {
            Err(ConnectionDenied::new(MaxPeersReached(self.max_peers)))
        }
    }
}

impl NetworkBehaviour for PeerLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => *self.connections.entry(e.peer_id).or_default() += 1,
            FromSwarm::ConnectionClosed(e) => {
                if let Some(n) = self.connections.get_mut(&e.peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.connections.remove(&e.peer_id);
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
