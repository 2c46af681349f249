//! The direct-message protocol as a libp2p behaviour: a request-response
//! protocol where every request gets an acknowledgement, carried on one
//! long-lived stream per connection and direction instead of a new stream
//! per message (see [`super::codec`] for the frames). Requests are
//! pipelined: a sender writes the next message without waiting for the last
//! acknowledgement, and the event loop bounds how many are outstanding.
//!
//! The API follows rust-libp2p's `request_response`: [`Behaviour::send_request`]
//! returns an ID, the answer comes back as an [`Event`] with that ID (or a
//! [`Failure`]), and an inbound request carries a [`ResponseChannel`] for
//! [`Behaviour::send_response`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    task::{Context, Poll},
    time::Duration,
};

use asynchronous_codec::Framed;
use futures::{FutureExt, SinkExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse, upgrade::ReadyUpgrade},
    multiaddr::Protocol,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, DialError, FromSwarm,
        NetworkBehaviour, NotifyHandler, Stream, StreamUpgradeError, SubstreamProtocol, THandler,
        THandlerOutEvent, ToSwarm,
        dial_opts::DialOpts,
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
    },
};

use super::codec::{Ack, DirectRequest, Frame, FrameCodec, PROTOCOL};
use crate::platform::{self, Instant};

/// Inbound requests a stream may have unanswered before we stop reading it
/// (a sender's window, 64 by default, fits; a bigger one is slowed down, not
/// refused). With the envelope limit this bounds what a peer can make us
/// buffer: 64 MiB per stream, two streams per connection.
const MAX_UNANSWERED: usize = 64;
/// Inbound streams kept per connection (a peer needs one; a new one
/// replaces the oldest beyond this).
const MAX_INBOUND_STREAMS: usize = 2;
/// Acknowledgements read per poll of a connection before yielding.
const READ_BUDGET: usize = 256;

/// Identifies an outbound request (and its frame's `seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RequestId(u64);

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
    next_id: u64,
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
            next_id: 1,
            connected: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Sends `frame` to `peer`, dialling it (also at `addresses`) if it is
    /// not connected. The answer is an [`Event`] with the returned ID.
    pub(crate) fn send_request(
        &mut self,
        peer: &PeerId,
        frame: Vec<u8>,
        addresses: Vec<Multiaddr>,
    ) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
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
        id
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

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
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

/// Our outbound stream on a connection.
enum Outbound {
    /// None yet (or the last one failed); one is opened for the next request.
    Idle,
    Opening,
    Open(Box<Framed<Stream, FrameCodec>>),
    /// The peer does not speak the protocol.
    Unsupported,
}

/// An inbound stream: requests in, acknowledgements out.
struct Inbound {
    id: u64,
    io: Framed<Stream, FrameCodec>,
    acks: VecDeque<(u64, Vec<u8>)>,
    unanswered: usize,
}

/// The protocol on one connection.
pub(crate) struct Handler {
    max_request: usize,
    timeout: Duration,
    outbound: Outbound,
    /// Requests not yet written.
    queued: VecDeque<(RequestId, Vec<u8>)>,
    /// Requests written and not yet answered.
    awaiting: HashSet<RequestId>,
    /// When each written request times out, oldest first.
    deadlines: VecDeque<(RequestId, Instant)>,
    timer: Option<futures_timer::Delay>,
    inbound: Vec<Inbound>,
    next_stream: u64,
    events: VecDeque<ToBehaviour>,
}

impl Handler {
    fn new(max_request: usize, timeout: Duration) -> Self {
        Self {
            max_request,
            timeout,
            outbound: Outbound::Idle,
            queued: VecDeque::new(),
            awaiting: HashSet::new(),
            deadlines: VecDeque::new(),
            timer: None,
            inbound: Vec::new(),
            next_stream: 0,
            events: VecDeque::new(),
        }
    }

    fn fail_queued(&mut self, error: impl Fn() -> Failure) {
        for (id, _) in self.queued.drain(..) {
            self.events.push_back(ToBehaviour::Failed { id, error: error() });
        }
    }

