//! Validation of inbound envelopes, before they are delivered or forwarded.
//!
//! The checks run in a fixed order, cheapest first: byte size (before any
//! decoding), decoding, schema, sender, time (expiry and clock skew), and
//! finally duplicate IDs. Pure and I/O-free: the caller passes the time.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use sha2::{Digest, Sha256};

use super::envelope::{Envelope, MAX_PRIORITY};

/// Why an inbound envelope was dropped. The label (`as_str`) is what
/// metrics count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Larger than the configured byte limit (checked before decoding).
    Oversize,
    /// Not a decodable envelope.
    Malformed,
    /// Decoded, but a field is out of range (empty ID, priority > 10 …).
    Schema,
    /// `from` names a node ID other than the authenticated sender.
    SenderMismatch,
    /// `to` is not where the envelope arrived (this node, or the topic).
    Misaddressed,
    /// `timestamp + ttl` is in the past.
    Expired,
    /// `timestamp` is further in the future than the allowed clock skew.
    FutureTimestamp,
    /// An envelope with this ID from this sender was already accepted.
    Duplicate,
    /// The local delivery queue was full (backpressure, not the peer's fault).
    QueueFull,
    /// An end-to-end encrypted body that does not decrypt or authenticate
    /// (tampered, forged handshake, not for this node).
    Decrypt,
    /// An end-to-end encrypted body whose counter was already seen.
    Replay,
    /// Sealed under a session this node does not have (it restarted); the
    /// sender starts a new one and sends again.
    NoSession,
    /// Not end-to-end encrypted, or at a KEM level below the minimum this
    /// node accepts (`min_kem_level`).
    TooWeak,
}

impl RejectReason {
    /// Every reason, for metrics that list all of them.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Oversize,
        RejectReason::Malformed,
        RejectReason::Schema,
        RejectReason::SenderMismatch,
        RejectReason::Misaddressed,
        RejectReason::Expired,
        RejectReason::FutureTimestamp,
        RejectReason::Duplicate,
        RejectReason::QueueFull,
        RejectReason::Decrypt,
        RejectReason::Replay,
        RejectReason::NoSession,
        RejectReason::TooWeak,
    ];

    /// A stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::Malformed => "malformed",
            RejectReason::Schema => "schema",
            RejectReason::SenderMismatch => "sender_mismatch",
            RejectReason::Misaddressed => "misaddressed",
            RejectReason::Expired => "expired",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::Duplicate => "duplicate",
            RejectReason::QueueFull => "queue_full",
            RejectReason::Decrypt => "decrypt_failed",
            RejectReason::Replay => "replay",
            RejectReason::NoSession => "e2e_no_session",
            RejectReason::TooWeak => "e2e_too_weak",
        }
    }

    /// Parses a label written by [`RejectReason::as_str`].
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == label)
    }

    /// Whether the sender is at fault (and may be penalised), as opposed to a
    /// benign repeat or local overload.
    pub fn is_peer_fault(self) -> bool {
        !matches!(
            self,
            RejectReason::Duplicate
                | RejectReason::QueueFull
                | RejectReason::Expired
                | RejectReason::NoSession
        )
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected envelope: the reason and a detail for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The counted reason.
    pub reason: RejectReason,
    /// What exactly was wrong, for humans.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`, with a detail for people.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// Limits applied to inbound envelopes.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest encoded envelope accepted, in bytes.
    pub max_envelope_bytes: usize,
    /// Longest allowed TTL, in seconds.
    pub max_ttl_secs: u32,
    /// How far in the future a timestamp may be, in milliseconds.
    pub max_clock_skew_ms: u64,
    /// Longest message ID.
    pub max_id_len: usize,
    /// Longest `to` (topic name) and `from` (agent name).
    pub max_to_len: usize,
    /// How many (sender, ID) pairs are remembered for duplicate detection.
    pub seen_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 1024 * 1024,
            max_ttl_secs: 7 * 24 * 3600,
            max_clock_skew_ms: 30_000,
            max_id_len: 64,
            max_to_len: 256,
            seen_capacity: 100_000,
        }
    }
}

