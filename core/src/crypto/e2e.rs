//! End-to-end encryption of direct messages: the table of sessions with
//! each peer and the sealed form of an envelope. Pure (no I/O): the event
//! loop seals an envelope before sending it and opens one after it passed
//! validation.
//!
//! - What is sealed: the envelope's `payload` and `content`. The header
//!   (ID, type, sender, recipient, priority, TTL, timestamp) stays readable
//!   for routing and validation and is authenticated as associated data,
//!   so it cannot be changed or the body moved to another envelope.
//! - One session per direction: messages to a peer use the session this
//!   node started (it encapsulated to the peer's KEM key); messages from a
//!   peer use the session the peer started. Neither side waits for the
//!   other, and two nodes starting at once do not race.
//! - A session's handshake rides on every message until one of them is
//!   acknowledged, so concurrent first messages arrive in any order; the
//!   receiver decapsulates each handshake once.
//! - A receiver that lost its session (it restarted) refuses with
//!   [`OpenError::NoSession`]; the sender [`E2e::reset`]s and sends again
//!   with a fresh handshake.
//! - Mailbox messages (held for an offline peer by a third node) are sealed
//!   with a one-off session ([`E2e::seal_once`]): the handshake, signed by
//!   the sender, proves who wrote them whoever delivers them.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};

use super::{
    kem::{KemPublicKey, KemSecret, Level},
    session::{Rekey, Session, SessionError, SignedKemKey},
};
use crate::{
    Identity,
    messaging::{Envelope, Handshake, Sealed, SealedBody},
};

/// The most a sealed envelope's encoding exceeds its plaintext encoding's
/// (a level-5 handshake with its signature, counters, tag, framing).
pub const MAX_SEAL_OVERHEAD: usize = 2048;

/// Most peers with a session in each direction; beyond it the table
/// forgets one (a forgotten session is re-established on the next message).
const MAX_SESSIONS: usize = 4096;

/// What is encrypted.
#[derive(Serialize, Deserialize)]
struct Inner {
    payload: ByteBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

/// Why an envelope could not be sealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The peer's KEM key is not known yet (ask for it, then seal).
    #[error("the end-to-end key of {0} is not known")]
    NeedKey(PeerId),
    /// The session refused.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why an inbound envelope could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// No handshake, and no session with the sender for its epoch.
    #[error("no end-to-end session with the sender for key epoch {0}")]
    NoSession(u32),
    /// A mailbox message without the handshake that authenticates it.
    #[error("a held message must carry its handshake")]
    NoHandshake,
    /// The plaintext inside is not a payload and content.
    #[error("malformed sealed body: {0}")]
    Malformed(String),
    /// Bad signature, tampering, replay.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A handshake that failed to verify before, sent again.
    #[error("a handshake that failed to verify before")]
    RefusedBefore,
}

/// What opening an envelope involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The KEM level of the session.
    pub level: Level,
    /// The sender started a new key epoch with this message (0 for the
    /// first session, more for a rotation).
    pub new_epoch: Option<u32>,
}

/// What sealing an envelope involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealing {
    /// The key epoch it was sealed under.
    pub epoch: u32,
    /// A new key epoch started with this message: `Some(0)` for a first
    /// session, `Some(n > 0)` for a rotation.
    pub new_epoch: Option<u32>,
    /// Which of this node's sessions sealed it (for [`E2e::confirm`] and
    /// [`E2e::reset`], which act only if that session is still current).
    pub session: u64,
}

/// The associated data of a sealed envelope: every header field.
fn header(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + env.id.len() + env.from.len() + env.to.len());
    out.extend_from_slice(b"infermesh/e2e-envelope/v1");
    for field in [env.id.as_str(), env.msg_type.as_str(), env.from.as_str(), env.to.as_str()] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.push(env.priority);
    out.extend_from_slice(&env.ttl.to_be_bytes());
    out.extend_from_slice(&env.timestamp.to_be_bytes());
    out
}

