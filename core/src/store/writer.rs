//! Group commit, I/O-free: changes are staged as they happen; when the
//! store is idle, everything staged goes to it as one batch; what is staged
//! while that batch is being committed waits for the next one. Callers
//! waiting for durability are answered when the batch that holds their
//! changes is durable. The event loop hands [`Writer::next_batch`] to the
//! store and reports the outcome with [`Writer::finished`].

use std::{collections::BTreeMap, time::Duration};

use super::StoreError;
use crate::platform::Instant;

/// How long a store that failed is left alone before the next batch.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Least time between the starts of two batches nobody waits for (entries
/// from peers, which they would send again): a peer trickling gossip costs
/// at most ten commits a second, not one per message. A batch with a
/// waiting caller goes at once.
const BACKGROUND_INTERVAL: Duration = Duration::from_millis(100);

/// Staged changes keyed by what they change (a newer change to the same
/// key replaces the staged one), and the callers waiting for them.
pub(crate) struct Writer<K, V, W> {
    staged: BTreeMap<K, V>,
    waiting: Vec<W>,
    /// The batch being committed: its keys and its callers.
    in_flight: Option<(Vec<K>, Vec<W>)>,
    /// No batch starts before this (after a failure).
    paused_until: Option<Instant>,
    /// Staged changes beyond which [`Writer::is_backlogged`] says so.
    high_water: usize,
    /// When the last batch started.
    last_start: Option<Instant>,
}

/// What a finished commit means.
pub(crate) struct Finished<K, W> {
    /// The callers whose changes were in the batch.
    pub waiters: Vec<W>,
    /// The batch failed: why, and the keys it held (not durable).
    pub failed: Option<(StoreError, Vec<K>)>,
}

impl<K: Ord + Clone, V, W> Writer<K, V, W> {
    /// A writer that reports a backlog beyond `high_water` staged changes.
    pub(crate) fn new(high_water: usize) -> Self {
        Self {
            staged: BTreeMap::new(),
            waiting: Vec::new(),
            in_flight: None,
            paused_until: None,
            high_water,
            last_start: None,
        }
    }

    /// Stages changes; `waiter` (if any) is answered once all of them are
    /// durable. With nothing to stage the waiter is handed back at once.
    pub(crate) fn stage(
        &mut self,
        changes: impl IntoIterator<Item = (K, V)>,
        waiter: Option<W>,
    ) -> Option<W> {
        let mut any = false;
        for (key, value) in changes {
            any = true;
            self.staged.insert(key, value);
        }
        match waiter {
            Some(waiter) if any => {
                self.waiting.push(waiter);
                None
            }
            other => other,
        }
    }

