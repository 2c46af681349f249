// Over 600 lines: sealing, opening and key lookup share the session table; mailbox, deposits and key waits live apart.
//! End-to-end sessions, the rules: sealing direct messages once the
//! recipient's KEM key is known (found in the replicated state, asked of
//! the recipient, or of peers whose replicas hold it), opening inbound
//! ones, publishing this node's own signed KEM key, and the mailbox: a
//! message that cannot reach its recipient is left, sealed, with native
//! nodes that hold it until the recipient connects. The cryptography is
//! [`crate::crypto`]'s; the wire is [`super::wire`]'s. I/O-free: the event
//! loop carries the [`Action`]s.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use serde_json::Value;

use super::{
    deposits::Deposits,
    holder::{self, Holder},
    keys::{self, KeyWaits},
    wire::{E2eRequest, E2eResponse, HeldFrame},
};
use crate::{
    Identity, InboundMessage, MeshError, Via,
    crypto::{E2e, Level, OpenError, Rekey, SealError, SessionError, SignedKemKey},
    messaging::{Envelope, Held, Limits, MailboxLimits, RejectReason, Rejection, Validator},
    metrics::{Metrics, Route},
    platform::{self, Instant},
    protocols::{
        AskId,
        outbox::{Body, Queued, Sealer, Undelivered},
    },
    state::LocalState,
    store::{MailChange, MailKey},
};

/// Most peers asked for a KEM key when its owner does not answer.
const KEY_ASK_FALLBACKS: usize = 3;
/// Most mailbox holders one message is deposited with.
const DEPOSIT_HOLDERS: usize = 3;
/// Most receipts of held messages kept (each until its message expires).
const MAX_RECEIPTS: usize = 65_536;
/// The settings this driver uses.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Seal direct messages end-to-end.
    pub quantum_resistant: bool,
    /// The level this node encapsulates at.
    pub level: Level,
    /// The weakest direct message accepted (`None`: any, plaintext too).
    pub min_level: Option<Level>,
    /// When session keys rotate.
    pub rekey: Rekey,
    /// Hold messages for offline peers.
    pub mailbox: bool,
    /// Bounds of that mailbox.
    pub mailbox_limits: MailboxLimits,
    /// Most sends parked per recipient while its key is looked for.
    pub parked: usize,
    /// Limits on inbound envelopes.
    pub limits: Limits,
}

impl From<&crate::MeshConfig> for Settings {
    fn from(config: &crate::MeshConfig) -> Self {
        Settings {
            quantum_resistant: config.quantum_resistant,
            level: config.kem_level,
            min_level: config.min_kem_level,
            rekey: config.e2e_rekey,
            mailbox: config.mailbox,
            mailbox_limits: config.mailbox_limits.clone(),
            parked: config.direct_queue,
            limits: config.limits.clone(),
        }
    }
}

/// A deposit to answer once it is stored.
#[derive(Debug)]
pub(crate) struct HeldAck<C> {
    channel: C,
    recipient: PeerId,
    author: PeerId,
    id: String,
}

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Send an e2e request (through a relay when `via_relays` and the peer
    /// is not connected); its answer comes back with `ask`.
    Request { peer: PeerId, ask: AskId, request: E2eRequest, via_relays: bool },
    /// Answer an inbound request.
    Respond { channel: C, response: E2eResponse },
    /// Hand a message to the application.
    Deliver(InboundMessage),
    /// A parked send whose recipient's key is known now: to the outbox.
    Send { peer: PeerId, queued: Queued },
    /// Write this node's signed KEM key into its own namespace.
    PublishKey { key: String, value: Value },
    /// Make these mailbox changes durable; then answer `held`, if any.
    StoreMail { changes: Vec<MailChange>, held: Option<HeldAck<C>> },
}