/// [`Inner`], borrowed from the envelope (sealing copies the payload once,
/// into the plaintext).
#[derive(Serialize)]
struct InnerRef<'a> {
    payload: &'a serde_bytes::Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// `env` sealed under `session`: its header, and the payload and content
/// in the `e2e` field (with `handshake`, if given).
fn seal_body(
    session: &mut Session,
    env: &Envelope,
    handshake: Option<Handshake>,
) -> Result<Envelope, SessionError> {
    let inner = InnerRef { payload: serde_bytes::Bytes::new(&env.payload), content: env.content.as_deref() };
    // Room for the CBOR framing and the tag: sealed where it is written.
    let content = env.content.as_deref().map_or(0, str::len);
    let mut plaintext = Vec::with_capacity(env.payload.len() + content + 48);
    ciborium::into_writer(&inner, &mut plaintext).expect("writing CBOR into a Vec cannot fail");
    let sealed = session.seal_owned(plaintext, &header(env))?;
    Ok(Envelope {
        id: env.id.clone(),
        msg_type: env.msg_type.clone(),
        from: env.from.clone(),
        to: env.to.clone(),
        priority: env.priority,
        ttl: env.ttl,
        timestamp: env.timestamp,
        payload: Vec::new(),
        content: None,
        e2e: Some(Box::new(SealedBody { handshake, sealed })),
    })
}

fn open_body(session: &mut Session, env: &mut Envelope, sealed: &Sealed) -> Result<(), OpenError> {
    let plaintext = session.open(sealed, &header(env))?;
    let inner: Inner =
        ciborium::from_reader(&plaintext[..]).map_err(|e| OpenError::Malformed(e.to_string()))?;
    env.payload = inner.payload.into_vec();
    env.content = inner.content;
    env.e2e = None;
    Ok(())
}

struct Outgoing {
    /// This node's number for the session (see [`Sealing::session`]).
    id: u64,
    session: Session,
    handshake: Handshake,
    /// A message of this epoch was acknowledged: the peer has the session.
    confirmed: bool,
}

struct Incoming {
    current: Session,
    /// Hash of the handshake that started `current`.
    started_by: [u8; 32],
    /// The epoch before a rotation (and its handshake's hash), for
    /// messages still in flight.
    previous: Option<(Session, [u8; 32])>,
}

fn handshake_hash(handshake: &Handshake) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(handshake.epoch.to_be_bytes());
    hash.update(&handshake.ciphertext);
    hash.update(&handshake.signature);
    hash.finalize().into()
}

/// Forgets one entry of a full table.
fn make_room<V>(table: &mut HashMap<PeerId, V>, keep: &PeerId) {
    if table.len() >= MAX_SESSIONS
        && let Some(victim) = table.keys().find(|p| *p != keep).copied()
    {
        table.remove(&victim);
    }
}

/// This node's end-to-end sessions with every peer.
pub struct E2e {
    identity: Identity,
    local: PeerId,
    level: Level,
    secrets: HashMap<Level, KemSecret>,
    signed: HashMap<Level, SignedKemKey>,
    /// Peers' verified KEM keys, with the signed form to pass on.
    keys: HashMap<(PeerId, Level), (KemPublicKey, SignedKemKey)>,
    outgoing: HashMap<PeerId, Outgoing>,
    incoming: HashMap<PeerId, Incoming>,
    next_session: u64,
    rekey: Rekey,
    /// Handshakes that did not verify (sender, level, hash), oldest first:
    /// the same one again is refused without the signature check and the
    /// decapsulation (a replayed bad handshake costs a lookup).
    refused: VecDeque<(PeerId, u8, [u8; 32])>,
    /// Handshakes verified (signature and decapsulation), for tests.
    verified: u64,
}

/// Bad handshakes remembered.
const REFUSED_HANDSHAKES: usize = 1024;

