//! Messages held for peers that are offline (the offline mailbox of native
//! nodes). Only sealed envelopes are taken, so a holder keeps ciphertext it
//! cannot read. Bounded per recipient (count and bytes), per depositor
//! (count and bytes, whoever the recipients: one peer cannot fill the
//! boxes of thousands of made-up recipients), in recipients and in bytes
//! overall; each message leaves at its envelope's expiry. Pure: the caller
//! passes the time.

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
    /// Most messages held from one depositor (for all recipients).
    pub per_depositor: usize,
    /// Most bytes held from one depositor.
    pub bytes_per_depositor: usize,
    /// Most bytes held in all.
    pub total_bytes: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self {
            per_recipient: 256,
            bytes_per_recipient: 4 * 1024 * 1024,
            recipients: 4096,
            per_depositor: 256,
            bytes_per_depositor: 4 * 1024 * 1024,
            total_bytes: 256 * 1024 * 1024,
        }
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
    /// The depositor has as many messages held as it may (count or bytes).
    #[error("this node holds as many messages from {0} as it may")]
    DepositorFull(PeerId),
    /// The mailbox holds as many bytes as it may.
    #[error("this node's mailbox is full")]
    TotalFull,
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
    /// Per depositor: messages and bytes held.
    deposited: HashMap<PeerId, (usize, usize)>,
    /// Bytes held in all.
    total: usize,
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
        Self {
            limits,
            boxes: HashMap::new(),
            bytes: HashMap::new(),
            deposited: HashMap::new(),
            total: 0,
            soonest: u64::MAX,
        }
    }

    /// Whether `frame` from `author` for `recipient` fits every bound.
    fn fits(&self, recipient: &PeerId, author: &PeerId, frame: usize) -> Result<(), MailboxError> {
        let held = self.boxes.get(recipient);
        if held.is_none() && self.boxes.len() >= self.limits.recipients {
            return Err(MailboxError::TooManyRecipients);
        }
        let count = held.map_or(0, VecDeque::len);
        let bytes = self.bytes.get(recipient).copied().unwrap_or(0);
        if count >= self.limits.per_recipient || bytes + frame > self.limits.bytes_per_recipient {
            return Err(MailboxError::Full(*recipient));
        }
        let (count, bytes) = self.deposited.get(author).copied().unwrap_or_default();
        if count >= self.limits.per_depositor || bytes + frame > self.limits.bytes_per_depositor {
            return Err(MailboxError::DepositorFull(*author));
        }
        if self.total + frame > self.limits.total_bytes {
            return Err(MailboxError::TotalFull);
        }
        Ok(())
    }

    /// Counts a message in (`+`) or out of every tally but the box itself.
    fn tally(&mut self, recipient: PeerId, held: &Held, add: bool) {
        let n = held.frame.len();
        let depositor = self.deposited.entry(held.author).or_default();
        let bytes = self.bytes.entry(recipient).or_default();
        if add {
            *bytes += n;
            self.total += n;
            *depositor = (depositor.0 + 1, depositor.1 + n);
            self.soonest = self.soonest.min(held.expires_at_ms);
        } else {
            *bytes -= n;
            self.total -= n;
            *depositor = (depositor.0 - 1, depositor.1 - n);
            if depositor.0 == 0 {
                self.deposited.remove(&held.author);
            }
        }
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
        self.fits(&recipient, &author, frame.len())?;
        let held = Held { author, id: id.to_owned(), expires_at_ms, frame };
        self.tally(recipient, &held, true);
        let held_here = self.boxes.entry(recipient).or_default();
        held_here.push_back(held);
        Ok(held_here.back().expect("just pushed"))
    }

    /// Whether anything is held for `recipient`.
    pub fn has(&self, recipient: &PeerId) -> bool {
        self.boxes.contains_key(recipient)
    }

    /// Takes out up to `max_count` messages and `max_bytes` of
    /// `recipient`'s unexpired messages (at least one), oldest first, to
    /// deliver. Give back with [`Mailbox::give_back`] what could not be
    /// delivered.
    pub fn take(&mut self, recipient: &PeerId, max_count: usize, max_bytes: usize, now_ms: u64) -> Vec<Held> {
        let mut out = Vec::new();
        let mut taken = 0;
        let Some(mut held) = self.boxes.remove(recipient) else { return out };
        while let Some(next) = held.front() {
            if !out.is_empty() && (taken + next.frame.len() > max_bytes || out.len() >= max_count) {
                break;
            }
            let next = held.pop_front().expect("front exists");
            self.tally(*recipient, &next, false);
            if next.expires_at_ms > now_ms {
                taken += next.frame.len();
                out.push(next);
            }
        }
        if held.is_empty() {
            self.bytes.remove(recipient);
        } else {
            self.boxes.insert(*recipient, held);
        }
        out
    }

    /// Puts back messages taken for `recipient` that did not reach it.
    /// They go back in front, in their order; any that no longer fit
    /// (new deposits took the space meanwhile) are dropped.
    pub fn give_back(&mut self, recipient: PeerId, held: Vec<Held>) {
        for h in held.into_iter().rev() {
            if self.fits(&recipient, &h.author, h.frame.len()).is_err() {
                continue;
            }
            self.tally(recipient, &h, true);
            self.boxes.entry(recipient).or_default().push_front(h);
        }
    }

    /// Forgets one held message (by recipient, author and ID).
    pub fn remove(&mut self, recipient: &PeerId, author: &PeerId, id: &str) {
        let Some(mut held) = self.boxes.remove(recipient) else { return };
        if let Some(i) = held.iter().position(|h| h.author == *author && h.id == id) {
            let gone = held.remove(i).expect("position is in range");
            self.tally(*recipient, &gone, false);
        }
        if held.is_empty() {
            self.bytes.remove(recipient);
        } else {
            self.boxes.insert(*recipient, held);
        }
    }

    /// Drops expired messages; returns them as (recipient, author, ID).
    pub fn expire(&mut self, now_ms: u64) -> Vec<(PeerId, PeerId, String)> {
        if now_ms < self.soonest {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let mut expired = Vec::new();
        self.boxes.retain(|recipient, held| {
            held.retain(|h| {
                let keep = h.expires_at_ms > now_ms;
                if !keep {
                    gone.push((*recipient, h.author, h.id.clone()));
                    expired.push((*recipient, h.clone()));
                }
                keep
            });
            !held.is_empty()
        });
        for (recipient, h) in expired {
            self.tally(recipient, &h, false);
        }
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
        let limits = MailboxLimits {
            per_recipient: 3,
            bytes_per_recipient: 100,
            recipients: 2,
            ..MailboxLimits::default()
        };
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
        let first = mailbox.take(&bob, 64, 10, 2_000);
        assert_eq!(first.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["2"]);
        mailbox.give_back(bob, first);
        let all = mailbox.take(&bob, 64, 1_000, 2_000);
        assert_eq!(all.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert!(!mailbox.has(&bob));
        assert_eq!(mailbox.take(&carol, 64, 1, 2_000).len(), 1, "one message even over the budget");
        mailbox.hold(dave, alice, "y", 3_000, vec![0; 1]).unwrap();
        mailbox.hold(dave, alice, "z", 9_000, vec![0; 1]).unwrap();
        mailbox.remove(&dave, &alice, "z");
        assert_eq!(mailbox.expire(3_000), [(dave, alice, "y".to_owned())]);
        assert!(mailbox.is_empty());
    }

    #[test]
    fn one_depositor_cannot_fill_the_boxes_of_many_recipients() {
        let limits = MailboxLimits {
            per_depositor: 3,
            bytes_per_depositor: 25,
            total_bytes: 40,
            ..Default::default()
        };
        let mut mailbox = Mailbox::new(limits);
        let (mallory, alice) = (PeerId::random(), PeerId::random());
        for i in 0..3 {
            mailbox.hold(PeerId::random(), mallory, &i.to_string(), 9_000, vec![0; 5]).unwrap();
        }
        let fourth = mailbox.hold(PeerId::random(), mallory, "3", 9_000, vec![0; 5]);
        assert_eq!(fourth, Err(MailboxError::DepositorFull(mallory)), "count per depositor");
        let bob = PeerId::random();
        mailbox.hold(bob, alice, "a", 9_000, vec![0; 20]).unwrap();
        let eve = PeerId::random();
        assert_eq!(mailbox.hold(bob, eve, "e", 9_000, vec![0; 10]), Err(MailboxError::TotalFull));
        // Delivered, a depositor's messages no longer count against it.
        let taken = mailbox.take(&bob, 64, 1_000, 1_000);
        assert_eq!(taken.len(), 1);
        mailbox.hold(bob, alice, "b", 9_000, vec![0; 20]).unwrap();
        assert_eq!(mailbox.hold(bob, alice, "c", 9_000, vec![0; 6]), Err(MailboxError::DepositorFull(alice)));
        mailbox.expire(10_000);
        assert!(mailbox.is_empty());
        assert!(mailbox.deposited.is_empty() && mailbox.total == 0, "every tally back to zero");
        // A batch is bounded in count too.
        for i in 0..3 {
            mailbox.hold(bob, alice, &i.to_string(), 20_000, vec![0; 1]).unwrap();
        }
        assert_eq!(mailbox.take(&bob, 2, 1_000, 10_000).len(), 2);
    }
}
