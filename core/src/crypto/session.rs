//! End-to-end sessions between two identities over the hybrid KEM.
//!
//! - **KEM keys are signed by the identity**: a [`SignedKemKey`] binds a
//!   level and a public key to a node ID with an Ed25519 signature, and is
//!   verified against the node ID before use.
//! - **Handshake**: the initiator encapsulates to the responder's KEM key
//!   and signs the transcript hash (SHA-256 over `"infermesh/e2e/v2"`,
//!   level, epoch, both node IDs, the responder's KEM key, the ciphertext),
//!   prefixed with `"infermesh/e2e/v2 handshake"`, with its identity key. The responder checks
//!   the signature, then decapsulates. (Signing the 32-byte hash rather
//!   than the 2–3 KB transcript spares Ed25519 two SHA-512 passes over it
//!   on the signing side and one on the verifying side.)
//! - **Keys**: HKDF-SHA256 over the KEM secret, salted with the transcript
//!   hash, gives one key per direction.
//! - **Messages**: ChaCha20-Poly1305; the nonce is the sender's counter, the
//!   epoch and counter are authenticated with the caller's associated
//!   data; a sliding window of [`REPLAY_WINDOW`] counters refuses repeats
//!   and anything older.
//! - **Rotation**: after [`REKEY_AFTER_MESSAGES`] messages or
//!   [`REKEY_AFTER`] the initiator runs a fresh handshake (a fresh
//!   encapsulation: the old keys cannot be recomputed from the new ones).

use std::time::Duration;

use hkdf::Hkdf;
use libp2p::{PeerId, identity::PublicKey};
use sha2::{Digest as _, Sha256};

use super::kem::{KemError, KemPublicKey, KemSecret, Level};
use crate::{
    Identity,
    messaging::{Handshake, Sealed},
    platform::aead::ChaChaPoly,
};

/// Counters remembered behind the newest one received.
pub const REPLAY_WINDOW: u64 = 1024;
/// Messages sent under one key before rotating.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 20;
/// Age of a key after which it is rotated.
pub const REKEY_AFTER: Duration = Duration::from_secs(3600);

/// When a session's keys are rotated: after this many messages or this
/// age, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rekey {
    /// Messages sent under one key.
    pub messages: u64,
    /// Age of a key.
    pub age: Duration,
}

impl Default for Rekey {
    fn default() -> Self {
        Self { messages: REKEY_AFTER_MESSAGES, age: REKEY_AFTER }
    }
}

const PROTOCOL: &[u8] = b"infermesh/e2e/v2";
/// What the initiator signs: this label, then the transcript hash.
const SIGNED: &[u8] = b"infermesh/e2e/v2 handshake";

/// Why a session operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The KEM refused (sizes, level, randomness).
    #[error(transparent)]
    Kem(#[from] KemError),
    /// A KEM key whose signature does not verify for the node it claims.
    #[error("the KEM key of {0} is not signed by that node")]
    BadKeySignature(PeerId),
    /// A handshake whose signature does not verify for its sender.
    #[error("the handshake from {0} is not signed by that node")]
    BadHandshakeSignature(PeerId),
    /// A node ID without an inline Ed25519 key.
    #[error("{0} does not carry its public key")]
    NoPublicKey(PeerId),
    /// A handshake at a level this end did not offer.
    #[error("the handshake is for another KEM key")]
    NotForUs,
    /// Decryption failed: tampered, wrong key, or wrong epoch.
    #[error("message does not decrypt (tampered, or not for this session)")]
    Decrypt,
    /// A counter seen before, or older than the window.
    #[error("replayed or too old message (counter {0})")]
    Replay(u64),
    /// A message of an epoch this session does not have.
    #[error("message for key epoch {got}, session is at {have}")]
    Epoch {
        /// The message's epoch.
        got: u32,
        /// The session's.
        have: u32,
    },
    /// The sending counter ran out (rotate first).
    #[error("this session's key is used up; rotate it")]
    Exhausted,
}

fn public_key_of(peer: &PeerId) -> Result<PublicKey, SessionError> {
    // Ed25519 node IDs are the key itself (identity multihash).
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return Err(SessionError::NoPublicKey(*peer));
    }
    PublicKey::try_decode_protobuf(multihash.digest()).map_err(|_| SessionError::NoPublicKey(*peer))
}