/// What an outstanding request was for.
enum Ask {
    /// The KEM key of a node, asked of that node or of another.
    Key { subject: PeerId, of_subject: bool },
    /// A deposit (its number) with this holder.
    Deposit { deposit: u64, holder: PeerId },
    /// Held messages delivered to their recipient.
    Mail { recipient: PeerId },
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

/// The driver; see the module documentation.
pub(crate) struct Sessions<C> {
    local: PeerId,
    local_text: String,
    settings: Settings,
    e2e: E2e,
    /// Validates direct and held messages.
    validator: Validator,
    connected: HashSet<PeerId>,
    /// Sealed sends waiting for their recipient's KEM key.
    key_waits: KeyWaits,
    asks: HashMap<AskId, Ask>,
    next_ask: u64,
    /// Messages left with mailbox holders, waiting for their answers.
    deposits: Deposits,
    /// This node's own signed KEM key is in its namespace.
    key_published: bool,
    /// Messages held here for offline peers.
    holder: Holder,
    /// Held messages this node received (author, ID, expiry), oldest
    /// first: kept in the mail store until they expire, so that a holder
    /// delivering one again after a restart is refused as a duplicate.
    receipts: VecDeque<(PeerId, String, u64)>,
    logged: HashSet<RejectReason>,
    metrics: Arc<Metrics>,
    actions: VecDeque<Action<C>>,
}

impl<C> Sessions<C> {
    /// The sessions of `identity`.
    pub(crate) fn new(identity: Identity, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let local = identity.peer_id();
        Self {
            local,
            local_text: local.to_base58(),
            e2e: E2e::new(identity, settings.level).with_rekey(settings.rekey),
            validator: Validator::new(settings.limits.clone()),
            holder: Holder::new(settings.mailbox_limits.clone()),
            receipts: VecDeque::new(),
            key_waits: KeyWaits::new(settings.parked),
            settings,
            connected: HashSet::new(),
            asks: HashMap::new(),
            next_ask: 0,
            deposits: Deposits::default(),
            key_published: false,
            logged: HashSet::new(),
            metrics,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// At start: the mail a store held (expired messages are dropped from
    /// it), and this node's KEM key published when encryption is on (so a
    /// node that goes offline before it ever used it can still be written
    /// to: senders find its key with the replicas of its namespace).
    pub(crate) fn start(&mut self, stored_mail: Vec<(PeerId, Held)>, now_ms: u64) {
        let (receipts, stored_mail): (Vec<_>, Vec<_>) =
            stored_mail.into_iter().partition(|(recipient, _)| *recipient == self.local);
        let mut receipts: Vec<Held> = receipts.into_iter().map(|(_, held)| held).collect();
        receipts.sort_by_key(|held| held.expires_at_ms);
        for held in receipts {
            self.validator.remember_id(&held.author, &held.id, held.expires_at_ms, now_ms);
            self.receipts.push_back((held.author, held.id, held.expires_at_ms));
        }
        self.expire_receipts(now_ms);
        let gone = if self.settings.mailbox {
            self.holder.restore(stored_mail, now_ms)
        } else {
            stored_mail.into_iter().map(|(r, h)| (r, h.author, h.id)).collect()
        };
        self.forget_mail(gone);
        self.count_held();
        if self.settings.quantum_resistant {
            self.publish_key();
        }
    }

    /// Counts a refused message and logs it: the first of each reason at
    /// `warn`, the rest at `debug`, so a hostile peer cannot flood the log.
    fn refused(&mut self, peer: &PeerId, rejection: &Rejection) {
        self.metrics.dropped(rejection.reason);
        if self.logged.insert(rejection.reason) {
            tracing::warn!(%peer, "dropped message: {rejection} (further drops for this reason are logged at debug)");
        } else {
            tracing::debug!(%peer, "dropped message: {rejection}");
        }
    }

    // ---- keys -------------------------------------------------------------

    /// Whether the KEM key of `peer` is known, looking in the replicated
    /// state (a node's published key) if not yet learnt. A key that does
    /// not verify is ignored.
    fn have_key(&mut self, peer: &PeerId, state: &LocalState) -> bool {
        if self.e2e.knows(peer) {
            return true;
        }
        keys::published(state, peer, self.e2e.level())
            .into_iter()
            .any(|signed| self.e2e.learn_key(*peer, signed).is_ok())
    }

    /// A direct message to send: handed back if it can go now (not sealed,
    /// or the recipient's key is known); parked, and the key asked for,
    /// otherwise.
    pub(crate) fn ready(&mut self, peer: PeerId, queued: Queued, state: &LocalState) -> Option<Queued> {
        if !matches!(queued.outbound.body, Body::ToSeal(_)) || self.have_key(&peer, state) {
            return Some(queued);
        }
        match self.key_waits.park(peer, queued) {
            Ok(true) => self.ask_key(peer, peer),
            Ok(false) => {}
            Err(queued) => {
                let _ = queued.reply.send(Err(MeshError::QueueFull(peer)));
            }
        }
        None
    }

    fn ask(&mut self, peer: PeerId, ask: Ask, request: E2eRequest, via_relays: bool) {
        let id = AskId(self.next_ask);
        self.next_ask += 1;
        self.asks.insert(id, ask);
        self.actions.push_back(Action::Request { peer, ask: id, request, via_relays });
    }

    fn ask_key(&mut self, subject: PeerId, of: PeerId) {
        let request =
            E2eRequest::KemKey { peer: ByteBuf::from(subject.to_bytes()), level: self.e2e.level().number() };
        self.key_waits.asked(subject);
        let via_relays = of == subject && !self.connected.contains(&of);
        self.ask(of, Ask::Key { subject, of_subject: of == subject }, request, via_relays);
    }

    /// An answer (or none) to a key request about `subject`.
    fn on_key(&mut self, subject: PeerId, of_subject: bool, key: Option<SignedKemKey>) {
        let mut open = self.key_waits.answered(subject);
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
            for queued in self.key_waits.release(&subject) {
                self.actions.push_back(Action::Send { peer: subject, queued });
            }
            return;
        }
        if of_subject {
            // The node itself did not answer: ask the peers we have, whose
            // replicas may hold its published key.
            let mut others: Vec<PeerId> = self.connected.iter().filter(|p| **p != subject).copied().collect();
            others.sort();
            for other in others.into_iter().take(KEY_ASK_FALLBACKS) {
                self.ask_key(subject, other);
                open += 1;
            }
        }
        if open == 0 {
            let level = self.e2e.level().number();
            for queued in self.key_waits.release(&subject) {
                let _ = queued.reply.send(Err(MeshError::Delivery {
                    peer: subject,
                    reason: format!(
                        "its end-to-end encryption key is unknown at level {level} or above: it could not be \
                         reached and no connected node knows one"
                    ),
                }));
            }
        }
    }

    /// Publishes this node's signed KEM key in its own namespace (once).
    fn publish_key(&mut self) {
        if self.key_published {
            return;
        }
        self.key_published = true;
        let level = self.e2e.level();
        let value = keys::to_json(&self.e2e.own_key(level));
        self.actions.push_back(Action::PublishKey { key: keys::kem_state_key(level), value });
    }

    // ---- receiving --------------------------------------------------------

    /// A direct message from `peer`: validated, opened if sealed.
    /// `room`: how many messages the application's event stream takes now.
    /// A message is acknowledged only once the application has it: while
    /// the stream is full it is refused (`queue_full`; the sender is told,
    /// and nothing of its session is used up).
    pub(crate) fn accept_direct(
        &mut self,
        peer: &PeerId,
        bytes: &[u8],
        room: usize,
    ) -> Result<InboundMessage, Rejection> {
        if room == 0 {
            let rejection = Rejection::new(RejectReason::QueueFull, "the recipient's application is behind");
            self.refused(peer, &rejection);
            return Err(rejection);
        }
        let now = platform::now_ms();
        let result = self.validator.check(bytes, peer, &self.local_text, now).and_then(|mut envelope| {
            self.strong_enough(&envelope)?;
            let opened = self.e2e.open(peer, &mut envelope).map_err(|e| open_rejection(&e))?;
            self.validator.remember(peer, &envelope, now);
            Ok((envelope, opened))
        });
        match result {
            Ok((envelope, opened)) => {
                if let Some(epoch) = opened.and_then(|o| o.new_epoch) {
                    if epoch > 0 {
                        self.metrics.e2e_rekeyed();
                    }
                    self.count_sessions();
                    self.publish_key();
                }
                self.metrics.message_in(Route::Direct);
                Ok(InboundMessage { envelope, sender: *peer, via: Via::Direct, e2e: opened.map(|o| o.level) })
            }
            Err(rejection) => {
                self.refused(peer, &rejection);
                Err(rejection)
            }
        }
    }

    /// A direct message that announced more bytes than the limit.
    pub(crate) fn oversize(&mut self, peer: &PeerId, len: u64) -> Rejection {
        let limit = self.validator.limits().max_envelope_bytes;
        let rejection =
            Rejection::new(RejectReason::Oversize, format!("{len} bytes announced, limit {limit}"));
        self.refused(peer, &rejection);
        rejection
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
        let mut envelope = self.validator.check(frame, &author, &self.local_text, now)?;
        self.strong_enough(&envelope)?;
        let level = self.e2e.open_once(&author, &mut envelope).map_err(|e| open_rejection(&e))?;
        self.validator.remember(&author, &envelope, now);
        self.receipt(author, envelope.id.clone(), envelope.expires_at_ms());
        Ok(InboundMessage { envelope, sender: author, via: Via::Mailbox(holder), e2e: Some(level) })
    }

    /// A peer's e2e request; the answer goes back on `channel` (a deposit's
    /// once it is stored). `room`: how many messages the application's
    /// event stream takes now.
    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        request: E2eRequest,
        channel: C,
        state: &LocalState,
        room: usize,
    ) {
        let response = match request {
            E2eRequest::KemKey { peer: subject, level } => {
                let (Ok(subject), Ok(level)) = (PeerId::from_bytes(&subject), Level::try_from(level)) else {
                    self.respond(
                        channel,
                        E2eResponse::Refused("not a node ID and a level of 1, 3 or 5".into()),
                    );
                    return;
                };
                if subject == self.local && level == self.e2e.level() {
                    self.publish_key();
                }
                // The key at that level, else at a stronger one the subject
                // published (a sender may seal up, never down).
                let known = self
                    .e2e
                    .key_of(&subject, level)
                    .or_else(|| keys::published(state, &subject, level).into_iter().next());
                E2eResponse::KemKey(known)
            }
            E2eRequest::Deposit { frame } => match self.hold(peer, frame.into_vec()) {
                Ok(held) => {
                    let changes = vec![MailChange::Hold(held.0, held.1.clone())];
                    let ack = HeldAck { channel, recipient: held.0, author: peer, id: held.1.id };
                    self.actions.push_back(Action::StoreMail { changes, held: Some(ack) });
                    return;
                }
                Err(reason) => {
                    tracing::debug!(%peer, "refused a deposit: {reason}");
                    E2eResponse::Refused(reason)
                }
            },
            E2eRequest::Mail { held } => self.take_mail(peer, held, room),
        };
        self.respond(channel, response);
    }

