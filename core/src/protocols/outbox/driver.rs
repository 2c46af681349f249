//! What this node sends, before it is on the wire: direct messages within
//! a window per peer (the rest wait in a bounded priority queue, highest
//! priority first), their acknowledgements and failures (a sealed message
//! whose recipient lost its session, or whose connection closed under it,
//! is sealed again and sent once more; one that cannot reach its recipient
//! goes to the mailbox), and publishes waiting for a topic's first
//! subscriber. I/O-free: sealing is the [`Sealer`]'s, the wire the event
//! loop's, through [`Action`]s.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use libp2p::PeerId;

use crate::{
    Delivery, MeshError,
    messaging::{Envelope, PriorityQueue, RejectReason, Rejection},
    metrics::{Metrics, Route},
    platform::Instant,
    protocols::{
        Reply,
        direct::{Ack, Failure, RequestId},
    },
};

/// An envelope on its way out.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The envelope ID.
    pub id: String,
    /// Its priority (0–10).
    pub priority: u8,
    /// When it expires (ms since the epoch).
    pub expires_at_ms: u64,
    /// What goes on the wire.
    pub body: Body,
}

/// An outbound envelope's body.
#[derive(Debug)]
pub(crate) enum Body {
    /// Encoded already (broadcasts; direct messages without end-to-end
    /// encryption).
    Encoded(Vec<u8>),
    /// A direct message to seal end-to-end just before it goes.
    ToSeal(Box<Envelope>),
}

/// A direct message waiting to go, with its caller.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The message.
    pub outbound: Outbound,
    /// Its caller.
    pub reply: Reply<Delivery>,
}

/// A sealed message that could not reach its recipient: for the mailbox.
#[derive(Debug)]
pub(crate) struct Undelivered {
    /// The recipient.
    pub peer: PeerId,
    /// The envelope ID.
    pub id: String,
    /// When it was first sent.
    pub started: Instant,
    /// Its plaintext, to seal for the mailbox.
    pub plain: Box<Envelope>,
    /// Its caller.
    pub reply: Reply<Delivery>,
    /// Why it did not arrive (the caller's error if no holder takes it).
    pub error: String,
}

/// Seals direct messages end-to-end (the sessions driver).
pub(crate) trait Sealer {
    /// The frame of `plain` sealed for `peer`, and the number of the
    /// session that sealed it.
    fn seal(&mut self, peer: &PeerId, plain: &Envelope) -> Result<(Vec<u8>, u64), MeshError>;
    /// A message of `session` was acknowledged: the peer has the session.
    fn confirm(&mut self, peer: &PeerId, session: u64);
    /// The peer lost `session`: the next message starts a new one.
    fn reset(&mut self, peer: &PeerId, session: u64);
}

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this frame to `peer` as request `id` (through a relay if it is
    /// not connected).
    Transmit { peer: PeerId, id: RequestId, frame: Vec<u8> },
    /// Leave this message with mailbox holders.
    Undeliverable(Undelivered),
    /// A topic that had no subscribers has one now: publish again.
    Publish { topic: String, outbound: Outbound, reply: Reply<()>, deadline: Instant },
}

struct InFlight {
    peer: PeerId,
    id: String,
    started: Instant,
    reply: Reply<Delivery>,
    /// The plaintext of a sealed message (to seal again, or to leave with a
    /// mailbox) and the session that sealed it.
    plain: Option<Box<Envelope>>,
    session: Option<u64>,
    /// Already sent a second time once.
    retried: bool,
}

struct WaitingPublish {
    topic: String,
    outbound: Outbound,
    reply: Reply<()>,
    deadline: Instant,
}

/// The driver; see the module documentation.
pub(crate) struct Outbox {
    window: usize,
    queue_capacity: usize,
    next_id: u64,
    sends: HashMap<RequestId, InFlight>,
    in_flight: HashMap<PeerId, usize>,
    queues: HashMap<PeerId, PriorityQueue<Queued>>,
    publishes: Vec<WaitingPublish>,
    metrics: Arc<Metrics>,
    actions: VecDeque<Action>,
}