/// A KEM public key signed by the identity that holds its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedKemKey {
    /// The security level.
    pub level: Level,
    /// The encoded KEM public key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Ed25519 signature by the owner over the level and key.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

fn key_statement(level: Level, key: &[u8]) -> Vec<u8> {
    let mut out = b"infermesh/kem-key/v1".to_vec();
    out.push(level.number());
    out.extend_from_slice(key);
    out
}

impl SignedKemKey {
    /// `identity`'s own KEM key at `level`, signed.
    pub fn new(identity: &Identity, level: Level) -> Self {
        Self::sign(identity, level, KemSecret::derive(identity, level).public_key().to_bytes())
    }

    /// Signs `key`, an encoded KEM public key at `level`, as `identity`'s.
    pub fn sign(identity: &Identity, level: Level, key: Vec<u8>) -> Self {
        let signature =
            identity.keypair().sign(&key_statement(level, &key)).expect("Ed25519 signing cannot fail");
        Self { level, key, signature }
    }

    /// The key, once its signature verifies for `owner`.
    pub fn verify(&self, owner: &PeerId) -> Result<KemPublicKey, SessionError> {
        let public = public_key_of(owner)?;
        if !public.verify(&key_statement(self.level, &self.key), &self.signature) {
            return Err(SessionError::BadKeySignature(*owner));
        }
        Ok(KemPublicKey::from_bytes(self.level, &self.key)?)
    }
}

/// Bytes a sealed message adds to its plaintext (tag; epoch and counter are
/// framing).
pub const TAG_BYTES: usize = 16;

/// The transcript hash: SHA-256 over the protocol label, level, epoch,
/// both node IDs (length-prefixed), the responder's KEM key and the
/// ciphertext (both of fixed length at a level).
fn transcript_hash(
    level: Level,
    epoch: u32,
    initiator: &PeerId,
    responder: &PeerId,
    responder_key: &[u8],
    ciphertext: &[u8],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(PROTOCOL);
    hash.update([level.number()]);
    hash.update(epoch.to_be_bytes());
    for id in [initiator.to_bytes(), responder.to_bytes()] {
        hash.update((id.len() as u16).to_be_bytes());
        hash.update(&id);
    }
    hash.update(responder_key);
    hash.update(ciphertext);
    hash.finalize().into()
}

/// The message the initiator's identity key signs.
fn signed_statement(transcript_hash: &[u8; 32]) -> Vec<u8> {
    [SIGNED, transcript_hash].concat()
}

/// The two directional keys from the KEM secret and the transcript hash.
fn directional_keys(secret: &[u8; 32], transcript_hash: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let hkdf = Hkdf::<Sha256>::new(Some(transcript_hash), secret);
    let mut okm = [0u8; 64];
    hkdf.expand(b"infermesh/e2e/v2 initiator->responder, responder->initiator", &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 output length");
    let (a, b) = okm.split_at(32);
    (a.try_into().expect("32"), b.try_into().expect("32"))
}

/// Which side of the handshake this session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Encapsulated to the peer (and rotates the keys).
    Initiator,
    /// Decapsulated the peer's handshake.
    Responder,
}

/// One end of an end-to-end session with a peer.
pub struct Session {
    role: Role,
    level: Level,
    epoch: u32,
    send: ChaChaPoly,
    receive: ChaChaPoly,
    sent: u64,
    /// Highest counter received, and which of the `REPLAY_WINDOW` below it
    /// were seen (bit i = highest - i).
    highest: Option<u64>,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
    started: web_time::Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("level", &self.level)
            .field("epoch", &self.epoch)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts (or, with the next epoch, rotates) a session to `peer`
    /// whose verified KEM key is `peer_key`: returns the session and the
    /// handshake to send.
    pub fn initiate(
        identity: &Identity,
        peer: &PeerId,
        peer_key: &KemPublicKey,
        epoch: u32,
    ) -> Result<(Session, Handshake), SessionError> {
        let (ciphertext, secret) = peer_key.encapsulate()?;
        let level = peer_key.level();
        let hash = transcript_hash(level, epoch, &identity.peer_id(), peer, peer_key.as_bytes(), &ciphertext);
        let signature =
            identity.keypair().sign(&signed_statement(&hash)).expect("Ed25519 signing cannot fail");
        let (to_peer, from_peer) = directional_keys(&secret, &hash);
        let session = Session::new(Role::Initiator, level, epoch, to_peer, from_peer);
        Ok((session, Handshake { level: level.number(), epoch, ciphertext, signature }))
    }

