//! The event loop's end-to-end encryption: sealing direct messages (after
//! finding the recipient's KEM key), opening inbound ones, the KEM key
//! publication, and the mailbox for offline peers. The cryptography itself
//! is in [`crate::crypto`]; this is the I/O around it.

use std::time::Duration;

use libp2p::{PeerId, request_response};
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

use super::{EventLoop, PendingSend, QueuedSend};
use crate::{
    MeshError,
    crypto::{Level, OpenError, SealError, SessionError, SignedKemKey},
    mesh::{Delivery, InboundMessage, Via},
    messaging::{Envelope, Held, RejectReason, Rejection},
    net::{
        Outbound, direct,
        e2e_proto::{E2eRequest, E2eResponse, HeldFrame, MAX_MAIL_BYTES},
    },
    platform::{self, Instant},
    state::{KEM_PREFIX, WriteMode},
};

/// Most peers asked for a KEM key when its owner does not answer.
const KEY_ASK_FALLBACKS: usize = 3;
/// Most mailbox holders one message is deposited with.
const DEPOSIT_HOLDERS: usize = 3;
/// How long a recipient whose event stream was full gets before its
/// remaining mail is delivered again.
const MAIL_RETRY: Duration = Duration::from_secs(1);
/// The longest such pause.
const MAIL_RETRY_MAX: Duration = Duration::from_secs(60);

/// When a recipient that could not take all its mail gets it again.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MailRetry {
    /// The next attempt (`None` once made, until the answer).
    at: Option<Instant>,
    /// The pause before it (doubles while the recipient takes nothing).
    pause: Duration,
}

impl MailRetry {
    /// The next attempt after a delivery that left some mail with the
    /// holder: a second later, or, when the recipient took none of it,
    /// twice the last pause (up to a minute): an application that does not
    /// read its events does not cost its holder a batch every second.
    fn after(previous: Option<&MailRetry>, accepted: u32, now: Instant) -> MailRetry {
        let pause = match previous {
            Some(retry) if accepted == 0 => (retry.pause * 2).min(MAIL_RETRY_MAX),
            _ => MAIL_RETRY,
        };
        MailRetry { at: Some(now + pause), pause }
    }

    /// Whether the next attempt is due (and not yet made).
    fn is_due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| at <= now)
    }
}

/// The state key under which a node publishes its KEM key at a level.
pub(super) fn kem_state_key(level: Level) -> String {
    format!("{KEM_PREFIX}{}", level.number())
}

fn kem_key_to_json(key: &SignedKemKey) -> serde_json::Value {
    serde_json::json!({
        "level": key.level.number(),
        "key": hex::encode(&key.key),
        "signature": hex::encode(&key.signature),
    })
}

fn kem_key_from_json(value: &serde_json::Value) -> Option<SignedKemKey> {
    let level = Level::try_from(u8::try_from(value.get("level")?.as_u64()?).ok()?).ok()?;
    let key = hex::decode(value.get("key")?.as_str()?).ok()?;
    let signature = hex::decode(value.get("signature")?.as_str()?).ok()?;
    Some(SignedKemKey { level, key, signature })
}

/// The counted reason for a message that did not open.
fn open_rejection(error: &OpenError) -> Rejection {
    let reason = match error {
        OpenError::NoSession(_) | OpenError::Session(SessionError::Epoch { .. }) => RejectReason::NoSession,
        OpenError::Session(SessionError::Replay(_)) => RejectReason::Replay,
        _ => RejectReason::Decrypt,
    };
    Rejection::new(reason, error.to_string())
}

/// A message deposited with mailbox holders, waiting for their answers.
pub(super) struct Deposit {
    id: String,
    recipient: PeerId,
    started: Instant,
    reply: Option<oneshot::Sender<Result<Delivery, MeshError>>>,
    outstanding: usize,
    refusals: Vec<String>,
}

/// What an outstanding e2e request was for.
pub(super) enum E2eAsk {
    /// The KEM key of a node, asked of that node or of another.
    Key { subject: PeerId, of_subject: bool },
    /// A deposit (its number in `deposits`) with this holder.
    Deposit { deposit: u64, holder: PeerId },
    /// Held messages delivered to their recipient.
    Mail { recipient: PeerId, held: Vec<Held> },
}