impl Outbox {
    /// At most `window` direct messages in flight to one peer, and
    /// `queue_capacity` more waiting.
    pub(crate) fn new(window: usize, queue_capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            window,
            queue_capacity,
            next_id: 1,
            sends: HashMap::new(),
            in_flight: HashMap::new(),
            queues: HashMap::new(),
            publishes: Vec::new(),
            metrics,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A direct message to `peer`: sent now if the window allows, queued
    /// by priority otherwise, refused when the queue is full.
    pub(crate) fn submit(&mut self, peer: PeerId, queued: Queued, now: Instant, sealer: &mut dyn Sealer) {
        if self.in_flight.get(&peer).copied().unwrap_or(0) < self.window {
            self.start(peer, queued.outbound, queued.reply, false, now, sealer);
            return;
        }
        let capacity = self.queue_capacity;
        let queue = self.queues.entry(peer).or_insert_with(|| PriorityQueue::new(capacity));
        if let Err(full) = queue.push(queued.outbound.priority, queued) {
            let _ = full.0.reply.send(Err(MeshError::QueueFull(peer)));
        }
    }

    fn start(
        &mut self,
        peer: PeerId,
        outbound: Outbound,
        reply: Reply<Delivery>,
        retried: bool,
        now: Instant,
        sealer: &mut dyn Sealer,
    ) {
        let (frame, plain, session) = match outbound.body {
            Body::Encoded(frame) => (frame, None, None),
            Body::ToSeal(plain) => match sealer.seal(&peer, &plain) {
                Ok((frame, session)) => (frame, Some(plain), Some(session)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
        };
        let id = RequestId(self.next_id);
        self.next_id += 1;
        *self.in_flight.entry(peer).or_default() += 1;
        self.metrics.message_out(Route::Direct);
        self.sends
            .insert(id, InFlight { peer, id: outbound.id, started: now, reply, plain, session, retried });
        self.actions.push_back(Action::Transmit { peer, id, frame });
    }

    /// The recipient answered request `id`.
    pub(crate) fn on_ack(&mut self, id: RequestId, ack: Ack, now: Instant, sealer: &mut dyn Sealer) {
        let Some(sent) = self.sends.remove(&id) else { return };
        let peer = sent.peer;
        let rtt = now.saturating_duration_since(sent.started);
        if ack.rejected.as_deref() == Some(RejectReason::NoSession.as_str()) {
            // The recipient lost its session (it restarted): once more,
            // with a new one.
            if let Some(sent) = self.seal_again(sent, true, now, sealer) {
                let reason = RejectReason::NoSession.as_str().to_owned();
                let _ = sent.reply.send(Err(MeshError::RejectedByPeer { peer, reason }));
            }
            self.finished(peer, now, sealer);
            return;
        }
        let result = match ack.rejected {
            None => {
                self.metrics.delivered(rtt.as_secs_f64());
                if let Some(session) = sent.session {
                    sealer.confirm(&peer, session);
                }
                Ok(Delivery { id: sent.id, rtt, held_by: None, encrypted: sent.session.is_some() })
            }
            Some(reason) => {
                Err(MeshError::RejectedByPeer { peer, reason: reason.chars().take(64).collect() })
            }
        };
        let _ = sent.reply.send(result);
        self.finished(peer, now, sealer);
    }

    /// Request `id` got no acknowledgement.
    pub(crate) fn on_failure(
        &mut self,
        id: RequestId,
        error: Failure,
        now: Instant,
        sealer: &mut dyn Sealer,
    ) {
        let Some(sent) = self.sends.remove(&id) else { return };
        let peer = sent.peer;
        // The connection closed under the message (a restarted peer's old
        // one, say): once more, on another connection or a new dial, with
        // a new session in case the peer restarted.
        let sent = match error {
            Failure::ConnectionClosed => self.seal_again(sent, true, now, sealer),
            _ => Some(sent),
        };
        if let Some(sent) = sent {
            let reason = error.to_string();
            let undeliverable = matches!(
                error,
                Failure::Unreachable | Failure::ConnectionClosed | Failure::Timeout | Failure::Io(_)
            );
            match sent.plain {
                // Unreachable, or gone while it was sent: it may wait in a
                // mailbox. (If it did arrive, the recipient refuses the held
                // copy as a duplicate.)
                Some(plain) if undeliverable => self.actions.push_back(Action::Undeliverable(Undelivered {
                    peer,
                    id: sent.id,
                    started: sent.started,
                    plain,
                    reply: sent.reply,
                    error: reason,
                })),
                _ => {
                    let _ = sent.reply.send(Err(MeshError::Delivery { peer, reason }));
                }
            }
        }
        self.finished(peer, now, sealer);
    }

    /// Sends a sealed message again, once (`new_session`: the peer lost the
    /// one it was sealed under). Hands the message back if it is not.
    fn seal_again(
        &mut self,
        mut sent: InFlight,
        new_session: bool,
        now: Instant,
        sealer: &mut dyn Sealer,
    ) -> Option<InFlight> {
        if sent.retried {
            return Some(sent);
        }
        let Some(plain) = sent.plain.take() else { return Some(sent) };
        if let Some(session) = sent.session.filter(|_| new_session) {
            sealer.reset(&sent.peer, session);
        }
        let outbound = Outbound {
            id: sent.id,
            priority: plain.priority,
            expires_at_ms: plain.expires_at_ms(),
            body: Body::ToSeal(plain),
        };
        self.start(sent.peer, outbound, sent.reply, true, now, sealer);
        None
    }

    /// A send to `peer` completed: the next queued ones (highest priority
    /// first) take the free slots; expired ones are refused.
    fn finished(&mut self, peer: PeerId, now: Instant, sealer: &mut dyn Sealer) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
        let now_ms = crate::platform::now_ms();
        while self.in_flight.get(&peer).copied().unwrap_or(0) < self.window {
            let Some(queue) = self.queues.get_mut(&peer) else { return };
            let Some(next) = queue.pop() else {
                self.queues.remove(&peer);
                return;
            };
            if next.outbound.expires_at_ms <= now_ms {
                let _ = next.reply.send(Err(MeshError::InvalidMessage(Rejection::new(
                    RejectReason::Expired,
                    "expired while waiting in the send queue",
                ))));
                continue;
            }
            self.start(peer, next.outbound, next.reply, false, now, sealer);
        }
    }

    /// A publish found no subscriber on `topic` while connections are new
    /// (their subscriptions may be on their way): it waits until one
    /// subscribes or `deadline` passes.
    pub(crate) fn wait_for_subscribers(
        &mut self,
        topic: String,
        outbound: Outbound,
        reply: Reply<()>,
        deadline: Instant,
    ) {
        self.publishes.push(WaitingPublish { topic, outbound, reply, deadline });
    }

    /// A peer subscribed to `topic`: its waiting publishes go again.
    pub(crate) fn on_subscribed(&mut self, topic: &str) {
        if !self.publishes.iter().any(|p| p.topic == topic) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.publishes).into_iter().partition(|p| p.topic == topic);
        self.publishes = waiting;
        for p in ready {
            self.actions.push_back(Action::Publish {
                topic: p.topic,
                outbound: p.outbound,
                reply: p.reply,
                deadline: p.deadline,
            });
        }
    }

    /// Refuses publishes that waited past their deadline.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.publishes.iter().all(|p| now < p.deadline) {
            return;
        }
        let (expired, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.publishes).into_iter().partition(|p| now >= p.deadline);
        self.publishes = waiting;
        for p in expired {
            let _ = p.reply.send(Err(MeshError::NoSubscribers(p.topic)));
        }
    }

    /// Direct messages in flight and waiting, for `peer`.
    #[cfg(test)]
    fn load(&self, peer: &PeerId) -> (usize, usize) {
        (self.in_flight.get(peer).copied().unwrap_or(0), self.queues.get(peer).map_or(0, PriorityQueue::len))
    }
}

