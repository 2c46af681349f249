//! Reconnection with exponential backoff and jitter: which peers to redial
//! and when. Pure: the caller passes the time and the random numbers.

use std::{collections::HashMap, hash::Hash, time::Duration};

use crate::platform::Instant;

/// Backoff policy.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay between retries.
    pub max: Duration,
    /// Retries before giving up on a peer that is not pinned.
    pub max_attempts: u32,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): `initial * 2^attempt`
    /// capped at `max`, then scaled by a jitter factor in [0.5, 1.5) taken
    /// from `random`, so that peers that lost the same node do not all
    /// redial it at the same instant.
    pub(crate) fn delay(&self, attempt: u32, random: u64) -> Duration {
        let base = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let jitter = 0.5 + (random % 1_000_000) as f64 / 1_000_000.0;
        base.mul_f64(jitter)
    }
}

#[derive(Debug)]
struct Entry {
    attempt: u32,
    next_at: Option<Instant>,
    dialing: bool,
    pinned: bool,
}

/// The set of peers (or addresses) to keep connected to.
#[derive(Debug)]
pub(crate) struct Reconnector<K> {
    policy: Backoff,
    entries: HashMap<K, Entry>,
}

impl<K: Clone + Eq + Hash> Reconnector<K> {
    pub(crate) fn new(policy: Backoff) -> Self {
        Self { policy, entries: HashMap::new() }
    }

    /// Starts tracking `key`, due at once. A pinned key (a bootstrap peer) is
    /// retried forever; others are forgotten after `max_attempts` failures.
    pub(crate) fn track_now(&mut self, key: K, pinned: bool, now: Instant) {
        let entry =
            self.entries.entry(key).or_insert(Entry { attempt: 0, next_at: None, dialing: false, pinned });
        entry.pinned |= pinned;
        if !entry.dialing {
            entry.next_at = Some(now);
        }
    }

    /// Starts tracking `key` with a dial already under way (started by the
    /// caller); its outcome is reported with `connected` or `dial_failed`.
    pub(crate) fn track_dialing(&mut self, key: K, pinned: bool) {
        let entry =
            self.entries.entry(key).or_insert(Entry { attempt: 0, next_at: None, dialing: false, pinned });
        entry.pinned |= pinned;
        entry.next_at = None;
        entry.dialing = true;
    }

    /// The key is connected: nothing to do until it disconnects.
    pub(crate) fn connected(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            e.attempt = 0;
            e.next_at = None;
            e.dialing = false;
        }
    }

    /// The key lost its last connection: schedule a redial after the first
    /// backoff delay. Untracked keys are tracked (unpinned).
    pub(crate) fn disconnected(&mut self, key: K, now: Instant, random: u64) {
        let delay = self.policy.delay(0, random);
        let e = self.entries.entry(key).or_insert(Entry {
            attempt: 0,
            next_at: None,
            dialing: false,
            pinned: false,
        });
        e.attempt = 0;
        e.dialing = false;
        e.next_at = Some(now + delay);
    }

    /// A redial we started failed: back off further, or give up.
    pub(crate) fn dial_failed(&mut self, key: &K, now: Instant, random: u64) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if !e.dialing {
            return;
        }
        e.dialing = false;
        e.attempt += 1;
        if !e.pinned && e.attempt >= self.policy.max_attempts {
            self.entries.remove(key);
            return;
        }
        e.next_at = Some(now + self.policy.delay(e.attempt, random));
    }

    /// The keys whose redial is due; they are marked as being dialled.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        for (key, e) in &mut self.entries {
            if e.next_at.is_some_and(|t| t <= now) {
                e.next_at = None;
                e.dialing = true;
                due.push(key.clone());
            }
        }
        due
    }

    /// Whether the key is tracked.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn policy() -> Backoff {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), max_attempts: 3 }
    }

    #[test]
    fn delay_grows_exponentially_with_bounded_jitter() {
        let p = policy();
        for attempt in 0..10 {
            let base = (100u64 << attempt).min(2000) as f64;
            for random in [0u64, 499_999, 999_999, 123_456_789] {
                let d = p.delay(attempt, random).as_secs_f64() * 1000.0;
                assert!(d >= base * 0.5 - 1e-6 && d < base * 1.5, "attempt {attempt}: {d} vs {base}");
            }
        }
        assert_ne!(p.delay(2, 1), p.delay(2, 700_000), "jitter varies the delay");
    }

    #[test]
    fn retries_then_gives_up_unless_pinned() {
        let t0 = Instant::now();
        let mut r = Reconnector::new(policy());
        r.disconnected("a", t0, 500_000);
        r.track_now("boot", true, t0);
        assert_eq!(r.due(t0), vec!["boot"]);
        assert!(r.due(t0 + Duration::from_millis(99)).is_empty());
        let mut t = t0 + Duration::from_millis(100);
        assert_eq!(r.due(t), vec!["a"]);
        // Nothing is due while a dial is in flight.
        assert!(r.due(t + Duration::from_secs(60)).is_empty());
        for _ in 0..3 {
            r.dial_failed(&"a", t, 500_000);
            r.dial_failed(&"boot", t, 500_000);
            t += Duration::from_secs(5);
            let mut due = r.due(t);
            due.sort();
            if !r.contains(&"a") {
                assert_eq!(due, vec!["boot"]);
                break;
            }
            assert_eq!(due, vec!["a", "boot"]);
        }
        assert!(!r.contains(&"a"), "unpinned peer forgotten after max_attempts");
        assert!(r.contains(&"boot"), "pinned peer kept");
        r.connected(&"boot");
        assert!(r.due(t + Duration::from_secs(600)).is_empty());
    }
}