    fn respond(&mut self, channel: C, response: E2eResponse) {
        self.actions.push_back(Action::Respond { channel, response });
    }

    /// Messages a holder delivers: as many as the application takes now;
    /// the rest stay with the holder for later.
    fn take_mail(&mut self, holder: PeerId, held: Vec<HeldFrame>, mut room: usize) -> E2eResponse {
        let (mut accepted, mut rejected, mut later) = (0u32, 0u32, Vec::new());
        for (i, HeldFrame { author, frame }) in (0u32..).zip(held) {
            if room == 0 {
                later.push(i);
                continue;
            }
            let result = match PeerId::from_bytes(&author) {
                Ok(author) => self.accept_held(&frame, author, holder),
                Err(_) => Err(Rejection::new(RejectReason::Malformed, "the author is not a node ID")),
            };
            match result {
                Ok(message) => {
                    accepted += 1;
                    room -= 1;
                    self.metrics.message_in(Route::Direct);
                    self.actions.push_back(Action::Deliver(message));
                }
                Err(rejection) => {
                    rejected += 1;
                    self.refused(&holder, &rejection);
                }
            }
        }
        if !later.is_empty() {
            tracing::debug!(%holder, "{} held messages left with the holder: the event stream is full", later.len());
        }
        E2eResponse::Taken { accepted, rejected, later }
    }