/// How long a publish waits for subscribers from new connections.
pub(crate) const PUBLISH_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::messaging::MsgType;

    /// Seals by prefixing the session number; counts what it was told.
    #[derive(Default)]
    struct Recorder {
        next: u64,
        confirmed: Vec<u64>,
        reset: Vec<u64>,
        refuse: bool,
    }

    impl Sealer for Recorder {
        fn seal(&mut self, peer: &PeerId, plain: &Envelope) -> Result<(Vec<u8>, u64), MeshError> {
            if self.refuse {
                return Err(MeshError::Delivery { peer: *peer, reason: "cannot encrypt".into() });
            }
            self.next += 1;
            Ok((plain.id.as_bytes().to_vec(), self.next))
        }
        fn confirm(&mut self, _: &PeerId, session: u64) {
            self.confirmed.push(session);
        }
        fn reset(&mut self, _: &PeerId, session: u64) {
            self.reset.push(session);
        }
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(|_, _| {}))
    }

    fn plain(priority: u8, id: &str) -> Outbound {
        Outbound {
            id: id.into(),
            priority,
            expires_at_ms: u64::MAX,
            body: Body::Encoded(id.as_bytes().to_vec()),
        }
    }

    fn sealed(id: &str) -> Outbound {
        let mut env = Envelope::new(MsgType::Thought, "x", 5, 60);
        env.id = id.into();
        env.timestamp = crate::platform::now_ms();
        Outbound {
            id: id.into(),
            priority: 5,
            expires_at_ms: env.expires_at_ms(),
            body: Body::ToSeal(Box::new(env)),
        }
    }

    fn queued(outbound: Outbound) -> (Queued, oneshot::Receiver<Result<Delivery, MeshError>>) {
        let (reply, rx) = oneshot::channel();
        (Queued { outbound, reply }, rx)
    }

    fn transmitted(outbox: &mut Outbox) -> Vec<(RequestId, Vec<u8>)> {
        std::iter::from_fn(|| outbox.poll_action())
            .filter_map(|a| match a {
                Action::Transmit { id, frame, .. } => Some((id, frame)),
                _ => None,
            })
            .collect()
    }

    fn ok() -> Ack {
        Ack { id: String::new(), rejected: None }
    }

    #[test]
    fn the_window_holds_back_the_rest_which_go_by_priority() {
        let now = Instant::now();
        let (mut outbox, mut sealer, peer) =
            (Outbox::new(2, 3, metrics()), Recorder::default(), PeerId::random());
        let mut answers = Vec::new();
        for (priority, id) in [(1, "a"), (1, "b"), (1, "low"), (9, "high"), (5, "mid")] {
            let (q, rx) = queued(plain(priority, id));
            outbox.submit(peer, q, now, &mut sealer);
            answers.push(rx);
        }
        let sent = transmitted(&mut outbox);
        assert_eq!(sent.iter().map(|(_, f)| f.as_slice()).collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(outbox.load(&peer), (2, 3));
        // A full queue refuses.
        let (q, mut refused) = queued(plain(10, "more"));
        outbox.submit(peer, q, now, &mut sealer);
        assert!(matches!(refused.try_recv().unwrap(), Err(MeshError::QueueFull(p)) if p == peer));
        // Each answer frees a slot for the most urgent waiting message.
        outbox.on_ack(sent[0].0, ok(), now + Duration::from_millis(3), &mut sealer);
        let delivery = answers[0].try_recv().unwrap().unwrap();
        assert_eq!(
            (delivery.id.as_str(), delivery.rtt, delivery.encrypted),
            ("a", Duration::from_millis(3), false)
        );
        assert_eq!(transmitted(&mut outbox)[0].1, b"high");
        outbox.on_failure(sent[1].0, Failure::UnsupportedProtocols, now, &mut sealer);
        assert!(answers[1].try_recv().unwrap().unwrap_err().to_string().contains("does not speak"));
        assert_eq!(transmitted(&mut outbox)[0].1, b"mid");
        assert_eq!(outbox.load(&peer), (2, 1));
    }

    #[test]
    fn a_sealed_message_is_sealed_again_once_when_the_peer_lost_its_session() {
        let now = Instant::now();
        let (mut outbox, mut sealer, peer) =
            (Outbox::new(4, 4, metrics()), Recorder::default(), PeerId::random());
        let (q, mut answer) = queued(sealed("m"));
        outbox.submit(peer, q, now, &mut sealer);
        let [(first, _)] = transmitted(&mut outbox)[..] else { panic!("one send") };
        let no_session = || Ack { id: String::new(), rejected: Some("e2e_no_session".into()) };
        outbox.on_ack(first, no_session(), now, &mut sealer);
        assert_eq!(sealer.reset, [1], "the lost session is dropped");
        let [(second, _)] = transmitted(&mut outbox)[..] else { panic!("sent again") };
        assert!(answer.try_recv().is_err(), "no answer yet");
        // Refused again: the caller hears it, no third try.
        outbox.on_ack(second, no_session(), now, &mut sealer);
        assert!(transmitted(&mut outbox).is_empty());
        assert!(matches!(answer.try_recv().unwrap(), Err(MeshError::RejectedByPeer { .. })));
        assert_eq!(outbox.load(&peer), (0, 0), "the slot is free again");

        // Acknowledged: the session is confirmed and the delivery says encrypted.
        let (q, mut answer) = queued(sealed("n"));
        outbox.submit(peer, q, now, &mut sealer);
        let [(id, _)] = transmitted(&mut outbox)[..] else { panic!() };
        outbox.on_ack(id, ok(), now, &mut sealer);
        assert!(answer.try_recv().unwrap().unwrap().encrypted);
        assert_eq!(sealer.confirmed, [3]);
    }

    #[test]
    fn an_unreachable_sealed_message_goes_to_the_mailbox_and_a_plain_one_fails() {
        let now = Instant::now();
        let (mut outbox, mut sealer, peer) =
            (Outbox::new(4, 4, metrics()), Recorder::default(), PeerId::random());
        let (q, _answer) = queued(sealed("s"));
        outbox.submit(peer, q, now, &mut sealer);
        let [(id, _)] = transmitted(&mut outbox)[..] else { panic!() };
        // The connection closed mid-flight: sent again; timed out again: for the mailbox.
        outbox.on_failure(id, Failure::ConnectionClosed, now, &mut sealer);
        let [(id, _)] = transmitted(&mut outbox)[..] else { panic!("sent again") };
        outbox.on_failure(id, Failure::Timeout, now, &mut sealer);
        let action = outbox.poll_action();
        let Some(Action::Undeliverable(undelivered)) = action else { panic!("{action:?}") };
        assert_eq!((undelivered.peer, undelivered.id.as_str()), (peer, "s"));
        assert!(undelivered.error.contains("no acknowledgement"));

        let (q, mut answer) = queued(plain(5, "p"));
        outbox.submit(peer, q, now, &mut sealer);
        let [(id, _)] = transmitted(&mut outbox)[..] else { panic!() };
        outbox.on_failure(id, Failure::Unreachable, now, &mut sealer);
        assert!(outbox.poll_action().is_none());
        assert!(matches!(answer.try_recv().unwrap(), Err(MeshError::Delivery { .. })));

        // A message that cannot be sealed fails at once and takes no slot.
        sealer.refuse = true;
        let (q, mut answer) = queued(sealed("x"));
        outbox.submit(peer, q, now, &mut sealer);
        assert!(answer.try_recv().unwrap().is_err());
        assert_eq!(outbox.load(&peer), (0, 0));
        // An answer for a request nobody sent is ignored.
        outbox.on_ack(RequestId(999), ok(), now, &mut sealer);
    }

    #[test]
    fn a_waiting_publish_goes_when_its_topic_gets_a_subscriber_or_fails_at_its_deadline() {
        let now = Instant::now();
        let mut outbox = Outbox::new(1, 1, metrics());
        let (reply_a, _a) = oneshot::channel();
        let (reply_b, mut b) = oneshot::channel();
        outbox.wait_for_subscribers("alpha".into(), plain(5, "1"), reply_a, now + PUBLISH_GRACE);
        outbox.wait_for_subscribers("beta".into(), plain(5, "2"), reply_b, now + PUBLISH_GRACE);
        outbox.on_subscribed("gamma");
        assert!(outbox.poll_action().is_none());
        outbox.on_subscribed("alpha");
        assert!(matches!(outbox.poll_action(), Some(Action::Publish { topic, .. }) if topic == "alpha"));
        outbox.on_tick(now + Duration::from_secs(1));
        assert!(b.try_recv().is_err(), "still within its grace");
        outbox.on_tick(now + PUBLISH_GRACE);
        assert!(matches!(b.try_recv().unwrap(), Err(MeshError::NoSubscribers(t)) if t == "beta"));
    }
}