impl EventLoop {
    // ---- keys ---------------------------------------------------------

    /// Whether the KEM key of `peer` is known, looking in the replicated
    /// state (a node's published key) if not yet learnt.
    fn have_kem_key(&mut self, peer: &PeerId) -> bool {
        if self.e2e.knows(peer) {
            return true;
        }
        // A key that does not verify is ignored (the next one is tried, then
        // the node is asked).
        self.published_kem_keys(peer, self.e2e.level())
            .into_iter()
            .any(|signed| self.e2e.learn_key(*peer, signed).is_ok())
    }

    /// The KEM keys `subject` published in its namespace (as replicated
    /// here) at `level` and the stronger levels, in that order: the keys a
    /// sender at `level` may seal to. Not verified yet.
    fn published_kem_keys(&self, subject: &PeerId, level: Level) -> Vec<SignedKemKey> {
        let namespace = subject.to_base58();
        level
            .and_stronger()
            .filter_map(|level| {
                let published = self.state.get(&namespace, &kem_state_key(level))?;
                kem_key_from_json(&published).filter(|key| key.level == level)
            })
            .collect()
    }

    /// A direct message to seal whose recipient's key is not known yet:
    /// parks it and asks for the key.
    pub(super) fn await_kem_key(
        &mut self,
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
    ) -> Option<(Outbound, oneshot::Sender<Result<Delivery, MeshError>>)> {
        if self.have_kem_key(&peer) {
            return Some((outbound, reply));
        }
        let parked = self.awaiting_key.entry(peer).or_default();
        if parked.len() >= self.config.direct_queue {
            let _ = reply.send(Err(MeshError::QueueFull(peer)));
            return None;
        }
        parked.push(QueuedSend { outbound, reply });
        if parked.len() == 1 {
            self.ask_kem_key(peer, peer);
        }
        None
    }

    fn ask_kem_key(&mut self, subject: PeerId, of: PeerId) {
        let request =
            E2eRequest::KemKey { peer: ByteBuf::from(subject.to_bytes()), level: self.e2e.level().number() };
        let id = if of == subject && !self.peers.contains_key(&of) {
            let via = self.circuit_addrs(of);
            self.swarm.behaviour_mut().e2e.send_request_with_addresses(&of, request, via)
        } else {
            self.swarm.behaviour_mut().e2e.send_request(&of, request)
        };
        *self.key_asks_open.entry(subject).or_default() += 1;
        self.e2e_asks.insert(id, E2eAsk::Key { subject, of_subject: of == subject });
    }

    /// An answer (or none) to a key request about `subject`.
    fn on_kem_key(&mut self, subject: PeerId, of_subject: bool, key: Option<SignedKemKey>) {
        let open = self.key_asks_open.entry(subject).or_default();
        *open = open.saturating_sub(1);
        let learnt = match key {
            Some(key) => match self.e2e.learn_key(subject, key) {
                Ok(()) if self.e2e.knows(&subject) => true,
                Ok(()) => {
                    tracing::debug!(%subject, "a KEM key weaker than this node's level: not used");
                    false
                }
                Err(e) => {
                    tracing::warn!(%subject, "refused a KEM key: {e}");
                    false
                }
            },
            None => false,
        };
        if learnt {
            self.key_asks_open.remove(&subject);
            for parked in self.awaiting_key.remove(&subject).unwrap_or_default() {
                self.send_direct(subject, parked.outbound, parked.reply);
            }
            return;
        }
        if of_subject {
            // The node itself did not answer: ask the peers we have, whose
            // replicas may hold its published key.
            let others: Vec<PeerId> =
                self.peers.keys().filter(|p| **p != subject).take(KEY_ASK_FALLBACKS).copied().collect();
            for other in others {
                self.ask_kem_key(subject, other);
            }
        }
        if self.key_asks_open.get(&subject).copied().unwrap_or(0) == 0 {
            self.key_asks_open.remove(&subject);
            let level = self.e2e.level().number();
            for parked in self.awaiting_key.remove(&subject).unwrap_or_default() {
                let _ = parked.reply.send(Err(MeshError::Delivery {
                    peer: subject,
                    reason: format!(
                        "its end-to-end encryption key is unknown at level {level} or above: it could not \
                         be reached and no connected node knows one"
                    ),
                }));
            }
        }
    }