    /// The next batch to commit, if the store is idle, not pausing after a
    /// failure, and something is staged (and, when no caller waits for it,
    /// [`BACKGROUND_INTERVAL`] after the last one started).
    pub(crate) fn next_batch(&mut self, now: Instant) -> Option<Vec<V>> {
        if self.in_flight.is_some() || self.staged.is_empty() {
            return None;
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        if self.waiting.is_empty()
            && !self.is_backlogged()
            && self.last_start.is_some_and(|at| now < at + BACKGROUND_INTERVAL)
        {
            return None;
        }
        self.paused_until = None;
        self.last_start = Some(now);
        let staged = std::mem::take(&mut self.staged);
        let mut keys = Vec::with_capacity(staged.len());
        let mut values = Vec::with_capacity(staged.len());
        for (key, value) in staged {
            keys.push(key);
            values.push(value);
        }
        self.in_flight = Some((keys, std::mem::take(&mut self.waiting)));
        Some(values)
    }

    /// The store finished the batch in flight.
    pub(crate) fn finished(&mut self, result: Result<(), StoreError>, now: Instant) -> Finished<K, W> {
        let (keys, waiters) = self.in_flight.take().unwrap_or_default();
        let failed = match result {
            Ok(()) => None,
            Err(e) => {
                self.paused_until = Some(now + PAUSE_AFTER_FAILURE);
                Some((e, keys))
            }
        };
        Finished { waiters, failed }
    }

    /// Whether a batch is being committed.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether a batch is ready to go now or later (staged, not yet sent).
    pub(crate) fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Whether more changes are staged than the store keeps up with: the
    /// node stops taking new commands until it catches up.
    pub(crate) fn is_backlogged(&self) -> bool {
        self.staged.len() >= self.high_water
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    type W = Writer<&'static str, u32, &'static str>;

    #[test]
    fn changes_staged_during_a_commit_go_in_the_next_batch() {
        let now = Instant::now();
        let mut writer = W::new(100);
        assert!(writer.stage([("a", 1), ("b", 1)], Some("first")).is_none());
        assert_eq!(writer.next_batch(now), Some(vec![1, 1]));
        assert!(writer.is_busy());
        // While it is committed: a newer `a` twice (coalesced) and `c`.
        writer.stage([("a", 2)], Some("second"));
        writer.stage([("a", 3), ("c", 3)], Some("third"));
        assert_eq!(writer.next_batch(now), None, "one batch at a time");
        let done = writer.finished(Ok(()), now);
        assert_eq!(done.waiters, ["first"], "only the first caller's changes are durable");
        assert!(done.failed.is_none());
        assert_eq!(writer.next_batch(now), Some(vec![3, 3]), "the newest `a`, once, and `c`");
        assert_eq!(writer.finished(Ok(()), now).waiters, ["second", "third"]);
        assert_eq!(writer.next_batch(now), None);
    }

    #[test]
    fn batches_nobody_waits_for_are_spaced_out() {
        let now = Instant::now();
        let mut writer = W::new(100);
        // A peer's entries, one message after another as each commit ends.
        let mut commits = 0;
        for i in 0..100u32 {
            let at = now + Duration::from_millis(u64::from(i));
            writer.stage([("k", i)], None);
            if writer.next_batch(at).is_some() {
                commits += 1;
                writer.finished(Ok(()), at);
            }
        }
        assert_eq!(commits, 1, "100 ms of trickled entries, one commit");
        // A caller waiting goes at once.
        writer.stage([("mine", 1)], Some("caller"));
        assert!(writer.next_batch(now + Duration::from_millis(100)).is_some());
        writer.finished(Ok(()), now);
        writer.stage([("k", 1)], None);
        assert!(writer.next_batch(now + Duration::from_millis(150)).is_none());
        assert!(writer.next_batch(now + Duration::from_millis(200)).is_some(), "and the rest comes in time");
    }

    #[test]
    fn a_failed_batch_names_its_keys_and_pauses_the_writer() {
        let now = Instant::now();
        let mut writer = W::new(100);
        writer.stage([("a", 1)], Some("caller"));
        writer.next_batch(now).unwrap();
        writer.stage([("b", 2)], None);
        let done = writer.finished(Err(StoreError("disk full".into())), now);
        assert_eq!(done.waiters, ["caller"]);
        let (error, keys) = done.failed.unwrap();
        assert_eq!((error.0.as_str(), keys), ("disk full", vec!["a"]));
        assert_eq!(writer.next_batch(now), None, "pausing after a failure");
        assert_eq!(writer.next_batch(now + PAUSE_AFTER_FAILURE / 2), None);
        assert_eq!(writer.next_batch(now + PAUSE_AFTER_FAILURE), Some(vec![2]));
    }

    #[test]
    fn a_waiter_with_nothing_to_write_is_answered_at_once_and_backlog_is_reported() {
        let now = Instant::now();
        let mut writer = W::new(2);
        assert_eq!(writer.stage([], Some("nothing")), Some("nothing"));
        writer.stage([("a", 1)], None);
        assert!(!writer.is_backlogged());
        writer.stage([("b", 1)], None);
        assert!(writer.is_backlogged());
        writer.next_batch(now).unwrap();
        assert!(!writer.is_backlogged() && !writer.has_staged());
    }
}