    /// Accepts a handshake from `peer` to this identity, whose KEM secret
    /// at the handshake's level is `ours` (derived once with
    /// [`KemSecret::derive`] and kept): checks the signature, decapsulates,
    /// derives the keys.
    pub fn accept(
        identity: &Identity,
        ours: &KemSecret,
        peer: &PeerId,
        handshake: &Handshake,
    ) -> Result<Session, SessionError> {
        let level = ours.level();
        if level.number() != handshake.level {
            return Err(SessionError::NotForUs);
        }
        let hash = transcript_hash(
            level,
            handshake.epoch,
            peer,
            &identity.peer_id(),
            ours.public_key_bytes(),
            &handshake.ciphertext,
        );
        if !public_key_of(peer)?.verify(&signed_statement(&hash), &handshake.signature) {
            return Err(SessionError::BadHandshakeSignature(*peer));
        }
        let secret = ours.decapsulate(&handshake.ciphertext)?;
        let (from_peer, to_peer) = directional_keys(&secret, &hash);
        Ok(Session::new(Role::Responder, level, handshake.epoch, to_peer, from_peer))
    }

    fn new(role: Role, level: Level, epoch: u32, send: [u8; 32], receive: [u8; 32]) -> Self {
        Self {
            role,
            level,
            epoch,
            send: ChaChaPoly::new(&send),
            receive: ChaChaPoly::new(&receive),
            sent: 0,
            highest: None,
            seen: [0; (REPLAY_WINDOW / 64) as usize],
            started: web_time::Instant::now(),
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The KEM level the session was agreed at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The key generation.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether the initiator should rotate now (message count or age).
    pub fn needs_rekey(&self) -> bool {
        self.needs_rekey_after(&Rekey::default())
    }

    /// Whether the initiator should rotate now under `policy`.
    pub fn needs_rekey_after(&self, policy: &Rekey) -> bool {
        self.sent >= policy.messages || self.started.elapsed() >= policy.age
    }

    /// Marks the key as used up, so the next message rotates (tests).
    #[cfg(test)]
    pub(crate) fn force_rekey(&mut self) {
        self.sent = self.sent.max(REKEY_AFTER_MESSAGES);
    }

    fn nonce(counter: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        nonce
    }

    fn aad(epoch: u32, counter: u64, aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + aad.len());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(aad);
        out
    }

    /// Encrypts `plaintext`, authenticating `aad` with it.
    pub fn seal(&mut self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SessionError> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_BYTES);
        buf.extend_from_slice(plaintext);
        self.seal_owned(buf, aad)
    }

    /// Like [`Session::seal`], encrypting `plaintext` where it is (give it
    /// room for the 16-byte tag to spare a reallocation).
    pub fn seal_owned(&mut self, mut plaintext: Vec<u8>, aad: &[u8]) -> Result<Sealed, SessionError> {
        if self.sent == u64::MAX {
            return Err(SessionError::Exhausted);
        }
        let counter = self.sent;
        self.sent += 1;
        let aad = Self::aad(self.epoch, counter, aad);
        if !self.send.seal_in_place(Self::nonce(counter), &aad, &mut plaintext) {
            return Err(SessionError::Exhausted);
        }
        Ok(Sealed { epoch: self.epoch, counter, ciphertext: plaintext })
    }