impl std::fmt::Debug for E2e {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2e")
            .field("level", &self.level)
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.len())
            .finish_non_exhaustive()
    }
}

impl E2e {
    /// Sessions of `identity`, which encapsulates to peers at `level`.
    pub fn new(identity: Identity, level: Level) -> Self {
        let local = identity.peer_id();
        Self {
            identity,
            local,
            level,
            secrets: HashMap::new(),
            signed: HashMap::new(),
            keys: HashMap::new(),
            outgoing: HashMap::new(),
            incoming: HashMap::new(),
            next_session: 0,
            rekey: Rekey::default(),
            refused: VecDeque::new(),
            verified: 0,
        }
    }

    /// Accepts `sender`'s handshake (its signature checked, its secret
    /// decapsulated), unless that very handshake failed before.
    fn accept(&mut self, sender: &PeerId, handshake: &Handshake) -> Result<Session, OpenError> {
        let key = (*sender, handshake.level, handshake_hash(handshake));
        if self.refused.contains(&key) {
            return Err(OpenError::RefusedBefore);
        }
        let level = Level::try_from(handshake.level).map_err(SessionError::from)?;
        self.secret(level);
        let ours = self.secrets.get(&level).expect("derived above");
        self.verified += 1;
        Session::accept(&self.identity, ours, sender, handshake).map_err(|e| {
            if self.refused.len() >= REFUSED_HANDSHAKES {
                self.refused.pop_front();
            }
            self.refused.push_back(key);
            OpenError::from(e)
        })
    }

    /// Rotates session keys by `policy` instead of the default.
    pub fn with_rekey(mut self, policy: Rekey) -> Self {
        self.rekey = policy;
        self
    }

    /// The level this node encapsulates at.
    pub fn level(&self) -> Level {
        self.level
    }

    fn secret(&mut self, level: Level) -> &KemSecret {
        let identity = &self.identity;
        self.secrets.entry(level).or_insert_with(|| KemSecret::derive(identity, level))
    }

    /// This node's own KEM key at `level`, signed by its identity.
    pub fn own_key(&mut self, level: Level) -> SignedKemKey {
        if let Some(signed) = self.signed.get(&level) {
            return signed.clone();
        }
        let key = self.secret(level).public_key_bytes().to_vec();
        let signed = SignedKemKey::sign(&self.identity, level, key);
        self.signed.insert(level, signed.clone());
        signed
    }

    /// The signed KEM key of `peer` (this node or one whose key was
    /// learnt) at `level`, to pass on to whoever asks.
    pub fn key_of(&mut self, peer: &PeerId, level: Level) -> Option<SignedKemKey> {
        if *peer == self.local {
            return Some(self.own_key(level));
        }
        self.keys.get(&(*peer, level)).map(|(_, signed)| signed.clone())
    }

