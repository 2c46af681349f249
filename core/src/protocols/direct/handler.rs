//! The direct-message protocol on one connection: our outbound stream
//! (requests written one after another, acknowledgements read back, each
//! with a deadline) and the peer's inbound streams (requests read while
//! fewer than [`MAX_UNANSWERED`] wait for their answer).

use std::{
    collections::{HashSet, VecDeque},
    io,
    task::{Context, Poll},
    time::Duration,
};

use asynchronous_codec::Framed;
use futures::{AsyncRead, AsyncWrite, FutureExt, SinkExt, StreamExt};
use libp2p::{
    core::upgrade::ReadyUpgrade,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound},
    },
};

use super::{
    behaviour::{Failure, FromBehaviour, RequestId, ToBehaviour},
    wire::{Ack, DirectRequest, Frame, FrameCodec, PROTOCOL},
};
use crate::platform::{self, Instant};

/// Inbound requests a stream may have unanswered, or answered but not yet
/// written back (a peer that does not read its acknowledgements), before
/// we stop reading it (a sender's window, 64 by default, fits; a bigger one
/// is slowed down, not refused). With the envelope limit this bounds what
/// a peer can make us buffer: 64 MiB per stream, two streams per
/// connection.
const MAX_UNANSWERED: usize = 64;
/// Inbound streams kept per connection (a peer needs one; a new one
/// replaces the oldest beyond this).
const MAX_INBOUND_STREAMS: usize = 2;
/// Bytes of acknowledgements buffered for writing on an inbound stream
/// before more wait in its queue (which counts towards [`MAX_UNANSWERED`]).
const ACK_BUFFER: usize = 8 * 1024;
/// Acknowledgements read per poll of a connection before yielding.
const READ_BUDGET: usize = 256;

/// Our outbound stream on a connection.
enum OutboundStream {
    /// None yet (or the last one failed); one is opened for the next request.
    Idle,
    Opening,
    Open(Box<Framed<Stream, FrameCodec>>),
    /// The peer does not speak the protocol.
    Unsupported,
}

/// An inbound stream: requests in, acknowledgements out.
struct Inbound<S = Stream> {
    id: u64,
    io: Framed<S, FrameCodec>,
    acks: VecDeque<(u64, Vec<u8>)>,
    unanswered: usize,
}

/// The protocol on one connection.
pub(crate) struct Handler {
    max_request: usize,
    timeout: Duration,
    outbound: OutboundStream,
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
    pub(super) fn new(max_request: usize, timeout: Duration) -> Self {
        Self {
            max_request,
            timeout,
            outbound: OutboundStream::Idle,
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
        let OutboundStream::Open(io) = &mut self.outbound else { return Ok(()) };
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
    fn poll_inbound<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut Inbound<S>,
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
        // Stop reading while the application is behind, or while the peer
        // does not take its acknowledgements: the sender's window then
        // fills up and it waits.
        while stream.unanswered + stream.acks.len() < MAX_UNANSWERED {
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
                if matches!(self.outbound, OutboundStream::Unsupported) {
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
                let mut io = Framed::new(stream, FrameCodec::requests(self.max_request));
                io.set_send_high_water_mark(ACK_BUFFER);
                self.inbound.push(Inbound { id: self.next_stream, io, acks: VecDeque::new(), unanswered: 0 });
                self.next_stream += 1;
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.outbound = OutboundStream::Open(Box::new(Framed::new(stream, FrameCodec::acks())));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => match error {
                StreamUpgradeError::NegotiationFailed => {
                    self.outbound = OutboundStream::Unsupported;
                    self.fail_queued(|| Failure::UnsupportedProtocols);
                }
                StreamUpgradeError::Timeout => {
                    self.outbound = OutboundStream::Idle;
                    self.fail_queued(|| Failure::Timeout);
                }
                StreamUpgradeError::Io(e) => {
                    self.outbound = OutboundStream::Idle;
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
        if matches!(self.outbound, OutboundStream::Idle) && !self.queued.is_empty() {
            self.outbound = OutboundStream::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()).with_timeout(self.timeout),
            });
        }
        if let Err(e) = self.poll_outbound(cx) {
            tracing::debug!("direct-message stream failed: {e}");
            self.outbound = OutboundStream::Idle;
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

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures::{AsyncRead, AsyncWrite, task::noop_waker};

    use super::*;

    /// A peer that sends `requests` frames as fast as it can and never
    /// reads what it is sent (its receive window stays shut).
    struct NeverReads {
        input: Vec<u8>,
        at: usize,
    }

    impl AsyncRead for NeverReads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.input.len() - self.at);
            if n == 0 {
                return Poll::Pending;
            }
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for NeverReads {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_peer_that_never_reads_its_acknowledgements_is_no_longer_read() {
        let mut input = Vec::new();
        for seq in 0..10_000u64 {
            let mut frame = unsigned_varint::encode::u64_buffer();
            input.extend_from_slice(unsigned_varint::encode::u64(seq, &mut frame));
            input.extend_from_slice(unsigned_varint::encode::u64(3, &mut frame));
            input.extend_from_slice(b"abc");
        }
        let mut io = Framed::new(NeverReads { input, at: 0 }, FrameCodec::requests(1024));
        io.set_send_high_water_mark(ACK_BUFFER);
        let mut stream = Inbound { id: 0, io, acks: VecDeque::new(), unanswered: 0 };
        let (mut events, waker) = (VecDeque::new(), noop_waker());
        let mut cx = Context::from_waker(&waker);
        let mut read = 0;
        for _ in 0..1_000 {
            Handler::poll_inbound(&mut stream, &mut events, &mut cx).unwrap();
            // The application answers every request at once.
            for event in events.drain(..) {
                let ToBehaviour::Request { seq, .. } = event else { continue };
                read += 1;
                stream.unanswered -= 1;
                stream.acks.push_back((seq, Ack { id: seq.to_string(), rejected: None }.encode()));
            }
        }
        assert!(stream.acks.len() <= MAX_UNANSWERED, "{} acknowledgements queued", stream.acks.len());
        // What was read: the acknowledgements that fit the write buffer,
        // and the window; then reading stops.
        assert!(read < 1_000, "{read} requests read from a peer that takes no acknowledgements");
    }
}