    // ---- holding mail for others -------------------------------------------

    /// Takes a deposit from `depositor`: a sealed envelope it wrote, with
    /// its handshake, for a peer other than this node.
    fn hold(&mut self, depositor: PeerId, frame: Vec<u8>) -> Result<(PeerId, Held), String> {
        if !self.settings.mailbox {
            return Err("this node keeps no mailbox".into());
        }
        let now_ms = platform::now_ms();
        let (recipient, env) =
            holder::check_deposit(self.validator.limits(), &self.local, &depositor, &frame, now_ms)?;
        let held = self
            .holder
            .hold(recipient, depositor, &env.id, env.expires_at_ms(), frame)
            .map_err(|e| e.to_string())?;
        self.count_held();
        Ok((recipient, held))
    }

    /// A deposit's storing finished: answered held, or refused (and
    /// forgotten) when it could not be stored.
    pub(crate) fn on_mail_stored(&mut self, acks: Vec<HeldAck<C>>, stored: Result<(), String>) {
        for ack in acks {
            let response = match &stored {
                Ok(()) => {
                    if self.connected.contains(&ack.recipient) {
                        self.flush_mail(ack.recipient);
                    }
                    E2eResponse::Held
                }
                Err(e) => {
                    tracing::warn!("cannot store a held message: {e}");
                    self.holder.forget(&(ack.recipient, ack.author, ack.id));
                    self.count_held();
                    E2eResponse::Refused("this node could not store the message".into())
                }
            };
            self.respond(ack.channel, response);
        }
    }

