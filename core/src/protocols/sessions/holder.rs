//! The holder's side of the mailbox: sealed messages kept for offline
//! recipients, delivered one batch at a time when they connect, kept for
//! later when the recipient cannot take them yet (with a pause that grows
//! while it takes nothing), dropped when they expire. Pure: the sessions
//! driver asks it what to send and tells it what came back.

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;

use super::wire::{MAX_MAIL_BYTES, MAX_MAIL_FRAMES};
use crate::{
    messaging::{Envelope, Held, Limits, Mailbox, MailboxError, MailboxLimits},
    platform::Instant,
    store::MailKey,
};

/// How long a recipient whose event stream was full gets before its
/// remaining mail is delivered again.
const MAIL_RETRY: Duration = Duration::from_secs(1);
/// The longest such pause.
const MAIL_RETRY_MAX: Duration = Duration::from_secs(60);

/// When a recipient that could not take all its mail gets it again.
#[derive(Debug, PartialEq, Eq)]
struct MailRetry {
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

/// Checks a deposit from `depositor` to a holder `local`: a sealed
/// envelope it wrote, with its handshake, for a peer other than `local`.
/// Returns its recipient and the envelope.
pub(crate) fn check_deposit(
    limits: &Limits,
    local: &PeerId,
    depositor: &PeerId,
    frame: &[u8],
    now_ms: u64,
) -> Result<(PeerId, Envelope), String> {
    if frame.len() > limits.max_envelope_bytes {
        return Err(format!("{} bytes, limit {}", frame.len(), limits.max_envelope_bytes));
    }
    let env = Envelope::decode(frame).map_err(|e| format!("malformed: {e}"))?;
    limits.check_schema(&env).map_err(|e| e.to_string())?;
    limits.check_time(&env, now_ms).map_err(|e| e.to_string())?;
    if env.from.parse::<PeerId>().is_ok_and(|from| from != *depositor) {
        return Err("only its author may deposit a message".into());
    }
    let recipient: PeerId = env.to.parse().map_err(|_| "the recipient must be a node ID".to_owned())?;
    if recipient == *local {
        return Err("addressed to this node: send it directly".into());
    }
    if env.e2e.as_ref().is_none_or(|body| body.handshake.is_none()) {
        return Err("only end-to-end sealed messages with their handshake are held".into());
    }
    Ok((recipient, env))
}

/// Messages held here for others.
pub(super) struct Holder {
    mailbox: Mailbox,
    /// Per recipient, the batch on its way to it (still held until it
    /// answers: on disk, and given back if not taken).
    in_transit: HashMap<PeerId, Vec<Held>>,
    retry: HashMap<PeerId, MailRetry>,
}

impl Holder {
    pub(super) fn new(limits: MailboxLimits) -> Self {
        Self { mailbox: Mailbox::new(limits), in_transit: HashMap::new(), retry: HashMap::new() }
    }

    /// Takes back what a store held; returns what is not kept (expired, or
    /// over the bounds), to forget in the store too.
    pub(super) fn restore(&mut self, stored: Vec<(PeerId, Held)>, now_ms: u64) -> Vec<MailKey> {
        let mut gone = Vec::new();
        for (recipient, held) in stored {
            let key = (recipient, held.author, held.id.clone());
            let kept = held.expires_at_ms > now_ms
                && self
                    .mailbox
                    .hold(recipient, held.author, &held.id, held.expires_at_ms, held.frame)
                    .is_ok();
            if !kept {
                gone.push(key);
            }
        }
        gone
    }

    /// Holds a message; returns it as held.
    pub(super) fn hold(
        &mut self,
        recipient: PeerId,
        author: PeerId,
        id: &str,
        expires_at_ms: u64,
        frame: Vec<u8>,
    ) -> Result<Held, MailboxError> {
        self.mailbox.hold(recipient, author, id, expires_at_ms, frame).cloned()
    }

    /// Forgets a message (it could not be stored).
    pub(super) fn forget(&mut self, (recipient, author, id): &MailKey) {
        self.mailbox.remove(recipient, author, id);
    }

    /// The next batch for `recipient` (connected), unless one is on its way.
    pub(super) fn next_batch(&mut self, recipient: PeerId, now_ms: u64) -> Option<&[Held]> {
        if self.in_transit.contains_key(&recipient) || !self.mailbox.has(&recipient) {
            return None;
        }
        let held = self.mailbox.take(&recipient, MAX_MAIL_FRAMES, MAX_MAIL_BYTES, now_ms);
        if held.is_empty() {
            return None;
        }
        Some(self.in_transit.entry(recipient).or_insert(held))
    }

