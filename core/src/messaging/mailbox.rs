//! Messages held for peers that are offline (the offline mailbox of native
//! nodes). Only sealed envelopes are taken, so a holder keeps ciphertext it
//! cannot read. Bounded per recipient (count and bytes) and in recipients;
//! each message leaves at its envelope's expiry. Pure: the caller passes
//! the time.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;

/// Bounds of a mailbox.
#[derive(Clone, Debug)]
pub struct MailboxLimits {
    /// Most messages held for one recipient.
    pub per_recipient: usize,
    /// Most bytes held for one recipient.
    pub bytes_per_recipient: usize,
    /// Most recipients with messages held.
    pub recipients: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self { per_recipient: 256, bytes_per_recipient: 4 * 1024 * 1024, recipients: 4096 }
    }
}

/// Why a message was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MailboxError {
    /// The recipient's box is full (count or bytes).
    #[error("the mailbox for {0} is full")]
    Full(PeerId),
    /// Too many recipients have messages held.
    #[error("this node holds messages for too many recipients")]
    TooManyRecipients,
}

/// One held message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Who wrote it.
    pub author: PeerId,
    /// Its envelope ID.
    pub id: String,
    /// When it expires (milliseconds since the epoch).
    pub expires_at_ms: u64,
    /// The encoded, sealed envelope.
    pub frame: Vec<u8>,
}

/// Messages held per recipient.
#[derive(Default)]
pub struct Mailbox {
    limits: MailboxLimits,
    boxes: HashMap<PeerId, VecDeque<Held>>,
    bytes: HashMap<PeerId, usize>,
    /// No held message expires before this (a lower bound): `expire`
    /// returns at once until then, so calling it every tick costs nothing.
    soonest: u64,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("recipients", &self.boxes.len()).field("held", &self.len()).finish()
    }
}

impl Mailbox {
    /// An empty mailbox with these bounds.
    pub fn new(limits: MailboxLimits) -> Self {
        Self { limits, boxes: HashMap::new(), bytes: HashMap::new(), soonest: u64::MAX }
    }

    /// Holds `frame` (message `id` by `author`) for `recipient` until
    /// `expires_at_ms`; returns it as held. A message already held is
    /// taken again silently (the one held is returned).
    pub fn hold(
        &mut self,
        recipient: PeerId,
        author: PeerId,
        id: &str,
        expires_at_ms: u64,
        frame: Vec<u8>,
    ) -> Result<&Held, MailboxError> {
        let held = self.boxes.get(&recipient);
        if let Some(i) = held.and_then(|b| b.iter().position(|h| h.author == author && h.id == id)) {
            return Ok(&self.boxes[&recipient][i]);
        }
        if held.is_none() && self.boxes.len() >= self.limits.recipients {
            return Err(MailboxError::TooManyRecipients);
        }
        let count = held.map_or(0, VecDeque::len);
        let bytes = self.bytes.get(&recipient).copied().unwrap_or(0);
        if count >= self.limits.per_recipient || bytes + frame.len() > self.limits.bytes_per_recipient {
            return Err(MailboxError::Full(recipient));
        }
        *self.bytes.entry(recipient).or_default() += frame.len();
        self.soonest = self.soonest.min(expires_at_ms);
        let held = self.boxes.entry(recipient).or_default();
        held.push_back(Held { author, id: id.to_owned(), expires_at_ms, frame });
        Ok(held.back().expect("just pushed"))
    }

    /// Whether anything is held for `recipient`.
    pub fn has(&self, recipient: &PeerId) -> bool {
        self.boxes.contains_key(recipient)
    }

    /// Takes out up to `max_bytes` of `recipient`'s unexpired messages
    /// (at least one), oldest first, to deliver. Give back with
    /// [`Mailbox::give_back`] what could not be delivered.
    pub fn take(&mut self, recipient: &PeerId, max_bytes: usize, now_ms: u64) -> Vec<Held> {
        let mut out = Vec::new();
        let mut taken = 0;
        let Some(held) = self.boxes.get_mut(recipient) else { return out };
        while let Some(next) = held.front() {
            if !out.is_empty() && taken + next.frame.len() > max_bytes {
                break;
            }
            let next = held.pop_front().expect("front exists");
            *self.bytes.get_mut(recipient).expect("counted with the box") -= next.frame.len();
            if next.expires_at_ms > now_ms {
                taken += next.frame.len();
                out.push(next);
            }
        }
        if held.is_empty() {
            self.boxes.remove(recipient);
            self.bytes.remove(recipient);
        }
        out
    }