    /// Delivers what is held for `recipient` (connected), one batch at a time.
    fn flush_mail(&mut self, recipient: PeerId) {
        if let Some(held) = self.holder.next_batch(recipient, platform::now_ms()) {
            let frames = held
                .iter()
                .map(|h| HeldFrame {
                    author: ByteBuf::from(h.author.to_bytes()),
                    frame: ByteBuf::from(h.frame.clone()),
                })
                .collect();
            self.ask(recipient, Ask::Mail { recipient }, E2eRequest::Mail { held: frames }, false);
        }
        self.count_held();
    }

    /// Removes delivered or expired messages from the store.
    fn forget_mail(&mut self, messages: Vec<MailKey>) {
        if !messages.is_empty() {
            let changes = messages.into_iter().map(|(r, a, id)| MailChange::Drop(r, a, id)).collect();
            self.actions.push_back(Action::StoreMail { changes, held: None });
        }
    }

    /// Sets the held-mail gauge: what waits here and what is in transit.
    fn count_held(&self) {
        self.metrics.set_mailbox_held(self.holder.len());
    }

    /// Every held message as it is kept (waiting or in transit).
    pub(crate) fn held_frames(&self) -> Vec<Vec<u8>> {
        self.holder.frames()
    }

    // ---- leaving mail with holders -----------------------------------------

    /// A sealed message that did not reach its recipient: left with up to
    /// three of `holders` (connected native nodes), sealed once more with a
    /// one-off session the holders cannot read.
    pub(crate) fn deposit(&mut self, undelivered: Undelivered, holders: Vec<PeerId>) {
        let Undelivered { peer, id, started, plain, reply, error } = undelivered;
        let holders: Vec<PeerId> = holders.into_iter().filter(|h| *h != peer).take(DEPOSIT_HOLDERS).collect();
        let sealed = if holders.is_empty() {
            Err(error)
        } else {
            self.e2e.sealed_once(&peer, &plain).map_err(|e| {
                tracing::debug!(%peer, "cannot seal for the mailbox: {e}");
                error
            })
        };
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(reason) => {
                let _ = reply.send(Err(MeshError::Delivery { peer, reason }));
                return;
            }
        };
        let frame = ByteBuf::from(sealed.encode());
        let number = self.deposits.start(id, peer, started, reply, holders.len());
        for holder in holders {
            let request = E2eRequest::Deposit { frame: frame.clone() };
            self.ask(holder, Ask::Deposit { deposit: number, holder }, request, false);
        }
    }

    // ---- answers to our requests ------------------------------------------

    /// An answer to a request of ours.
    pub(crate) fn on_response(&mut self, ask: AskId, response: E2eResponse, now: Instant) {
        let Some(ask) = self.asks.remove(&ask) else { return };
        match (ask, response) {
            (Ask::Key { subject, of_subject }, E2eResponse::KemKey(key)) => {
                self.on_key(subject, of_subject, key)
            }
            (Ask::Key { subject, of_subject }, _) => self.on_key(subject, of_subject, None),
            (Ask::Deposit { deposit, holder }, E2eResponse::Held) => {
                self.deposits.answer(deposit, holder, Ok(()), now)
            }
            (Ask::Deposit { deposit, holder }, other) => {
                let reason = match other {
                    E2eResponse::Refused(reason) => reason.chars().take(200).collect(),
                    _ => "unexpected answer".to_owned(),
                };
                self.deposits.answer(deposit, holder, Err(reason), now)
            }
            (Ask::Mail { recipient }, E2eResponse::Taken { accepted, rejected, later }) => {
                tracing::debug!(%recipient, accepted, rejected, later = later.len(), "held messages delivered");
                // Counted delivered, then no longer held: never neither.
                self.metrics.mailbox_delivered(u64::from(accepted));
                let done = self.holder.answered(recipient, accepted, &later, now);
                self.forget_mail(done);
                if later.is_empty() {
                    self.flush_mail(recipient);
                }
            }
            (Ask::Mail { recipient }, _) => self.holder.not_delivered(recipient),
        }
        self.count_held();
    }

