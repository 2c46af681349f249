//! The direct-message protocol as a libp2p behaviour (its per-connection
//! side is [`super::handler`]): a request-response
//! protocol where every request gets an acknowledgement, carried on one
//! long-lived stream per connection and direction instead of a new stream
//! per message (see [`super::wire`] for the frames). Requests are
//! pipelined: a sender writes the next message without waiting for the last
//! acknowledgement, and the event loop bounds how many are outstanding.
//!
//! The API follows rust-libp2p's `request_response`: [`Behaviour::send_request`]
//! takes the caller's ID for the request (the outbox numbers its sends),
//! the answer comes back as an [`Event`] with that ID (or a [`Failure`]), and an inbound request carries a [`ResponseChannel`] for
//! [`Behaviour::send_response`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    task::{Context, Poll},
    time::Duration,
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionId, DialError, FromSwarm, NetworkBehaviour,
        NotifyHandler, THandler, THandlerOutEvent, ToSwarm, dial_opts::DialOpts,
    },
};

use super::{
    handler::Handler,
    wire::{Ack, DirectRequest},
};
use crate::addr::is_relayed;

/// Identifies an outbound request (and its frame's `seq`): chosen by the
/// caller, unique for the life of the behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(pub u64);

/// Why an outbound request got no acknowledgement.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not connected, and the dial failed.
    Unreachable,
    /// No acknowledgement within the timeout.
    Timeout,
    /// The connection closed before the acknowledgement.
    ConnectionClosed,
    /// The peer does not speak the protocol.
    UnsupportedProtocols,
    /// The stream failed.
    Io(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable => f.write_str("not connected and could not be reached"),
            Failure::Timeout => f.write_str("no acknowledgement in time"),
            Failure::ConnectionClosed => f.write_str("connection closed before the acknowledgement"),
            Failure::UnsupportedProtocols => f.write_str("peer does not speak the InferMesh direct protocol"),
            Failure::Io(e) => write!(f, "stream failed: {e}"),
        }
    }
}

/// Where to send the answer to an inbound request.
#[derive(Debug)]
pub(crate) struct ResponseChannel {
    peer: PeerId,
    connection: ConnectionId,
    stream: u64,
    seq: u64,
}

/// What the behaviour reports to the event loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// A peer sent us a message; answer it with [`Behaviour::send_response`].
    Request { peer: PeerId, request: DirectRequest, channel: ResponseChannel },
    /// A peer acknowledged our message.
    Response { request_id: RequestId, response: Ack },
    /// Our message got no acknowledgement.
    OutboundFailure { request_id: RequestId, error: Failure },
}

/// Instructions from the behaviour to a connection's handler.
#[derive(Debug)]
pub(crate) enum FromBehaviour {
    Send { id: RequestId, frame: Vec<u8> },
    Ack { stream: u64, seq: u64, ack: Vec<u8> },
}

/// Reports from a connection's handler to the behaviour.
#[derive(Debug)]
pub(crate) enum ToBehaviour {
    Request { stream: u64, seq: u64, request: DirectRequest },
    Response { id: RequestId, ack: Ack },
    Failed { id: RequestId, error: Failure },
}

struct Connection {
    id: ConnectionId,
    relayed: bool,
    /// Requests sent on this connection, not yet answered.
    outstanding: HashSet<RequestId>,
}

/// The behaviour; see the module documentation.
pub(crate) struct Behaviour {
    max_request: usize,
    timeout: Duration,
    connected: HashMap<PeerId, Vec<Connection>>,
    /// Requests waiting for a connection to their peer.
    pending: HashMap<PeerId, Vec<(RequestId, Vec<u8>)>>,
    events: VecDeque<ToSwarm<Event, FromBehaviour>>,
}

