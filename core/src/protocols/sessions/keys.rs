//! Where a node's KEM key is published (its own namespace, signed by its
//! identity), how it is read back, and the sends that wait for a
//! recipient's key while it is looked for.

use std::collections::HashMap;

use libp2p::PeerId;
use serde_json::Value;

use crate::{
    crypto::{Level, SignedKemKey},
    protocols::outbox::Queued,
    state::{KEM_PREFIX, LocalState},
};

/// The state key under which a node publishes its KEM key at a level.
pub(crate) fn kem_state_key(level: Level) -> String {
    format!("{KEM_PREFIX}{}", level.number())
}

/// A signed KEM key as published in a namespace.
pub(crate) fn to_json(key: &SignedKemKey) -> Value {
    serde_json::json!({
        "level": key.level.number(),
        "key": hex::encode(&key.key),
        "signature": hex::encode(&key.signature),
    })
}

pub(crate) fn from_json(value: &Value) -> Option<SignedKemKey> {
    let level = Level::try_from(u8::try_from(value.get("level")?.as_u64()?).ok()?).ok()?;
    let key = hex::decode(value.get("key")?.as_str()?).ok()?;
    let signature = hex::decode(value.get("signature")?.as_str()?).ok()?;
    Some(SignedKemKey { level, key, signature })
}

/// The KEM keys `subject` published in its namespace (as replicated here)
/// at `level` and the stronger levels, in that order: the keys a sender at
/// `level` may seal to. Not verified yet.
pub(super) fn published(state: &LocalState, subject: &PeerId, level: Level) -> Vec<SignedKemKey> {
    let namespace = subject.to_base58();
    level
        .and_stronger()
        .filter_map(|level| {
            let published = state.get(&namespace, &kem_state_key(level))?;
            from_json(&published).filter(|key| key.level == level)
        })
        .collect()
}

/// Sends waiting for their recipient's key, and the key requests open
/// for each recipient.
pub(super) struct KeyWaits {
    parked: HashMap<PeerId, Vec<Queued>>,
    asks: HashMap<PeerId, usize>,
    capacity: usize,
}

impl KeyWaits {
    /// At most `capacity` sends wait per recipient.
    pub(super) fn new(capacity: usize) -> Self {
        Self { parked: HashMap::new(), asks: HashMap::new(), capacity }
    }

    /// Parks a send: `Ok(true)` when it is the first for `peer` (its key is
    /// to be asked for), `Err` with the send when `peer`'s are too many.
    pub(super) fn park(&mut self, peer: PeerId, queued: Queued) -> Result<bool, Queued> {
        let parked = self.parked.entry(peer).or_default();
        if parked.len() >= self.capacity {
            return Err(queued);
        }
        parked.push(queued);
        Ok(parked.len() == 1)
    }

    /// A request for `subject`'s key went out.
    pub(super) fn asked(&mut self, subject: PeerId) {
        *self.asks.entry(subject).or_default() += 1;
    }

    /// A request for `subject`'s key was answered (or failed); returns how
    /// many are still open.
    pub(super) fn answered(&mut self, subject: PeerId) -> usize {
        let open = self.asks.entry(subject).or_default();
        *open = open.saturating_sub(1);
        *open
    }

    /// The sends that waited for `subject`'s key (found, or given up on).
    pub(super) fn release(&mut self, subject: &PeerId) -> Vec<Queued> {
        self.asks.remove(subject);
        self.parked.remove(subject).unwrap_or_default()
    }
}