impl Limits {
    /// Checks the fields of an envelope (shared by the inbound validator and
    /// the local send path, so that we never send what a peer would reject).
    pub fn check_schema(&self, env: &Envelope) -> Result<(), Rejection> {
        let bad = |detail: String| Err(Rejection::new(RejectReason::Schema, detail));
        if env.id.is_empty() || env.id.len() > self.max_id_len {
            return bad(format!("id must be 1-{} bytes, got {}", self.max_id_len, env.id.len()));
        }
        if env.priority > MAX_PRIORITY {
            return bad(format!("priority must be 0-{MAX_PRIORITY}, got {}", env.priority));
        }
        if env.ttl == 0 || env.ttl > self.max_ttl_secs {
            return bad(format!("ttl must be 1-{} seconds, got {}", self.max_ttl_secs, env.ttl));
        }
        if env.to.is_empty() || env.to.len() > self.max_to_len {
            return bad(format!("to must be 1-{} bytes, got {}", self.max_to_len, env.to.len()));
        }
        if env.from.is_empty() || env.from.len() > self.max_to_len {
            return bad(format!("from must be 1-{} bytes, got {}", self.max_to_len, env.from.len()));
        }
        Ok(())
    }

    /// Checks expiry and clock skew at `now_ms`.
    pub fn check_time(&self, env: &Envelope, now_ms: u64) -> Result<(), Rejection> {
        if env.expires_at_ms() <= now_ms {
            return Err(Rejection::new(
                RejectReason::Expired,
                format!("expired {} ms ago", now_ms - env.expires_at_ms()),
            ));
        }
        if env.timestamp > now_ms.saturating_add(self.max_clock_skew_ms) {
            return Err(Rejection::new(
                RejectReason::FutureTimestamp,
                format!("timestamp {} ms ahead of local clock", env.timestamp - now_ms),
            ));
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Remembers recently accepted (sender, message ID) pairs until they expire.
///
/// A pair is kept as the first 16 bytes of its SHA-256 (48 bytes per pair
/// with its expiry, in the map and in the queue), not as the node ID and
/// text ID themselves (over 200): at 1,000 messages a second the cache
/// holds 100,000 pairs. Finding two pairs with the same key takes about
/// 2^64 hashes, far beyond a peer that wants one of its messages taken for
/// a duplicate of another's.
#[derive(Debug, Default)]
struct SeenCache {
    expiry: HashMap<SeenKey, u64>,
    order: VecDeque<(SeenKey, u64)>,
}

type SeenKey = [u8; 16];

fn seen_key(sender: &PeerId, id: &str) -> SeenKey {
    let mut hash = Sha256::new();
    let sender = sender.to_bytes();
    // Lengths first, so no two (sender, id) pairs hash the same bytes.
    hash.update((sender.len() as u32).to_le_bytes());
    hash.update(&sender);
    hash.update(id.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    key
}

impl SeenCache {
    fn contains(&self, key: &SeenKey, now_ms: u64) -> bool {
        self.expiry.get(key).is_some_and(|&exp| exp > now_ms)
    }

    fn insert(&mut self, key: SeenKey, expires_at: u64, now_ms: u64, capacity: usize) {
        // Forget expired entries, then the oldest ones beyond capacity. An
        // envelope forgotten this way is past its TTL (or the cache is
        // saturated), so it would be rejected as expired anyway.
        while let Some((_, exp)) = self.order.front() {
            if *exp > now_ms && self.order.len() < capacity {
                break;
            }
            let (old, exp) = self.order.pop_front().expect("front exists");
            if self.expiry.get(&old) == Some(&exp) {
                self.expiry.remove(&old);
            }
        }
        self.expiry.insert(key, expires_at);
        self.order.push_back((key, expires_at));
    }

    fn len(&self) -> usize {
        self.expiry.len()
    }
}

/// Validates inbound envelopes and remembers accepted IDs.
#[derive(Debug)]
pub struct Validator {
    limits: Limits,
    seen: SeenCache,
    /// Senders' node IDs in text form, to compare with `from` without a
    /// base58 conversion per message.
    names: HashMap<PeerId, String>,
}

impl Validator {
    /// A validator with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits, seen: SeenCache::default(), names: HashMap::new() }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates `bytes` that arrived from the authenticated `sender` at
    /// `now_ms`, addressed to `to` (this node's ID for a direct message, the
    /// topic for a broadcast). On success the envelope's ID is remembered,
    /// so a second copy is rejected as a duplicate.
    ///
    /// `from` may be an agent name (`agent-1`); when it is a node ID it
    /// must be the sender's, so nobody can speak in another node's name.
    pub fn accept(
        &mut self,
        bytes: &[u8],
        sender: &PeerId,
        to: &str,
        now_ms: u64,
    ) -> Result<Envelope, Rejection> {
        let env = self.check(bytes, sender, to, now_ms)?;
        self.remember(sender, &env, now_ms);
        Ok(env)
    }

    /// [`Validator::accept`] without remembering the ID: for envelopes that
    /// must pass a further check (decryption) before they count as seen.
    /// Call [`Validator::remember`] once they do.
    pub fn check(
        &mut self,
        bytes: &[u8],
        sender: &PeerId,
        to: &str,
        now_ms: u64,
    ) -> Result<Envelope, Rejection> {
        self.check_size(bytes.len())?;
        let env =
            Envelope::decode(bytes).map_err(|e| Rejection::new(RejectReason::Malformed, truncate(&e)))?;
        self.limits.check_schema(&env)?;
        if self.names.len() > 4096 {
            self.names.clear();
        }
        let sender_name = self.names.entry(*sender).or_insert_with(|| sender.to_base58());
        if env.from != *sender_name && env.from.parse::<PeerId>().is_ok() {
            return Err(Rejection::new(
                RejectReason::SenderMismatch,
                format!("from {} but sent by {sender}", truncate(&env.from)),
            ));
        }
        if env.to != to {
            return Err(Rejection::new(
                RejectReason::Misaddressed,
                format!("addressed to {} but arrived at {to}", truncate(&env.to)),
            ));
        }
        self.limits.check_time(&env, now_ms)?;
        if self.seen.contains(&seen_key(sender, &env.id), now_ms) {
            return Err(Rejection::new(RejectReason::Duplicate, format!("id {} already seen", env.id)));
        }
        Ok(env)
    }

    /// Remembers `env`'s ID from `sender`, so another copy is a duplicate.
    pub fn remember(&mut self, sender: &PeerId, env: &Envelope, now_ms: u64) {
        self.remember_id(sender, &env.id, env.expires_at_ms(), now_ms);
    }

    /// Remembers that the envelope `id` from `sender`, which expires at
    /// `expires_at`, was accepted (from what a store kept across a restart).
    pub fn remember_id(&mut self, sender: &PeerId, id: &str, expires_at: u64, now_ms: u64) {
        self.seen.insert(seen_key(sender, id), expires_at, now_ms, self.limits.seen_capacity);
    }

    /// Rejects a byte length over the limit; callers that know a length
    /// before reading the bytes call this first.
    pub fn check_size(&self, len: usize) -> Result<(), Rejection> {
        if len > self.limits.max_envelope_bytes {
            return Err(Rejection::new(
                RejectReason::Oversize,
                format!("{len} bytes, limit {}", self.limits.max_envelope_bytes),
            ));
        }
        Ok(())
    }

    /// How many IDs are remembered.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[cfg(not(target_arch = "wasm32"))]
    use proptest::prelude::*;

    use super::*;
    use crate::messaging::MsgType;

    const NOW: u64 = 1_700_000_000_000;

    fn peer() -> PeerId {
        crate::Identity::from_seed([3u8; 32]).peer_id()
    }

    fn envelope(from: &PeerId) -> Envelope {
        let mut env = Envelope::new(MsgType::Thought, "agent-2", 5, 60).with_payload(vec![9; 10]);
        env.from = from.to_base58();
        env.timestamp = NOW;
        env
    }

    fn reason(v: &mut Validator, env: &Envelope, sender: &PeerId, now: u64) -> RejectReason {
        v.accept(&env.encode(), sender, "agent-2", now).unwrap_err().reason
    }

    #[test]
    fn reasons_are_listed_in_declaration_order_with_unique_labels() {
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "metrics index counters by discriminant");
            assert_eq!(RejectReason::from_label(reason.as_str()), Some(*reason));
        }
    }

    #[test]
    fn accepts_a_good_envelope_once() {
        let p = peer();
        let mut v = Validator::new(Limits::default());
        let env = envelope(&p);
        assert_eq!(v.accept(&env.encode(), &p, "agent-2", NOW + 10).unwrap(), env);
        assert_eq!(reason(&mut v, &env, &p, NOW + 20), RejectReason::Duplicate);
        // The same ID from another sender is a different message.
        let q = crate::Identity::from_seed([4u8; 32]).peer_id();
        let mut other = env.clone();
        other.from = q.to_base58();
        assert!(v.accept(&other.encode(), &q, "agent-2", NOW + 20).is_ok());
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        let p = peer();
        let mut v = Validator::new(Limits { max_envelope_bytes: 1000, ..Limits::default() });
        let big = envelope(&p).with_payload(vec![0; 2000]);
        assert_eq!(reason(&mut v, &big, &p, NOW), RejectReason::Oversize);
        assert_eq!(
            v.accept(b"\x00\x01not cbor", &p, "agent-2", NOW).unwrap_err().reason,
            RejectReason::Malformed
        );

        let mut bad_priority = envelope(&p);
        bad_priority.priority = 11;
        assert_eq!(reason(&mut v, &bad_priority, &p, NOW), RejectReason::Schema);
        let mut no_id = envelope(&p);
        no_id.id.clear();
        assert_eq!(reason(&mut v, &no_id, &p, NOW), RejectReason::Schema);
        let mut zero_ttl = envelope(&p);
        zero_ttl.ttl = 0;
        assert_eq!(reason(&mut v, &zero_ttl, &p, NOW), RejectReason::Schema);
        let mut no_from = envelope(&p);
        no_from.from.clear();
        assert_eq!(reason(&mut v, &no_from, &p, NOW), RejectReason::Schema);
        // An agent name is fine as `from`; a node ID must be the sender's.
        let mut agent = envelope(&p);
        agent.from = "agent-1".into();
        assert!(v.accept(&agent.encode(), &p, "agent-2", NOW).is_ok());
        assert_eq!(
            v.accept(&envelope(&p).encode(), &p, "agent-3", NOW).unwrap_err().reason,
            RejectReason::Misaddressed,
            "arrived on another topic than it names"
        );

        let spoofed = envelope(&crate::Identity::from_seed([5u8; 32]).peer_id());
        assert_eq!(reason(&mut v, &spoofed, &p, NOW), RejectReason::SenderMismatch);

        assert_eq!(reason(&mut v, &envelope(&p), &p, NOW + 60_000), RejectReason::Expired);
        assert_eq!(reason(&mut v, &envelope(&p), &p, NOW - 31_000), RejectReason::FutureTimestamp);
        // Only the one accepted envelope was remembered.
        assert_eq!(v.seen_len(), 1);
    }

    #[test]
    fn seen_cache_forgets_expired_and_respects_capacity() {
        let p = peer();
        let mut v = Validator::new(Limits { seen_capacity: 3, ..Limits::default() });
        for i in 0..10u64 {
            let mut env = envelope(&p);
            env.timestamp = NOW + i;
            v.accept(&env.encode(), &p, "agent-2", NOW + i).unwrap();
        }
        assert!(v.seen_len() <= 3);
    }

    // Property tests run natively (proptest does not build for the browser).
    #[cfg(not(target_arch = "wasm32"))]
    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let p = peer();
            let mut v = Validator::new(Limits::default());
            let _ = v.accept(&bytes, &p, "agent-2", NOW);
        }

        #[test]
        fn mutated_envelopes_never_panic(flip in 0usize..200, byte in any::<u8>()) {
            let p = peer();
            let mut v = Validator::new(Limits::default());
            let mut bytes = envelope(&p).encode();
            let i = flip % bytes.len();
            bytes[i] = byte;
            let _ = v.accept(&bytes, &p, "agent-2", NOW);
        }
    }
}