    /// Decrypts a message of this session, refusing tampering and replays.
    pub fn open(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SessionError> {
        if sealed.epoch != self.epoch {
            return Err(SessionError::Epoch { got: sealed.epoch, have: self.epoch });
        }
        if self.was_seen(sealed.counter) {
            return Err(SessionError::Replay(sealed.counter));
        }
        let full_aad = Self::aad(sealed.epoch, sealed.counter, aad);
        let plaintext = self
            .receive
            .open(Self::nonce(sealed.counter), &full_aad, &sealed.ciphertext)
            .ok_or(SessionError::Decrypt)?;
        // Only an authentic message moves the window.
        self.mark_seen(sealed.counter);
        Ok(plaintext)
    }

    fn was_seen(&self, counter: u64) -> bool {
        let Some(highest) = self.highest else { return false };
        if counter > highest {
            return false;
        }
        let behind = highest - counter;
        behind >= REPLAY_WINDOW || self.seen[(behind / 64) as usize] & (1 << (behind % 64)) != 0
    }

    fn mark_seen(&mut self, counter: u64) {
        match self.highest {
            Some(highest) if counter <= highest => {
                let behind = highest - counter;
                self.seen[(behind / 64) as usize] |= 1 << (behind % 64);
            }
            previous => {
                let shift = previous.map_or(REPLAY_WINDOW, |h| counter - h);
                self.shift_window(shift);
                self.seen[0] |= 1;
                self.highest = Some(counter);
            }
        }
    }

    /// Moves the window up by `by` counters.
    fn shift_window(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let from = i.checked_sub(words);
            let mut value = from.map_or(0, |j| self.seen[j] << bits);
            if bits > 0
                && let Some(j) = from.and_then(|j| j.checked_sub(1))
            {
                value |= self.seen[j] >> (64 - bits);
            }
            self.seen[i] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn pair(level: Level) -> (Identity, Identity, Session, Session) {
        let (alice, bob) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bob_key = SignedKemKey::new(&bob, level).verify(&bob.peer_id()).unwrap();
        let (a, handshake) = Session::initiate(&alice, &bob.peer_id(), &bob_key, 0).unwrap();
        let b = Session::accept(
            &bob,
            &KemSecret::derive(&bob, Level::try_from(handshake.level).unwrap()),
            &alice.peer_id(),
            &handshake,
        )
        .unwrap();
        (alice, bob, a, b)
    }

    #[test]
    fn messages_flow_both_ways_at_every_level() {
        for level in [Level::L1, Level::L3, Level::L5] {
            let (_, _, mut a, mut b) = pair(level);
            for i in 0..5u8 {
                let sealed = a.seal(&[i; 40], b"direct").unwrap();
                assert_eq!(sealed.ciphertext.len(), 40 + TAG_BYTES);
                assert!(!sealed.ciphertext.windows(40).any(|w| w == [i; 40]), "no plaintext on the wire");
                assert_eq!(b.open(&sealed, b"direct").unwrap(), vec![i; 40]);
                let reply = b.seal(b"ack", b"").unwrap();
                assert_eq!(a.open(&reply, b"").unwrap(), b"ack");
            }
            assert_eq!((a.role(), b.role()), (Role::Initiator, Role::Responder));
            assert_eq!(a.level(), level);
        }
    }

    #[test]
    fn tampering_replays_and_wrong_parties_are_refused() {
        let (alice, bob, mut a, mut b) = pair(Level::L3);
        let sealed = a.seal(b"hello", b"aad").unwrap();
        // Tampered ciphertext, tag, counter, epoch or associated data.
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(b.open(&bad, b"aad"), Err(SessionError::Decrypt));
        let mut bad = sealed.clone();
        *bad.ciphertext.last_mut().unwrap() ^= 1;
        assert_eq!(b.open(&bad, b"aad"), Err(SessionError::Decrypt));
        let mut bad = sealed.clone();
        bad.counter += 1;
        assert_eq!(b.open(&bad, b"aad"), Err(SessionError::Decrypt));
        let mut bad = sealed.clone();
        bad.epoch = 1;
        assert!(matches!(b.open(&bad, b"aad"), Err(SessionError::Epoch { .. })));
        assert_eq!(b.open(&sealed, b"other"), Err(SessionError::Decrypt));
        // The genuine one opens once; a replay does not.
        assert_eq!(b.open(&sealed, b"aad").unwrap(), b"hello");
        assert_eq!(b.open(&sealed, b"aad"), Err(SessionError::Replay(0)));
        // A message in the wrong direction does not open.
        let own = a.seal(b"loop", b"").unwrap();
        assert_eq!(a.open(&own, b""), Err(SessionError::Decrypt));

        // A handshake is only for its recipient, and only from its signer.
        let carol = Identity::from_seed([3; 32]);
        let bob_key = SignedKemKey::new(&bob, Level::L3).verify(&bob.peer_id()).unwrap();
        let (_, handshake) = Session::initiate(&alice, &bob.peer_id(), &bob_key, 0).unwrap();
        assert!(matches!(
            Session::accept(&carol, &KemSecret::derive(&carol, Level::L3), &alice.peer_id(), &handshake),
            Err(SessionError::BadHandshakeSignature(_))
        ));
        assert!(matches!(
            Session::accept(&bob, &KemSecret::derive(&bob, Level::L3), &carol.peer_id(), &handshake),
            Err(SessionError::BadHandshakeSignature(_))
        ));
        let mut forged = handshake.clone();
        forged.ciphertext[0] ^= 1;
        assert!(matches!(
            Session::accept(&bob, &KemSecret::derive(&bob, Level::L3), &alice.peer_id(), &forged),
            Err(SessionError::BadHandshakeSignature(_))
        ));
        assert_eq!(
            Session::accept(&bob, &KemSecret::derive(&bob, Level::L5), &alice.peer_id(), &handshake)
                .unwrap_err(),
            SessionError::NotForUs
        );
        // A KEM key signed by someone else, or altered, is refused.
        let mut key = SignedKemKey::new(&bob, Level::L3);
        assert!(matches!(key.verify(&carol.peer_id()), Err(SessionError::BadKeySignature(_))));
        key.key[5] ^= 1;
        assert!(matches!(key.verify(&bob.peer_id()), Err(SessionError::BadKeySignature(_))));
        let mut key = SignedKemKey::new(&bob, Level::L3);
        key.level = Level::L1;
        assert!(matches!(key.verify(&bob.peer_id()), Err(SessionError::BadKeySignature(_))));
    }

    #[test]
    fn the_replay_window_takes_reordering_and_refuses_the_old() {
        let (_, _, mut a, mut b) = pair(Level::L1);
        let sealed: Vec<Sealed> =
            (0..3000).map(|i| a.seal(&(i as u32).to_be_bytes(), b"").unwrap()).collect();
        // Out of order within the window: accepted once each.
        for i in [5usize, 3, 4, 0, 2, 1, 1000, 999, 20] {
            assert!(b.open(&sealed[i], b"").is_ok(), "message {i}");
        }
        for i in [5usize, 0, 1000, 20] {
            assert_eq!(b.open(&sealed[i], b""), Err(SessionError::Replay(i as u64)));
        }
        // Far ahead: everything more than the window behind is refused.
        assert!(b.open(&sealed[2500], b"").is_ok());
        assert_eq!(b.open(&sealed[1001], b""), Err(SessionError::Replay(1001)));
        assert!(b.open(&sealed[2500 - REPLAY_WINDOW as usize + 1], b"").is_ok());
        assert!(b.open(&sealed[2499], b"").is_ok());
        assert_eq!(b.open(&sealed[2499], b""), Err(SessionError::Replay(2499)));
        // Window shifts by less than a word and across words keep old bits.
        assert!(b.open(&sealed[2510], b"").is_ok());
        assert_eq!(b.open(&sealed[2500], b""), Err(SessionError::Replay(2500)));
        assert!(b.open(&sealed[2600], b"").is_ok());
        assert_eq!(b.open(&sealed[2510], b""), Err(SessionError::Replay(2510)));
        assert!(b.open(&sealed[2509], b"").is_ok());
    }

    #[test]
    fn rotation_is_a_fresh_encapsulation() {
        let (alice, bob, mut a, mut b) = pair(Level::L3);
        let old = a.seal(b"before", b"").unwrap();
        assert!(!a.needs_rekey());
        a.sent = REKEY_AFTER_MESSAGES;
        assert!(a.needs_rekey(), "by count");
        let bob_key = SignedKemKey::new(&bob, Level::L3).verify(&bob.peer_id()).unwrap();
        let (mut a2, handshake) = Session::initiate(&alice, &bob.peer_id(), &bob_key, 1).unwrap();
        let mut b2 = Session::accept(
            &bob,
            &KemSecret::derive(&bob, Level::try_from(handshake.level).unwrap()),
            &alice.peer_id(),
            &handshake,
        )
        .unwrap();
        assert_eq!((a2.epoch(), b2.epoch()), (1, 1));
        let new = a2.seal(b"after", b"").unwrap();
        assert_eq!(b2.open(&new, b"").unwrap(), b"after");
        // Old and new keys are unrelated.
        assert!(matches!(b2.open(&old, b""), Err(SessionError::Epoch { got: 0, have: 1 })));
        let mut relabelled = new.clone();
        relabelled.epoch = 0;
        assert_eq!(b.open(&relabelled, b""), Err(SessionError::Decrypt));
        assert_eq!(b.open(&old, b"").unwrap(), b"before");
    }
}