impl Behaviour {
    /// Requests of at most `max_request` bytes are read; each must be
    /// acknowledged within `timeout`.
    pub(crate) fn new(max_request: usize, timeout: Duration) -> Self {
        Self {
            max_request,
            timeout,
            connected: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Sends `frame` to `peer` as request `id`, dialling the peer (also at
    /// `addresses`) if it is not connected. The answer is an [`Event`] with
    /// that ID.
    pub(crate) fn send_request(
        &mut self,
        peer: &PeerId,
        id: RequestId,
        frame: Vec<u8>,
        addresses: Vec<Multiaddr>,
    ) {
        // A direct connection over a relayed one; the newest over older
        // ones (an old one may belong to a peer that has since restarted).
        let connection = self.connected.get_mut(peer).and_then(|connections| {
            let newest_direct = connections.iter().rposition(|c| !c.relayed);
            let at = newest_direct.unwrap_or(connections.len().checked_sub(1)?);
            connections.get_mut(at)
        });
        match connection {
            Some(connection) => {
                connection.outstanding.insert(id);
                self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer,
                    handler: NotifyHandler::One(connection.id),
                    event: FromBehaviour::Send { id, frame },
                });
            }
            None => {
                self.pending.entry(*peer).or_default().push((id, frame));
                self.events.push_back(ToSwarm::Dial {
                    opts: DialOpts::peer_id(*peer)
                        .addresses(addresses)
                        .extend_addresses_through_behaviour()
                        .build(),
                });
            }
        }
    }

    /// Answers an inbound request. Does nothing if its connection is gone
    /// (the sender hears of that from its own side).
    pub(crate) fn send_response(&mut self, channel: ResponseChannel, ack: Ack) {
        let alive = self
            .connected
            .get(&channel.peer)
            .is_some_and(|connections| connections.iter().any(|c| c.id == channel.connection));
        if alive {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: channel.peer,
                handler: NotifyHandler::One(channel.connection),
                event: FromBehaviour::Ack { stream: channel.stream, seq: channel.seq, ack: ack.encode() },
            });
        }
    }

    fn new_handler(&mut self, peer: PeerId, id: ConnectionId, relayed: bool) -> Handler {
        let mut handler = Handler::new(self.max_request, self.timeout);
        let mut connection = Connection { id, relayed, outstanding: HashSet::new() };
        for (request, frame) in self.pending.remove(&peer).unwrap_or_default() {
            connection.outstanding.insert(request);
            handler.on_behaviour_event(FromBehaviour::Send { id: request, frame });
        }
        self.connected.entry(peer).or_default().push(connection);
        handler
    }

    /// A connection is gone: what was sent on it without an answer fails.
    fn forget(&mut self, peer: PeerId, id: ConnectionId) {
        let Some(connections) = self.connected.get_mut(&peer) else { return };
        let Some(at) = connections.iter().position(|c| c.id == id) else { return };
        let connection = connections.remove(at);
        if connections.is_empty() {
            self.connected.remove(&peer);
        }
        for request in connection.outstanding {
            self.fail(request, Failure::ConnectionClosed);
        }
    }

    fn fail(&mut self, request_id: RequestId, error: Failure) {
        self.events.push_back(ToSwarm::GenerateEvent(Event::OutboundFailure { request_id, error }));
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, connection, is_relayed(local_addr) || is_relayed(remote_addr)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, connection, is_relayed(addr)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.forget(closed.peer_id, closed.connection_id),
            FromSwarm::DialFailure(failure) => {
                let Some(peer) = failure.peer_id else { return };
                // A connection we made a handler for and another behaviour
                // then denied never opens.
                self.forget(peer, failure.connection_id);
                // Another dial to the peer is under way: its outcome decides.
                if matches!(failure.error, DialError::DialPeerConditionFalse(_)) {
                    return;
                }
                for (request, _) in self.pending.remove(&peer).unwrap_or_default() {
                    self.fail(request, Failure::Unreachable);
                }
            }
            FromSwarm::ListenFailure(failure) => {
                if let Some(peer) = failure.peer_id {
                    self.forget(peer, failure.connection_id);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let mut answered = |request: &RequestId| {
            if let Some(c) =
                self.connected.get_mut(&peer).and_then(|cs| cs.iter_mut().find(|c| c.id == connection))
            {
                c.outstanding.remove(request);
            }
        };
        let event = match event {
            ToBehaviour::Request { stream, seq, request } => {
                Event::Request { peer, request, channel: ResponseChannel { peer, connection, stream, seq } }
            }
            ToBehaviour::Response { id, ack } => {
                answered(&id);
                Event::Response { request_id: id, response: ack }
            }
            ToBehaviour::Failed { id, error } => {
                answered(&id);
                Event::OutboundFailure { request_id: id, error }
            }
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, FromBehaviour>> {
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}