    /// Writes queued requests and reads acknowledgements on the open
    /// outbound stream. An error means the stream is unusable.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Outbound::Open(io) = &mut self.outbound else { return Ok(()) };
        while !self.queued.is_empty() {
            match io.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    let Some((id, frame)) = self.queued.pop_front() else { break };
                    io.start_send_unpin((id.0, &frame))?;
                    self.awaiting.insert(id);
                    self.deadlines.push_back((id, Instant::now() + self.timeout));
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(Err(e)) = io.poll_flush_unpin(cx) {
            return Err(e);
        }
        // A budget, so that a peer streaming acknowledgements for nothing
        // cannot keep this connection's task to itself.
        for _ in 0..READ_BUDGET {
            match io.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Frame::Body { seq, body }))) => {
                    let id = RequestId(seq);
                    if !self.awaiting.remove(&id) {
                        tracing::debug!(seq, "acknowledgement for no outstanding direct message");
                        continue;
                    }
                    let event = match Ack::decode(&body) {
                        Ok(ack) => ToBehaviour::Response { id, ack },
                        Err(e) => ToBehaviour::Failed { id, error: Failure::Io(e) },
                    };
                    self.events.push_back(event);
                }
                Poll::Ready(Some(Ok(Frame::Oversize { len, .. }))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("acknowledgement of {len} bytes"),
                    ));
                }
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the stream"));
                }
                Poll::Pending => return Ok(()),
            }
        }
        cx.waker().wake_by_ref();
        Ok(())
    }

    /// Reports requests whose acknowledgement is overdue.
    fn poll_timeouts(&mut self, cx: &mut Context<'_>) {
        while let Some(&(id, at)) = self.deadlines.front() {
            if !self.awaiting.contains(&id) {
                self.deadlines.pop_front();
                continue;
            }
            let now = Instant::now();
            if at <= now {
                self.deadlines.pop_front();
                self.awaiting.remove(&id);
                self.events.push_back(ToBehaviour::Failed { id, error: Failure::Timeout });
                continue;
            }
            // Deadlines only grow, so a timer armed for an earlier one fires
            // first and is then re-armed: one timer per timeout period, not
            // one per message.
            let timer = self.timer.get_or_insert_with(|| platform::sleep(at - now));
            if timer.poll_unpin(cx).is_pending() {
                return;
            }
            self.timer = None;
        }
    }

    /// Writes acknowledgements and reads requests on one inbound stream.
    fn poll_inbound(
        stream: &mut Inbound,
        events: &mut VecDeque<ToBehaviour>,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        while !stream.acks.is_empty() {
            match stream.io.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    let Some((seq, ack)) = stream.acks.pop_front() else { break };
                    stream.io.start_send_unpin((seq, &ack))?;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if let Poll::Ready(Err(e)) = stream.io.poll_flush_unpin(cx) {
            return Err(e);
        }
        // Stop reading while the application is behind: the sender's window
        // then fills up and it waits.
        while stream.unanswered < MAX_UNANSWERED {
            let (seq, request) = match stream.io.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Frame::Body { seq, body }))) => (seq, DirectRequest::Frame(body.into())),
                Poll::Ready(Some(Ok(Frame::Oversize { seq, len }))) => (seq, DirectRequest::Oversize(len)),
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the stream"));
                }
                Poll::Pending => break,
            };
            stream.unanswered += 1;
            events.push_back(ToBehaviour::Request { stream: stream.id, seq, request });
        }
        Ok(())
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = FromBehaviour;
    type ToBehaviour = ToBehaviour;
    type InboundProtocol = ReadyUpgrade<libp2p::StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<libp2p::StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn connection_keep_alive(&self) -> bool {
        !self.queued.is_empty()
            || !self.awaiting.is_empty()
            || self.inbound.iter().any(|s| s.unanswered > 0 || !s.acks.is_empty())
    }

    fn on_behaviour_event(&mut self, event: FromBehaviour) {
        match event {
            FromBehaviour::Send { id, frame } => {
                if matches!(self.outbound, Outbound::Unsupported) {
                    self.events.push_back(ToBehaviour::Failed { id, error: Failure::UnsupportedProtocols });
                } else {
                    self.queued.push_back((id, frame));
                }
            }
            FromBehaviour::Ack { stream, seq, ack } => {
                if let Some(stream) = self.inbound.iter_mut().find(|s| s.id == stream) {
                    stream.unanswered = stream.unanswered.saturating_sub(1);
                    stream.acks.push_back((seq, ack));
                }
            }
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream, ..
            }) => {
                stream.ignore_for_keep_alive();
                if self.inbound.len() >= MAX_INBOUND_STREAMS {
                    tracing::debug!("a further direct-message stream from the peer replaces its oldest");
                    self.inbound.remove(0);
                }
                self.inbound.push(Inbound {
                    id: self.next_stream,
                    io: Framed::new(stream, FrameCodec::requests(self.max_request)),
                    acks: VecDeque::new(),
                    unanswered: 0,
                });
                self.next_stream += 1;
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = Outbound::Open(Box::new(Framed::new(stream, FrameCodec::acks())));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => match error {
                StreamUpgradeError::NegotiationFailed => {
                    self.outbound = Outbound::Unsupported;
                    self.fail_queued(|| Failure::UnsupportedProtocols);
                }
                StreamUpgradeError::Timeout => {
                    self.outbound = Outbound::Idle;
                    self.fail_queued(|| Failure::Timeout);
                }
                StreamUpgradeError::Io(e) => {
                    self.outbound = Outbound::Idle;
                    let message = e.to_string();
                    self.fail_queued(|| Failure::Io(io::Error::other(message.clone())));
                }
                StreamUpgradeError::Apply(never) => match never {},
            },
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if matches!(self.outbound, Outbound::Idle) && !self.queued.is_empty() {
            self.outbound = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()).with_timeout(self.timeout),
            });
        }
        if let Err(e) = self.poll_outbound(cx) {
            tracing::debug!("direct-message stream failed: {e}");
            self.outbound = Outbound::Idle;
            let message = e.to_string();
            for id in self.awaiting.drain() {
                self.events.push_back(ToBehaviour::Failed {
                    id,
                    error: Failure::Io(io::Error::other(message.clone())),
                });
            }
            // Queued requests go out on a new stream.
            cx.waker().wake_by_ref();
        }
        self.poll_timeouts(cx);
        let events = &mut self.events;
        self.inbound.retain_mut(|stream| match Self::poll_inbound(stream, events, cx) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("inbound direct-message stream ended: {e}");
                false
            }
        });
        match self.events.pop_front() {
            Some(event) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event)),
            None => Poll::Pending,
        }
    }
}