    /// The recipient answered its batch: `accepted` taken, the ones at the
    /// positions in `later` kept for a later try (the rest were refused and
    /// would be refused again). Returns what is no longer held.
    pub(super) fn answered(
        &mut self,
        recipient: PeerId,
        accepted: u32,
        later: &[u32],
        now: Instant,
    ) -> Vec<MailKey> {
        let held = self.in_transit.remove(&recipient).unwrap_or_default();
        let (again, done): (Vec<_>, Vec<_>) = held
            .into_iter()
            .enumerate()
            .partition(|(i, _)| u32::try_from(*i).is_ok_and(|i| later.contains(&i)));
        if again.is_empty() {
            self.retry.remove(&recipient);
        } else {
            self.mailbox.give_back(recipient, again.into_iter().map(|(_, h)| h).collect());
            let retry = MailRetry::after(self.retry.get(&recipient), accepted, now);
            self.retry.insert(recipient, retry);
        }
        done.into_iter().map(|(_, h)| (recipient, h.author, h.id)).collect()
    }

    /// The batch did not reach its recipient: all of it is held again.
    pub(super) fn not_delivered(&mut self, recipient: PeerId) {
        if let Some(held) = self.in_transit.remove(&recipient) {
            self.mailbox.give_back(recipient, held);
        }
    }

    /// Drops expired messages; returns them.
    pub(super) fn expire(&mut self, now_ms: u64) -> Vec<MailKey> {
        if self.mailbox.is_empty() { Vec::new() } else { self.mailbox.expire(now_ms) }
    }

    /// Recipients whose pause is over (each attempt is made once).
    pub(super) fn due(&mut self, now: Instant) -> Vec<PeerId> {
        let mut due = Vec::new();
        for (recipient, retry) in &mut self.retry {
            if retry.is_due(now) {
                retry.at = None;
                due.push(*recipient);
            }
        }
        due.sort();
        due
    }

    /// Messages held, waiting or in transit.
    pub(super) fn len(&self) -> usize {
        self.mailbox.len() + self.in_transit.values().map(Vec::len).sum::<usize>()
    }

    /// Every held message as it is kept (waiting or in transit).
    pub(super) fn frames(&self) -> Vec<Vec<u8>> {
        self.mailbox
            .frames()
            .chain(self.in_transit.values().flatten().map(|h| h.frame.as_slice()))
            .map(<[u8]>::to_vec)
            .collect()
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
        let mut retry = first;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            retry = MailRetry::after(Some(&retry), 0, now);
            pauses.push(retry.pause.as_secs());
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(MailRetry::after(Some(&retry), 3, now).pause, MAIL_RETRY);
        assert!(!MailRetry { at: None, pause: MAIL_RETRY }.is_due(now + MAIL_RETRY_MAX));
    }

    #[test]
    fn a_batch_at_a_time_and_what_is_not_taken_comes_back_after_a_pause() {
        let now = Instant::now();
        let mut holder = Holder::new(MailboxLimits::default());
        let (bob, alice) = (PeerId::random(), PeerId::random());
        for id in ["1", "2", "3"] {
            holder.hold(bob, alice, id, u64::MAX, vec![0; 10]).unwrap();
        }
        assert_eq!(holder.next_batch(bob, 0).map(<[Held]>::len), Some(3));
        assert!(holder.next_batch(bob, 0).is_none(), "one batch on its way at a time");
        assert_eq!(holder.len(), 3, "in transit still counts as held");
        // Two taken, the last kept for later.
        let done = holder.answered(bob, 2, &[2], now);
        assert_eq!(done.iter().map(|(_, _, id)| id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(holder.len(), 1);
        assert!(holder.due(now).is_empty());
        assert_eq!(holder.due(now + MAIL_RETRY), [bob]);
        assert!(holder.due(now + MAIL_RETRY).is_empty(), "made once");
        // Lost on the way: held again.
        assert!(holder.next_batch(bob, 0).is_some());
        holder.not_delivered(bob);
        assert_eq!(holder.frames().len(), 1);
        assert!(holder.expire(0).is_empty());
        assert_eq!(holder.expire(u64::MAX).len(), 1);
    }
}