    /// Puts back messages taken for `recipient` that did not reach it.
    /// They go back in front, in their order; any that no longer fit
    /// (new deposits took the space meanwhile) are dropped.
    pub fn give_back(&mut self, recipient: PeerId, held: Vec<Held>) {
        for h in held.into_iter().rev() {
            let count = self.boxes.get(&recipient).map_or(0, VecDeque::len);
            let bytes = self.bytes.get(&recipient).copied().unwrap_or(0);
            let new_box = count == 0 && self.boxes.len() >= self.limits.recipients;
            if new_box
                || count >= self.limits.per_recipient
                || bytes + h.frame.len() > self.limits.bytes_per_recipient
            {
                continue;
            }
            *self.bytes.entry(recipient).or_default() += h.frame.len();
            self.soonest = self.soonest.min(h.expires_at_ms);
            self.boxes.entry(recipient).or_default().push_front(h);
        }
    }

    /// Forgets one held message (by recipient, author and ID).
    pub fn remove(&mut self, recipient: &PeerId, author: &PeerId, id: &str) {
        let Some(held) = self.boxes.get_mut(recipient) else { return };
        if let Some(i) = held.iter().position(|h| h.author == *author && h.id == id) {
            let gone = held.remove(i).expect("position is in range");
            *self.bytes.get_mut(recipient).expect("counted with the box") -= gone.frame.len();
        }
        if held.is_empty() {
            self.boxes.remove(recipient);
            self.bytes.remove(recipient);
        }
    }

    /// Drops expired messages; returns them as (recipient, author, ID).
    pub fn expire(&mut self, now_ms: u64) -> Vec<(PeerId, PeerId, String)> {
        if now_ms < self.soonest {
            return Vec::new();
        }
        let mut gone = Vec::new();
        self.boxes.retain(|recipient, held| {
            held.retain(|h| {
                let keep = h.expires_at_ms > now_ms;
                if !keep {
                    gone.push((*recipient, h.author, h.id.clone()));
                }
                keep
            });
            let bytes = held.iter().map(|h| h.frame.len()).sum();
            self.bytes.insert(*recipient, bytes);
            !held.is_empty()
        });
        self.bytes.retain(|recipient, _| self.boxes.contains_key(recipient));
        self.soonest = self.boxes.values().flatten().map(|h| h.expires_at_ms).min().unwrap_or(u64::MAX);
        gone
    }

    /// Messages held, for every recipient.
    pub fn len(&self) -> usize {
        self.boxes.values().map(VecDeque::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Every held frame, exactly as stored (to audit what a holder keeps).
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.boxes.values().flatten().map(|h| h.frame.as_slice())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn bounded_per_recipient_expiring_and_given_back() {
        let limits = MailboxLimits { per_recipient: 3, bytes_per_recipient: 100, recipients: 2 };
        let mut mailbox = Mailbox::new(limits);
        let (bob, carol, dave, alice) =
            (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        mailbox.hold(bob, alice, "1", 1_000, vec![1; 10]).unwrap();
        mailbox.hold(bob, alice, "1", 1_000, vec![1; 10]).unwrap();
        assert_eq!(mailbox.len(), 1, "the same message is held once");
        mailbox.hold(bob, alice, "2", 5_000, vec![2; 10]).unwrap();
        mailbox.hold(bob, alice, "3", 5_000, vec![3; 10]).unwrap();
        assert_eq!(mailbox.hold(bob, alice, "4", 5_000, vec![4; 10]), Err(MailboxError::Full(bob)));
        mailbox.hold(carol, alice, "big", 5_000, vec![0; 100]).unwrap();
        assert_eq!(mailbox.hold(carol, alice, "more", 5_000, vec![0; 1]), Err(MailboxError::Full(carol)));
        assert_eq!(mailbox.hold(dave, alice, "x", 5_000, vec![0; 1]), Err(MailboxError::TooManyRecipients));
        assert_eq!(mailbox.frames().count(), 4);

        // At 2 s the first has expired; the rest come out in order, within
        // the byte budget (but always at least one).
        let first = mailbox.take(&bob, 10, 2_000);
        assert_eq!(first.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["2"]);
        mailbox.give_back(bob, first);
        let all = mailbox.take(&bob, 1_000, 2_000);
        assert_eq!(all.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert!(!mailbox.has(&bob));
        assert_eq!(mailbox.take(&carol, 1, 2_000).len(), 1, "one message even over the budget");
        mailbox.hold(dave, alice, "y", 3_000, vec![0; 1]).unwrap();
        mailbox.hold(dave, alice, "z", 9_000, vec![0; 1]).unwrap();
        mailbox.remove(&dave, &alice, "z");
        assert_eq!(mailbox.expire(3_000), [(dave, alice, "y".to_owned())]);
        assert!(mailbox.is_empty());
    }
}