    /// Whether this node can seal to `peer` now.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.peer_key(peer).is_some()
    }

    /// The key this node seals to `peer` with: at this node's level, else
    /// at a stronger one (never a weaker one).
    fn peer_key(&self, peer: &PeerId) -> Option<&KemPublicKey> {
        self.level.and_stronger().find_map(|level| self.keys.get(&(*peer, level))).map(|(key, _)| key)
    }

    /// Verifies `signed` as `peer`'s KEM key and remembers it.
    pub fn learn_key(&mut self, peer: PeerId, signed: SignedKemKey) -> Result<(), SessionError> {
        let key = signed.verify(&peer)?;
        if self.keys.len() >= MAX_SESSIONS * 2 {
            self.keys.clear();
        }
        self.keys.insert((peer, signed.level), (key, signed));
        Ok(())
    }

    /// Seals `env` for `peer` in place: `payload` and `content` move into
    /// the `e2e` field, encrypted. Starts or rotates the session as needed.
    pub fn seal(&mut self, peer: &PeerId, env: &mut Envelope) -> Result<Sealing, SealError> {
        let (sealed, sealing) = self.sealed(peer, env)?;
        *env = sealed;
        Ok(sealing)
    }

    /// [`E2e::seal`], leaving `env` as it is (kept to send again).
    pub fn sealed(&mut self, peer: &PeerId, env: &Envelope) -> Result<(Envelope, Sealing), SealError> {
        let mut new_epoch = None;
        let rotate = match self.outgoing.get(peer) {
            None => Some(0),
            Some(out) if out.session.needs_rekey_after(&self.rekey) => {
                Some(out.session.epoch().wrapping_add(1))
            }
            Some(_) => None,
        };
        if let Some(epoch) = rotate {
            let key = self.peer_key(peer).ok_or(SealError::NeedKey(*peer))?;
            let (session, handshake) = Session::initiate(&self.identity, peer, key, epoch)?;
            make_room(&mut self.outgoing, peer);
            let id = self.next_session;
            self.next_session += 1;
            self.outgoing.insert(*peer, Outgoing { id, session, handshake, confirmed: false });
            new_epoch = Some(epoch);
        }
        let out = self.outgoing.get_mut(peer).expect("inserted above");
        let handshake = (!out.confirmed).then(|| out.handshake.clone());
        let sealed = seal_body(&mut out.session, env, handshake)?;
        Ok((sealed, Sealing { epoch: out.session.epoch(), new_epoch, session: out.id }))
    }

    /// `peer` acknowledged a message of `session`: it holds the session,
    /// so later messages go without the handshake.
    pub fn confirm(&mut self, peer: &PeerId, session: u64) {
        if let Some(out) = self.outgoing.get_mut(peer)
            && out.id == session
        {
            out.confirmed = true;
        }
    }

    /// Drops `session` with `peer` (the peer lost its end) if it is still
    /// the current one: the next message starts a new session. (Messages
    /// of the old one refused later do not drop the new one.)
    pub fn reset(&mut self, peer: &PeerId, session: u64) {
        if self.outgoing.get(peer).is_some_and(|out| out.id == session) {
            self.outgoing.remove(peer);
        }
    }

    /// Seals `env` for `peer` with a one-off session whose handshake
    /// travels with it, for a message that a third node holds until the
    /// peer comes back.
    pub fn seal_once(&mut self, peer: &PeerId, env: &mut Envelope) -> Result<(), SealError> {
        *env = self.sealed_once(peer, env)?;
        Ok(())
    }

    /// [`E2e::seal_once`], leaving `env` as it is.
    pub fn sealed_once(&mut self, peer: &PeerId, env: &Envelope) -> Result<Envelope, SealError> {
        let key = self.peer_key(peer).ok_or(SealError::NeedKey(*peer))?;
        let (mut session, handshake) = Session::initiate(&self.identity, peer, key, 0)?;
        Ok(seal_body(&mut session, env, Some(handshake))?)
    }

    /// Opens a sealed envelope from the authenticated `sender` in place.
    /// An envelope without an `e2e` field is left alone (`Ok(None)`).
    pub fn open(&mut self, sender: &PeerId, env: &mut Envelope) -> Result<Option<Opened>, OpenError> {
        let Some(body) = env.e2e.take() else { return Ok(None) };
        let result = self.open_body(sender, env, &body);
        if result.is_err() {
            env.e2e = Some(body);
        }
        result.map(Some)
    }

    fn open_body(
        &mut self,
        sender: &PeerId,
        env: &mut Envelope,
        body: &SealedBody,
    ) -> Result<Opened, OpenError> {
        let mut new_epoch = None;
        if let Some(handshake) = &body.handshake {
            let hash = handshake_hash(handshake);
            let known = self.incoming.get(sender).is_some_and(|i| {
                i.started_by == hash || i.previous.as_ref().is_some_and(|(_, h)| *h == hash)
            });
            if !known {
                let mut session = self.accept(sender, handshake)?;
                // Open with the new session before installing it, so a
                // handshake with a forged body changes nothing.
                open_body(&mut session, env, &body.sealed)?;
                make_room(&mut self.incoming, sender);
                // A rotation keeps the epoch before it; an older epoch that
                // was never seen means the peer started over (it restarted).
                let previous = self.incoming.remove(sender).and_then(|old| {
                    (old.current.epoch() < session.epoch()).then_some((old.current, old.started_by))
                });
                let level = session.level();
                new_epoch = Some(session.epoch());
                self.incoming.insert(*sender, Incoming { current: session, started_by: hash, previous });
                return Ok(Opened { level, new_epoch });
            }
        }
        let incoming = self.incoming.get_mut(sender).ok_or(OpenError::NoSession(body.sealed.epoch))?;
        let session = if incoming.current.epoch() == body.sealed.epoch {
            &mut incoming.current
        } else {
            incoming
                .previous
                .as_mut()
                .map(|(session, _)| session)
                .filter(|p| p.epoch() == body.sealed.epoch)
                .ok_or(OpenError::NoSession(body.sealed.epoch))?
        };
        open_body(session, env, &body.sealed)?;
        Ok(Opened { level: session.level(), new_epoch })
    }

    /// Opens a held (mailbox) envelope written by `author`: it must carry
    /// its own handshake, signed by the author. Keeps no session.
    pub fn open_once(&mut self, author: &PeerId, env: &mut Envelope) -> Result<Level, OpenError> {
        let Some(body) = env.e2e.take() else { return Err(OpenError::NoHandshake) };
        let Some(handshake) = &body.handshake else {
            env.e2e = Some(body);
            return Err(OpenError::NoHandshake);
        };
        let result = self
            .accept(author, handshake)
            .and_then(|mut session| open_body(&mut session, env, &body.sealed).map(|()| session.level()));
        if result.is_err() {
            env.e2e = Some(body);
        }
        result
    }

    /// Peers with a session in either direction.
    pub fn session_count(&self) -> usize {
        self.outgoing.len() + self.incoming.keys().filter(|p| !self.outgoing.contains_key(p)).count()
    }

    /// The session with `peer`, if any: its level and key epoch (the one
    /// this node started, else the peer's).
    pub fn session_with(&self, peer: &PeerId) -> Option<(Level, u32)> {
        self.outgoing
            .get(peer)
            .map(|o| &o.session)
            .or_else(|| self.incoming.get(peer).map(|i| &i.current))
            .map(|s| (s.level(), s.epoch()))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::messaging::MsgType;

    fn pair(level: Level) -> (E2e, E2e) {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let (mut ea, mut eb) = (E2e::new(a, level), E2e::new(b, level));
        let (ka, kb) = (ea.own_key(level), eb.own_key(level));
        let (pa, pb) = (ea.local, eb.local);
        ea.learn_key(pb, kb).unwrap();
        eb.learn_key(pa, ka).unwrap();
        (ea, eb)
    }

    fn message(from: PeerId, to: PeerId, text: &str) -> Envelope {
        let mut env = Envelope::new(MsgType::Thought, to.to_base58(), 5, 60)
            .with_payload(text.as_bytes().to_vec())
            .with_content(text);
        env.from = from.to_base58();
        env.timestamp = 1_700_000_000_000;
        env
    }

    /// Seals, then sends over the "wire" (encode + decode).
    fn wire(e: &mut E2e, to: PeerId, mut env: Envelope) -> (Envelope, Sealing) {
        let sealing = e.seal(&to, &mut env).unwrap();
        (Envelope::decode(&env.encode()).unwrap(), sealing)
    }

    #[test]
    fn a_sealed_envelope_hides_its_body_and_opens_once() {
        for level in [Level::L1, Level::L3, Level::L5] {
            let (mut a, mut b) = pair(level);
            let (pa, pb) = (a.local, b.local);
            let plain = message(pa, pb, "meet at dawn");
            let (mut env, sealing) = wire(&mut a, pb, plain.clone());
            assert_eq!(sealing.new_epoch, Some(0));
            assert!(env.payload.is_empty() && env.content.is_none() && env.is_sealed());
            let bytes = env.encode();
            assert!(!bytes.windows(12).any(|w| w == b"meet at dawn"), "no plaintext on the wire");
            let replayed = env.clone();
            let opened = b.open(&pa, &mut env).unwrap().unwrap();
            assert_eq!(opened, Opened { level, new_epoch: Some(0) });
            assert_eq!(env, plain);
            // The same bytes again: refused, whatever the envelope ID check says.
            let mut again = replayed;
            assert!(matches!(b.open(&pa, &mut again), Err(OpenError::Session(SessionError::Replay(0)))));
            assert_eq!(b.session_with(&pa), Some((level, 0)));
        }
    }

    #[test]
    fn a_sender_seals_at_its_level_or_a_stronger_one_never_a_weaker_one() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let (pa, pb) = (a.peer_id(), b.peer_id());
        // Bob published only his level-3 key.
        let mut bob = E2e::new(b, Level::L3);
        let bob_l3 = bob.own_key(Level::L3);
        // A level-1 sender uses it: the session is level 3.
        let mut low = E2e::new(a.clone(), Level::L1);
        low.learn_key(pb, bob_l3.clone()).unwrap();
        assert!(low.knows(&pb));
        let (mut env, _) = wire(&mut low, pb, message(pa, pb, "up"));
        assert_eq!(bob.open(&pa, &mut env).unwrap().unwrap().level, Level::L3);
        // A level-5 sender does not seal down to it.
        let mut high = E2e::new(a, Level::L5);
        high.learn_key(pb, bob_l3).unwrap();
        assert!(!high.knows(&pb));
        let mut env = message(pa, pb, "down");
        assert!(matches!(high.seal(&pb, &mut env), Err(SealError::NeedKey(p)) if p == pb));
        assert!(matches!(high.seal_once(&pb, &mut env), Err(SealError::NeedKey(p)) if p == pb));
        assert_eq!(Level::L1.and_stronger().collect::<Vec<_>>(), [Level::L1, Level::L3, Level::L5]);
        assert_eq!(Level::L5.and_stronger().collect::<Vec<_>>(), [Level::L5]);
    }

    #[test]
    fn the_handshake_rides_until_confirmed_and_order_does_not_matter() {
        let (mut a, mut b) = pair(Level::L3);
        let (pa, pb) = (a.local, b.local);
        let (first, s1) = wire(&mut a, pb, message(pa, pb, "one"));
        let (second, s2) = wire(&mut a, pb, message(pa, pb, "two"));
        assert_eq!((s1.new_epoch, s2.new_epoch), (Some(0), None));
        assert!(first.e2e.as_ref().unwrap().handshake.is_some());
        assert!(second.e2e.as_ref().unwrap().handshake.is_some(), "not confirmed yet");
        // The second arrives first.
        for mut env in [second, first] {
            b.open(&pa, &mut env).unwrap();
        }
        a.confirm(&pb, s1.session);
        let (third, _) = wire(&mut a, pb, message(pa, pb, "three"));
        assert!(third.e2e.as_ref().unwrap().handshake.is_none());
        let mut third = third;
        b.open(&pa, &mut third).unwrap();
        assert_eq!(third.content.as_deref(), Some("three"));
        // Replies go the other way on the session b starts.
        let (mut reply, sealing) = wire(&mut b, pa, message(pb, pa, "ok"));
        assert_eq!(sealing.new_epoch, Some(0));
        a.open(&pb, &mut reply).unwrap();
        assert_eq!(a.session_count(), 1);
    }

    #[test]
    fn tampering_with_header_or_body_is_refused_and_leaves_the_session_intact() {
        let (mut a, mut b) = pair(Level::L3);
        let (pa, pb) = (a.local, b.local);
        let (env, _) = wire(&mut a, pb, message(pa, pb, "pay 10"));
        let mut header = env.clone();
        header.priority = 9;
        let mut to_other = env.clone();
        to_other.id = "0123".into();
        let mut body = env.clone();
        body.e2e.as_mut().unwrap().sealed.ciphertext[3] ^= 1;
        for mut bad in [header, to_other, body] {
            assert!(matches!(b.open(&pa, &mut bad), Err(OpenError::Session(SessionError::Decrypt))));
            assert!(bad.is_sealed(), "a refused envelope stays sealed");
        }
        assert_eq!(b.session_with(&pa), None, "nothing was installed by a forged body");
        let mut good = env;
        b.open(&pa, &mut good).unwrap();
        // From someone else, with a's handshake: the signature is not theirs.
        let mallory = Identity::from_seed([3; 32]).peer_id();
        let (mut stolen, _) = wire(&mut a, pb, message(pa, pb, "x"));
        assert!(matches!(
            b.open(&mallory, &mut stolen),
            Err(OpenError::Session(SessionError::BadHandshakeSignature(_)))
        ));
        // Sealed for b, opened by a third node that has a key of its own.
        let mut carol = E2e::new(Identity::from_seed([4; 32]), Level::L3);
        let (mut for_b, _) = wire(&mut a, pb, message(pa, pb, "y"));
        assert!(carol.open(&pa, &mut for_b).is_err());
    }

    #[test]
    fn a_lost_session_is_reported_and_a_reset_recovers() {
        let (mut a, mut b) = pair(Level::L3);
        let (pa, pb) = (a.local, b.local);
        let (mut env, sealing) = wire(&mut a, pb, message(pa, pb, "1"));
        b.open(&pa, &mut env).unwrap();
        a.confirm(&pb, sealing.session);
        // b restarts: it knows a's key again but has no session.
        let ka = a.own_key(Level::L3);
        b = E2e::new(Identity::from_seed([2; 32]), Level::L3);
        b.learn_key(pa, ka).unwrap();
        let (mut lost, lost_sealing) = wire(&mut a, pb, message(pa, pb, "2"));
        let (mut also_lost, _) = wire(&mut a, pb, message(pa, pb, "3"));
        assert_eq!(b.open(&pa, &mut lost), Err(OpenError::NoSession(0)));
        assert_eq!(b.open(&pa, &mut also_lost), Err(OpenError::NoSession(0)));
        a.reset(&pb, lost_sealing.session);
        let (mut again, sealing) = wire(&mut a, pb, message(pa, pb, "2"));
        assert_eq!(sealing.new_epoch, Some(0));
        assert_ne!(sealing.session, lost_sealing.session);
        // The second refusal of the old session leaves the new one alone.
        a.reset(&pb, lost_sealing.session);
        assert_eq!(a.session_with(&pb).map(|(_, epoch)| epoch), Some(0));
        let (_, same) = wire(&mut a, pb, message(pa, pb, "4"));
        assert_eq!(same.session, sealing.session);
        b.open(&pa, &mut again).unwrap();
        assert_eq!(again.content.as_deref(), Some("2"));
    }

    #[test]
    fn rotation_starts_a_new_epoch_and_late_messages_of_the_old_one_still_open() {
        let (mut a, mut b) = pair(Level::L3);
        let (pa, pb) = (a.local, b.local);
        let (mut first, _) = wire(&mut a, pb, message(pa, pb, "old"));
        b.open(&pa, &mut first).unwrap();
        let (late, _) = wire(&mut a, pb, message(pa, pb, "late"));
        a.outgoing.get_mut(&pb).unwrap().session.force_rekey();
        let (mut rotated, sealing) = wire(&mut a, pb, message(pa, pb, "new"));
        assert_eq!(sealing.new_epoch, Some(1));
        assert_eq!(b.open(&pa, &mut rotated).unwrap().unwrap().new_epoch, Some(1));
        let mut late = late;
        b.open(&pa, &mut late).unwrap();
        assert_eq!(late.content.as_deref(), Some("late"));
        assert_eq!(b.session_with(&pa), Some((Level::L3, 1)));
    }

    #[test]
    fn held_messages_carry_their_own_proof_of_author() {
        let (mut a, mut b) = pair(Level::L3);
        let (pa, pb) = (a.local, b.local);
        let plain = message(pa, pb, "while you were out");
        let mut env = plain.clone();
        a.seal_once(&pb, &mut env).unwrap();
        let held = Envelope::decode(&env.encode()).unwrap();
        let mut opened = held.clone();
        assert_eq!(b.open_once(&pa, &mut opened).unwrap(), Level::L3);
        assert_eq!(opened, plain);
        // Claimed to come from someone else: the handshake is not theirs.
        let mut forged = held.clone();
        let mallory = Identity::from_seed([3; 32]).peer_id();
        assert!(b.open_once(&mallory, &mut forged).is_err());
        // Replayed a thousand times, it is checked once.
        let verified = b.verified;
        for _ in 0..1000 {
            let mut again = held.clone();
            assert_eq!(b.open_once(&mallory, &mut again), Err(OpenError::RefusedBefore));
        }
        assert_eq!(b.verified, verified, "no signature check or decapsulation for a known bad handshake");
        // Without a handshake there is no proof.
        let (session_msg, _) = wire(&mut a, pb, message(pa, pb, "s"));
        let mut stripped = session_msg;
        stripped.e2e.as_mut().unwrap().handshake = None;
        assert_eq!(b.open_once(&pa, &mut stripped), Err(OpenError::NoHandshake));
        // Not sealed at all.
        assert_eq!(b.open_once(&pa, &mut message(pa, pb, "plain")), Err(OpenError::NoHandshake));
        // Without the peer's key nothing can be sealed.
        let mut stranger = E2e::new(Identity::from_seed([5; 32]), Level::L3);
        assert_eq!(stranger.seal(&pb, &mut message(pa, pb, "x")), Err(SealError::NeedKey(pb)));
    }

    #[test]
    fn sealing_adds_at_most_the_documented_overhead_and_encodes_in_one_buffer() {
        for level in [Level::L1, Level::L3, Level::L5] {
            let (mut a, b) = pair(level);
            let (pa, pb) = (a.local, b.local);
            for size in [0, 1000, 70_000] {
                let mut plain = message(pa, pb, "").with_payload(vec![7; size]);
                plain.msg_type = MsgType::Custom("x".repeat(64));
                let (first, sealing) = wire(&mut a, pb, plain.clone());
                a.confirm(&pb, sealing.session);
                let (later, _) = wire(&mut a, pb, plain.clone());
                for sealed in [first, later] {
                    assert!(sealed.encoded_len() <= plain.encoded_len() + MAX_SEAL_OVERHEAD);
                    assert_eq!(sealed.encoded_len(), sealed.encode().len());
                    assert!(sealed.encoded_len() <= sealed.encoded_len_bound(), "encoded without growing");
                }
            }
        }
    }

    #[test]
    fn keys_are_verified_before_they_are_learnt() {
        let (mut a, mut b) = pair(Level::L3);
        let pb = b.local;
        let mut forged = b.own_key(Level::L3);
        forged.key[0] ^= 1;
        let mut fresh = E2e::new(Identity::from_seed([6; 32]), Level::L3);
        assert!(fresh.learn_key(pb, forged).is_err());
        assert!(!fresh.knows(&pb));
        // b's genuine key, claimed for a: refused.
        assert!(fresh.learn_key(a.local, b.own_key(Level::L3)).is_err());
        assert!(fresh.learn_key(pb, b.own_key(Level::L3)).is_ok());
        assert_eq!(fresh.key_of(&pb, Level::L3), Some(b.own_key(Level::L3)));
        let pa = a.local;
        assert_eq!(a.key_of(&pa, Level::L3), Some(a.own_key(Level::L3)));
    }
}