    /// Publishes this node's signed KEM key in its own namespace: at start
    /// when end-to-end encryption is on, else the first time it is used.
    /// Nothing is written when the namespace already holds this key.
    pub(super) fn publish_kem_key(&mut self) {
        if self.kem_key_published {
            return;
        }
        self.kem_key_published = true;
        let level = self.e2e.level();
        let value = kem_key_to_json(&self.e2e.own_key(level));
        let key = kem_state_key(level);
        let local = self.local_id.clone();
        if self.state.get(&local, &key).as_ref() == Some(&value) {
            return;
        }
        match self.state.write(&local, &key, Some(&value), WriteMode::Update, platform::now_ms()) {
            Ok(entry) => self.announce(&entry),
            Err(e) => tracing::warn!("could not publish the end-to-end key: {e}"),
        }
    }

    /// Held messages on their way to a recipient, not yet acknowledged
    /// (still held until then: on disk, and given back if not taken).
    fn mail_in_transit(&self) -> impl Iterator<Item = &Held> {
        self.e2e_asks
            .values()
            .filter_map(|ask| match ask {
                E2eAsk::Mail { held, .. } => Some(held),
                _ => None,
            })
            .flatten()
    }

    /// Sets the held-mail gauge: what waits here and what is in transit.
    fn count_held(&self) {
        self.metrics.set_mailbox_held(self.mailbox.len() + self.mail_in_transit().count());
    }