    /// A request of ours failed.
    pub(crate) fn on_failure(&mut self, ask: AskId, error: String, now: Instant) {
        let Some(ask) = self.asks.remove(&ask) else { return };
        match ask {
            Ask::Key { subject, of_subject } => self.on_key(subject, of_subject, None),
            Ask::Deposit { deposit, holder } => self.deposits.answer(deposit, holder, Err(error), now),
            Ask::Mail { recipient } => {
                tracing::debug!(%recipient, "held messages not delivered: {error}");
                self.holder.not_delivered(recipient);
                self.count_held();
            }
        }
    }

    // ---- peers and time -----------------------------------------------------

    /// A peer connected: what is held for it goes now.
    pub(crate) fn on_peer_up(&mut self, peer: PeerId) {
        self.connected.insert(peer);
        self.flush_mail(peer);
    }

    /// A peer's last connection closed.
    pub(crate) fn on_peer_down(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
    }

    /// Drops expired mail; delivers again to recipients whose pause is over.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        self.expire_receipts(platform::now_ms());
        let gone = self.holder.expire(platform::now_ms());
        if !gone.is_empty() {
            self.forget_mail(gone);
            self.count_held();
        }
        for recipient in self.holder.due(now) {
            if self.connected.contains(&recipient) {
                self.flush_mail(recipient);
            }
        }
    }

    /// Forgets receipts of messages that have expired (a copy delivered
    /// again would be refused as expired) and the oldest beyond
    /// [`MAX_RECEIPTS`].
    fn expire_receipts(&mut self, now_ms: u64) {
        let mut gone = Vec::new();
        while let Some((_, _, expires)) = self.receipts.front() {
            if *expires > now_ms && self.receipts.len() <= MAX_RECEIPTS {
                break;
            }
            let (author, id, _) = self.receipts.pop_front().expect("front exists");
            gone.push((self.local, author, id));
        }
        self.forget_mail(gone);
    }

    /// Keeps a receipt of a held message taken, until it expires.
    fn receipt(&mut self, author: PeerId, id: String, expires_at_ms: u64) {
        let held = Held { author, id: id.clone(), expires_at_ms, frame: Vec::new() };
        self.receipts.push_back((author, id, expires_at_ms));
        self.actions
            .push_back(Action::StoreMail { changes: vec![MailChange::Hold(self.local, held)], held: None });
    }

    /// Refuses a direct message weaker than `min_level`: not sealed, or
    /// starting a session below it (a session's later messages were
    /// checked when it started).
    fn strong_enough(&self, envelope: &Envelope) -> Result<(), Rejection> {
        let Some(min) = self.settings.min_level else { return Ok(()) };
        let level = match &envelope.e2e {
            None => None,
            Some(body) => match &body.handshake {
                Some(handshake) => Some(handshake.level),
                None => return Ok(()),
            },
        };
        match level {
            Some(level) if level >= min.number() => Ok(()),
            Some(level) => Err(Rejection::new(
                RejectReason::TooWeak,
                format!("sealed at level {level}; this node accepts level {} or above", min.number()),
            )),
            None => Err(Rejection::new(
                RejectReason::TooWeak,
                format!("not end-to-end encrypted; this node accepts level {} or above", min.number()),
            )),
        }
    }

    fn count_sessions(&self) {
        self.metrics.set_e2e_sessions(self.e2e.session_count());
    }

    /// The KEM level of the session with `peer`, if there is one.
    pub(crate) fn session_level(&self, peer: &PeerId) -> Option<u8> {
        self.e2e.session_with(peer).map(|(level, _)| level.number())
    }
}

impl<C> Sealer for Sessions<C> {
    fn seal(&mut self, peer: &PeerId, plain: &Envelope) -> Result<(Vec<u8>, u64), MeshError> {
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
            self.publish_key();
        }
        Ok((sealed.encode(), sealing.session))
    }

    fn confirm(&mut self, peer: &PeerId, session: u64) {
        self.e2e.confirm(peer, session);
    }

    fn reset(&mut self, peer: &PeerId, session: u64) {
        self.e2e.reset(peer, session);
    }
}

#[cfg(test)]
mod tests;