    /// Every held message as it is kept (waiting or in transit).
    pub(super) fn held_frames(&self) -> Vec<Vec<u8>> {
        self.mailbox
            .frames()
            .chain(self.mail_in_transit().map(|h| h.frame.as_slice()))
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn count_sessions(&self) {
        self.metrics.set_e2e_sessions(self.e2e.session_count());
    }

    // ---- sending ------------------------------------------------------

    /// Seals a direct message for `peer`: the encoded frame and the session.
    pub(super) fn seal_for(&mut self, peer: &PeerId, plain: &Envelope) -> Result<(Vec<u8>, u64), MeshError> {
        let (sealed, sealing) = self.e2e.sealed(peer, plain).map_err(|e| match e {
            SealError::NeedKey(_) | SealError::Session(_) => {
                MeshError::Delivery { peer: *peer, reason: format!("cannot encrypt: {e}") }
            }
        })?;
        if sealing.new_epoch.is_some_and(|epoch| epoch > 0) {
            self.metrics.e2e_rekeyed();
        }
        if sealing.new_epoch.is_some() {
            self.count_sessions();
            self.publish_kem_key();
        }
        Ok((sealed.encode(), sealing.session))
    }

    /// Sends a sealed message again, once: after the recipient lost its
    /// session or the connection it went on closed (`new_session` starts
    /// another session). Returns the pending send if it is not retried.
    pub(super) fn retry_sealed(
        &mut self,
        mut pending: PendingSend,
        new_session: bool,
    ) -> Option<PendingSend> {
        if pending.retried {
            return Some(pending);
        }
        let Some(plain) = pending.plain.take() else { return Some(pending) };
        if let Some(session) = pending.session.filter(|_| new_session) {
            self.e2e.reset(&pending.peer, session);
        }
        let outbound = Outbound {
            id: pending.id,
            priority: plain.priority,
            expires_at_ms: plain.expires_at_ms(),
            bytes: Vec::new(),
            seal: Some(plain),
        };
        self.start_send_with(pending.peer, outbound, pending.reply, true);
        None
    }

    /// A sealed send failed with `error`: sends it again on another
    /// connection, or leaves it with mailbox holders, if it can. Returns
    /// the pending send if neither is possible (the caller reports it).
    pub(super) fn recover_send(
        &mut self,
        pending: PendingSend,
        error: &direct::Failure,
    ) -> Option<PendingSend> {
        use direct::Failure::{ConnectionClosed, Io, Timeout, Unreachable};
        // The connection closed under the message (a restarted peer's old
        // one, say): once more, on another connection or a new dial, with a
        // new session in case the peer restarted.
        let pending =
            if matches!(error, ConnectionClosed) { self.retry_sealed(pending, true)? } else { pending };
        // Unreachable, or gone while it was sent: it may wait in a mailbox.
        // (If it did arrive, the recipient refuses the held copy as a
        // duplicate.)
        if matches!(error, Unreachable | ConnectionClosed | Timeout | Io(_)) {
            self.deposit(pending)
        } else {
            Some(pending)
        }
    }

    /// The recipient could not be reached: leave the message, sealed, with
    /// mailbox holders. Returns the pending send if that is not possible.
    pub(super) fn deposit(&mut self, pending: PendingSend) -> Option<PendingSend> {
        let Some(plain) = pending.plain.as_ref() else { return Some(pending) };
        let holders: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                **peer != pending.peer && state.agent.as_deref().is_some_and(|a| a.contains("(native)"))
            })
            .map(|(peer, _)| *peer)
            .take(DEPOSIT_HOLDERS)
            .collect();
        if holders.is_empty() {
            return Some(pending);
        }
        let sealed = match self.e2e.sealed_once(&pending.peer, plain) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::debug!(peer = %pending.peer, "cannot seal for the mailbox: {e}");
                return Some(pending);
            }
        };
        let frame = ByteBuf::from(sealed.encode());
        let number = self.next_deposit;
        self.next_deposit += 1;
        for holder in &holders {
            let request = E2eRequest::Deposit { frame: frame.clone() };
            let id = self.swarm.behaviour_mut().e2e.send_request(holder, request);
            self.e2e_asks.insert(id, E2eAsk::Deposit { deposit: number, holder: *holder });
        }
        self.deposits.insert(
            number,
            Deposit {
                id: pending.id,
                recipient: pending.peer,
                started: pending.started,
                reply: Some(pending.reply),
                outstanding: holders.len(),
                refusals: Vec::new(),
            },
        );
        None
    }

    fn on_deposit_answer(&mut self, number: u64, holder: PeerId, outcome: Result<(), String>) {
        let Some(deposit) = self.deposits.get_mut(&number) else { return };
        deposit.outstanding -= 1;
        match outcome {
            Ok(()) => {
                if let Some(reply) = deposit.reply.take() {
                    let _ = reply.send(Ok(Delivery {
                        id: deposit.id.clone(),
                        rtt: deposit.started.elapsed(),
                        held_by: Some(holder),
                        encrypted: true,
                    }));
                }
            }
            Err(reason) => deposit.refusals.push(format!("{holder}: {reason}")),
        }
        if deposit.outstanding == 0 {
            let deposit = self.deposits.remove(&number).expect("present");
            if let Some(reply) = deposit.reply {
                let _ = reply.send(Err(MeshError::Delivery {
                    peer: deposit.recipient,
                    reason: format!(
                        "not reachable, and no node would hold the message ({})",
                        deposit.refusals.join("; ")
                    ),
                }));
            }
        }
    }

    // ---- receiving ----------------------------------------------------

    /// Validates a direct frame from `peer` and opens it if sealed.
    pub(super) fn accept_direct(&mut self, bytes: &[u8], peer: &PeerId) -> Result<InboundMessage, Rejection> {
        let now = platform::now_ms();
        let mut envelope = self.validator.check(bytes, peer, &self.local_id, now)?;
        let opened = self.e2e.open(peer, &mut envelope).map_err(|e| open_rejection(&e))?;
        self.validator.remember(peer, &envelope, now);
        if let Some(epoch) = opened.and_then(|o| o.new_epoch) {
            if epoch > 0 {
                self.metrics.e2e_rekeyed();
            }
            self.count_sessions();
            self.publish_kem_key();
        }
        Ok(InboundMessage { envelope, sender: *peer, via: Via::Direct, e2e: opened.map(|o| o.level) })
    }

    pub(super) fn on_e2e(&mut self, event: request_response::Event<E2eRequest, E2eResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let response = self.on_e2e_request(peer, request);
                    let _ = self.swarm.behaviour_mut().e2e.send_response(channel, response);
                }
                request_response::Message::Response { request_id, response } => {
                    let Some(ask) = self.e2e_asks.remove(&request_id) else { return };
                    match (ask, response) {
                        (E2eAsk::Key { subject, of_subject }, E2eResponse::KemKey(key)) => {
                            self.on_kem_key(subject, of_subject, key)
                        }
                        (E2eAsk::Key { subject, of_subject }, _) => {
                            self.on_kem_key(subject, of_subject, None)
                        }
                        (E2eAsk::Deposit { deposit, holder }, E2eResponse::Held) => {
                            self.on_deposit_answer(deposit, holder, Ok(()))
                        }
                        (E2eAsk::Deposit { deposit, holder }, other) => {
                            let reason = match other {
                                E2eResponse::Refused(reason) => reason.chars().take(200).collect(),
                                _ => "unexpected answer".to_owned(),
                            };
                            self.on_deposit_answer(deposit, holder, Err(reason))
                        }
                        (
                            E2eAsk::Mail { recipient, held },
                            E2eResponse::Taken { accepted, rejected, later },
                        ) => {
                            // Refused ones (expired, duplicates) would be refused
                            // again; the ones the recipient could not take yet stay.
                            tracing::debug!(%recipient, accepted, rejected, later = later.len(), "held messages delivered");
                            // Counted delivered, then no longer held (the
                            // gauge below): never neither.
                            self.metrics.mailbox_delivered(u64::from(accepted));
                            let (again, done): (Vec<_>, Vec<_>) = held
                                .into_iter()
                                .enumerate()
                                .partition(|(i, _)| u32::try_from(*i).is_ok_and(|i| later.contains(&i)));
                            let done: Vec<_> =
                                done.into_iter().map(|(_, h)| (recipient, h.author, h.id)).collect();
                            self.forget_mail(&done);
                            self.mail_in_flight.remove(&recipient);
                            if again.is_empty() {
                                self.mail_retry.remove(&recipient);
                                self.flush_mail(recipient);
                            } else {
                                self.mailbox
                                    .give_back(recipient, again.into_iter().map(|(_, h)| h).collect());
                                let retry = MailRetry::after(
                                    self.mail_retry.get(&recipient),
                                    accepted,
                                    Instant::now(),
                                );
                                self.mail_retry.insert(recipient, retry);
                            }
                        }
                        (E2eAsk::Mail { recipient, held }, _) => {
                            self.mail_in_flight.remove(&recipient);
                            self.mailbox.give_back(recipient, held);
                        }
                    }
                    self.count_held();
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                let Some(ask) = self.e2e_asks.remove(&request_id) else { return };
                match ask {
                    E2eAsk::Key { subject, of_subject } => self.on_kem_key(subject, of_subject, None),
                    E2eAsk::Deposit { deposit, holder } => {
                        self.on_deposit_answer(deposit, holder, Err(error.to_string()))
                    }
                    E2eAsk::Mail { recipient, held } => {
                        tracing::debug!(%recipient, "held messages not delivered: {error}");
                        self.mail_in_flight.remove(&recipient);
                        self.mailbox.give_back(recipient, held);
                        self.count_held();
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound e2e request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_e2e_request(&mut self, peer: PeerId, request: E2eRequest) -> E2eResponse {
        match request {
            E2eRequest::KemKey { peer: subject, level } => {
                let (Ok(subject), Ok(level)) = (PeerId::from_bytes(&subject), Level::try_from(level)) else {
                    return E2eResponse::Refused("not a node ID and a level of 1, 3 or 5".into());
                };
                if subject == *self.swarm.local_peer_id() {
                    self.publish_kem_key_if(level);
                }
                // The key at that level, else at a stronger one the subject
                // published (a sender may seal up, never down).
                let known = self
                    .e2e
                    .key_of(&subject, level)
                    .or_else(|| self.published_kem_keys(&subject, level).into_iter().next());
                E2eResponse::KemKey(known)
            }
            E2eRequest::Deposit { frame } => match self.hold(peer, frame.into_vec()) {
                Ok(()) => E2eResponse::Held,
                Err(reason) => {
                    tracing::debug!(%peer, "refused a deposit: {reason}");
                    E2eResponse::Refused(reason)
                }
            },
            E2eRequest::Mail { held } => {
                let (mut accepted, mut rejected, mut later) = (0u32, 0u32, Vec::new());
                for (i, HeldFrame { author, frame }) in (0u32..).zip(held) {
                    // No room in the application's event stream: the holder
                    // keeps it for later rather than this node dropping it.
                    if self.events.capacity() == 0 {
                        later.push(i);
                        continue;
                    }
                    let result = match PeerId::from_bytes(&author) {
                        Ok(author) => self.accept_held(&frame, author, peer),
                        Err(_) => Err(Rejection::new(RejectReason::Malformed, "the author is not a node ID")),
                    };
                    match result {
                        Ok(message) => {
                            accepted += 1;
                            self.metrics.message_in(crate::metrics::Route::Direct);
                            self.deliver(message);
                        }
                        Err(rejection) => {
                            rejected += 1;
                            self.count_rejection(Some(&peer), &rejection);
                        }
                    }
                }
                if !later.is_empty() {
                    tracing::debug!(%peer, "{} held messages left with the holder: the event stream is full", later.len());
                }
                E2eResponse::Taken { accepted, rejected, later }
            }
        }
    }

    /// Someone asked for this node's key at a level it does not use: it
    /// answers (the key derives from the identity), and publishes nothing.
    fn publish_kem_key_if(&mut self, level: Level) {
        if level == self.e2e.level() {
            self.publish_kem_key();
        }
    }

    /// A held message delivered by `holder`: its author's handshake
    /// signature proves who wrote it, whoever delivers it.
    fn accept_held(
        &mut self,
        frame: &[u8],
        author: PeerId,
        holder: PeerId,
    ) -> Result<InboundMessage, Rejection> {
        let now = platform::now_ms();
        let mut envelope = self.validator.check(frame, &author, &self.local_id, now)?;
        let level = self.e2e.open_once(&author, &mut envelope).map_err(|e| open_rejection(&e))?;
        self.validator.remember(&author, &envelope, now);
        Ok(InboundMessage { envelope, sender: author, via: Via::Mailbox(holder), e2e: Some(level) })
    }

    // ---- holding ------------------------------------------------------

    /// Takes a deposit from `depositor`: a sealed envelope it wrote, for a
    /// peer other than this node.
    fn hold(&mut self, depositor: PeerId, frame: Vec<u8>) -> Result<(), String> {
        if !self.config.mailbox {
            return Err("this node keeps no mailbox".into());
        }
        self.validator.check_size(frame.len()).map_err(|e| e.to_string())?;
        let env = Envelope::decode(&frame).map_err(|e| format!("malformed: {e}"))?;
        let limits = self.validator.limits();
        limits.check_schema(&env).map_err(|e| e.to_string())?;
        limits.check_time(&env, platform::now_ms()).map_err(|e| e.to_string())?;
        if env.from.parse::<PeerId>().is_ok_and(|from| from != depositor) {
            return Err("only its author may deposit a message".into());
        }
        let recipient: PeerId = env.to.parse().map_err(|_| "the recipient must be a node ID".to_owned())?;
        if recipient == *self.swarm.local_peer_id() {
            return Err("addressed to this node: send it directly".into());
        }
        if env.e2e.as_ref().is_none_or(|body| body.handshake.is_none()) {
            return Err("only end-to-end sealed messages with their handshake are held".into());
        }
        let held = self
            .mailbox
            .hold(recipient, depositor, &env.id, env.expires_at_ms(), frame)
            .map_err(|e| e.to_string())?;
        // Held means stored: the answer waits for the store.
        if let Err(e) = self.state.store_mut().put_mail(&recipient, held) {
            self.mailbox.remove(&recipient, &depositor, &env.id);
            tracing::warn!("cannot store a held message: {e}");
            return Err("this node could not store the message".into());
        }
        self.count_held();
        if self.peers.contains_key(&recipient) {
            self.flush_mail(recipient);
        }
        Ok(())
    }

    /// Delivers what is held for `recipient` (connected), one batch at a time.
    pub(super) fn flush_mail(&mut self, recipient: PeerId) {
        if !self.mailbox.has(&recipient) || self.mail_in_flight.contains(&recipient) {
            return;
        }
        let held = self.mailbox.take(&recipient, MAX_MAIL_BYTES, platform::now_ms());
        if held.is_empty() {
            self.count_held();
            return;
        }
        let frames = held
            .iter()
            .map(|h| HeldFrame {
                author: ByteBuf::from(h.author.to_bytes()),
                frame: ByteBuf::from(h.frame.clone()),
            })
            .collect();
        let id = self.swarm.behaviour_mut().e2e.send_request(&recipient, E2eRequest::Mail { held: frames });
        self.mail_in_flight.insert(recipient);
        self.e2e_asks.insert(id, E2eAsk::Mail { recipient, held });
        self.count_held();
    }

    /// Delivers again to recipients that could not take all their mail
    /// (their event stream was full), once their pause is over.
    pub(super) fn retry_mail(&mut self, now: Instant) {
        if self.mail_retry.is_empty() {
            return;
        }
        let due: Vec<PeerId> =
            self.mail_retry.iter().filter(|(_, retry)| retry.is_due(now)).map(|(p, _)| *p).collect();
        for recipient in due {
            if let Some(retry) = self.mail_retry.get_mut(&recipient) {
                retry.at = None;
            }
            if self.peers.contains_key(&recipient) {
                self.flush_mail(recipient);
            }
        }
    }

    /// Drops expired held messages.
    pub(super) fn expire_mail(&mut self) {
        if !self.mailbox.is_empty() {
            let gone = self.mailbox.expire(platform::now_ms());
            self.forget_mail(&gone);
            self.count_held();
        }
    }

    /// Removes delivered or expired messages from the store.
    fn forget_mail(&mut self, messages: &[(PeerId, PeerId, String)]) {
        if messages.is_empty() {
            return;
        }
        if let Err(e) = self.state.store_mut().drop_mail(messages) {
            // They stay on disk; at the next start they are delivered again
            // (and refused as duplicates) or expire.
            tracing::warn!("cannot remove held messages from the store: {e}");
        }
    }

    /// Restores the mailbox from the store at start (unexpired messages).
    pub(super) fn restore_mail(&mut self) {
        if !self.config.mailbox {
            return;
        }
        let stored = match self.state.store_mut().load_mail() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("cannot load held messages: {e}");
                return;
            }
        };
        let now = platform::now_ms();
        let mut gone = Vec::new();
        for (recipient, held) in stored {
            let key = (recipient, held.author, held.id.clone());
            if held.expires_at_ms <= now
                || self
                    .mailbox
                    .hold(recipient, held.author, &held.id, held.expires_at_ms, held.frame)
                    .is_err()
            {
                gone.push(key);
            }
        }
        self.forget_mail(&gone);
        self.count_held();
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn mail_retries_back_off_while_the_recipient_takes_nothing() {
        let now = Instant::now();
        let first = MailRetry::after(None, 0, now);
        assert_eq!(first, MailRetry { at: Some(now + MAIL_RETRY), pause: MAIL_RETRY });
        assert!(!first.is_due(now) && first.is_due(now + MAIL_RETRY));
        // Nothing taken: the pause doubles, up to the cap.
        let mut retry = first;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            retry = MailRetry::after(Some(&retry), 0, now);
            pauses.push(retry.pause.as_secs());
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60]);
        // Some taken: back to a second.
        let again = MailRetry::after(Some(&retry), 3, now);
        assert_eq!(again.pause, MAIL_RETRY);
        // Made, waiting for the answer: not due again.
        assert!(!MailRetry { at: None, pause: MAIL_RETRY }.is_due(now + MAIL_RETRY_MAX));
    }
}
