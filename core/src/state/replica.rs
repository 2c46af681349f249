//! A replica of any number of namespaces: it admits verified, authorised
//! entries and keeps, per `(namespace, key)`, the one that wins the merge.
//!
//! The merge is last-writer-wins on `(timestamp, author, id)`: a total
//! order, so every replica that has seen the same entries keeps the same
//! winners, whatever order they arrived in, however often.
//!
//! Authorisation is judged by time too, so that it does not depend on
//! arrival order: a writer's entry counts if the owner's latest word on
//! that writer (`_acl/<writer>`) grants it, or revoked it later than the
//! entry was written. When a revocation arrives, the writer's entries from
//! after it are dropped (the previous values come back by catch-up from
//! replicas that never took them).
//!
//! Bounded: entries (tombstones included) and bytes per namespace, and
//! bytes in all for namespaces of others ([`ReplicaLimits`]).

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;

use super::{
    Hlc,
    entry::{ACL_PREFIX, Entry, EntryError, EntryRejection, is_internal_key},
};

/// `sum += id` (mod 2^256, little-endian).
fn add_id(sum: &mut [u8; 32], id: &[u8; 32]) {
    let mut carry = 0u16;
    for (acc, byte) in sum.iter_mut().zip(id) {
        let total = u16::from(*acc) + u16::from(*byte) + carry;
        *acc = total as u8;
        carry = total >> 8;
    }
}

/// `sum -= id` (mod 2^256, little-endian).
fn sub_id(sum: &mut [u8; 32], id: &[u8; 32]) {
    let mut borrow = 0i16;
    for (acc, byte) in sum.iter_mut().zip(id) {
        let total = i16::from(*acc) - i16::from(*byte) - borrow;
        *acc = total.rem_euclid(256) as u8;
        borrow = i16::from(total < 0);
    }
}

/// How far in the future an entry's timestamp may be (clock skew allowed).
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// What applying an entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It is the new value of its key.
    Changed,
    /// This exact entry was already there.
    Duplicate,
    /// A later write of that key is already there; nothing changed.
    Superseded,
}

/// What became of one entry of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The entry's namespace.
    pub namespace: String,
    /// The entry's key.
    pub key: String,
    /// The entry's timestamp (hybrid logical clock, see [`super::Hlc`]).
    pub timestamp: u64,
    /// Merged, already there, superseded, or refused (and why).
    pub result: Result<Applied, EntryError>,
}

/// The winning entry of one key.
#[derive(Clone, Debug)]
struct Slot {
    entry: Entry,
    id: [u8; 32],
}

/// The merge order: later timestamp wins, then the greater author, then the
/// greater entry ID.
pub fn wins(a: &Entry, a_id: &[u8; 32], b: &Entry, b_id: &[u8; 32]) -> bool {
    (a.timestamp, &a.author, a_id) > (b.timestamp, &b.author, b_id)
}

/// Whether [`Replica::apply_part`] checks signatures.
#[derive(Clone, Copy)]
enum Signatures {
    /// Entries from anywhere else: every signature is verified.
    Check,
    /// Entries this node has just signed itself.
    OursFresh,
}

/// How much a replica holds at most. Entries from peers beyond these are
/// refused ([`EntryRejection::Full`]); entries read back from this node's
/// own store are not judged against them.
#[derive(Clone, Debug)]
pub struct ReplicaLimits {
    /// Most keys in one namespace, deleted ones (tombstones) included.
    pub entries_per_namespace: usize,
    /// Most bytes (keys and values) in one namespace.
    pub bytes_per_namespace: usize,
    /// Most bytes in all namespaces but this node's own.
    pub total_bytes: usize,
}

impl Default for ReplicaLimits {
    fn default() -> Self {
        Self { entries_per_namespace: 100_000, bytes_per_namespace: 16 << 20, total_bytes: 1 << 30 }
    }
}

/// What an entry costs towards the byte limits: its key and value, and a
/// fixed amount for its timestamp, author and signature.
fn weight(entry: &Entry) -> usize {
    entry.key.len() + entry.value.as_ref().map_or(0, String::len) + 128
}

/// Entries of many namespaces, merged.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    /// namespace → key → winner.
    namespaces: BTreeMap<String, BTreeMap<String, Slot>>,
    /// entry ID → where it is the winner.
    by_id: HashMap<[u8; 32], (String, String)>,
    /// namespace → sum of its winners' IDs (mod 2^256, little-endian),
    /// kept up to date on every merge for [`super::sync::digest`].
    id_sums: HashMap<String, [u8; 32]>,
    /// namespace → its owner, parsed once (one per namespace held).
    owners: HashMap<String, PeerId>,
    clock: Hlc,
    limits: ReplicaLimits,
    /// This node's own namespace (not counted in `total_bytes`).
    own: Option<String>,
    /// namespace → bytes held ([`weight`] of its winners).
    bytes: HashMap<String, usize>,
    /// Bytes held for namespaces other than `own`.
    others_bytes: usize,
    /// Keys whose winner a revocation dropped, not yet reported.
    purged: Vec<(String, String)>,
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty replica with these limits; `own` (this node's namespace)
    /// does not count towards their total.
    pub fn with_limits(limits: ReplicaLimits, own: Option<String>) -> Self {
        Self { limits, own, ..Self::default() }
    }

    /// Verifies `entry` (signature, limits, authorisation, time) and merges
    /// it. A refused entry changes nothing.
    pub fn apply(&mut self, entry: Entry, now_ms: u64) -> Result<Applied, EntryError> {
        let applied = self.check(&entry, Some(now_ms))?;
        if applied == Applied::Changed {
            self.fits(&entry, 0, 0)?;
            self.merge(entry);
        }
        Ok(applied)
    }

    /// Whether `entry` fits the limits, with `pending` new keys and
    /// `pending_bytes` more bytes of its namespace (and of the total) not
    /// merged yet. If it does: whether it adds a key, and the bytes it adds.
    fn fits(&self, entry: &Entry, pending: usize, pending_bytes: isize) -> Result<(bool, isize), EntryError> {
        let full = |detail: String| Err(EntryError { reason: EntryRejection::Full, detail });
        let current = self.namespaces.get(&entry.namespace).and_then(|keys| keys.get(&entry.key));
        let keys = self.len(&entry.namespace) + pending;
        if current.is_none() && keys >= self.limits.entries_per_namespace {
            return full(format!("the namespace holds {keys} keys, the most it may"));
        }
        let added = weight(entry) as isize - current.map_or(0, |slot| weight(&slot.entry)) as isize;
        let fits = Ok((current.is_none(), added));
        let grows = added + pending_bytes;
        if grows <= 0 {
            return fits;
        }
        let bytes = self.bytes.get(&entry.namespace).copied().unwrap_or(0);
        if bytes + grows as usize > self.limits.bytes_per_namespace {
            return full(format!(
                "the namespace would hold more than {} bytes",
                self.limits.bytes_per_namespace
            ));
        }
        if self.own.as_deref() != Some(entry.namespace.as_str())
            && self.others_bytes + grows as usize > self.limits.total_bytes
        {
            return full(format!(
                "this replica holds {} bytes of others' state, the most it may",
                self.others_bytes
            ));
        }
        fits
    }

    /// Keys whose winner a revocation dropped since the last call.
    pub fn take_purged(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.purged)
    }

    /// What applying `entry` would do, without doing it: every check, then
    /// the merge decision. With `now_ms`, timestamps beyond the allowed
    /// clock skew are refused.
    pub fn check(&self, entry: &Entry, now_ms: Option<u64>) -> Result<Applied, EntryError> {
        if self.holds(entry) {
            return Ok(Applied::Duplicate);
        }
        entry.verify()?;
        self.judge(entry, now_ms)
    }

    /// Whether this exact entry is already the winner of its key (gossip
    /// and reconciliation both deliver it): nothing to verify, nothing to do.
    fn holds(&self, entry: &Entry) -> bool {
        self.namespaces
            .get(&entry.namespace)
            .and_then(|keys| keys.get(&entry.key))
            .is_some_and(|slot| slot.entry == *entry)
    }

    /// The checks after the signature: time, authorisation, then the merge
    /// decision.
    fn judge(&self, entry: &Entry, now_ms: Option<u64>) -> Result<Applied, EntryError> {
        if let Some(now_ms) = now_ms
            && Hlc::millis(entry.timestamp) > now_ms + MAX_CLOCK_SKEW_MS
        {
            return Err(EntryError {
                reason: EntryRejection::FutureTimestamp,
                detail: format!("{} ms ahead of this clock", Hlc::millis(entry.timestamp) - now_ms),
            });
        }
        self.authorize(entry)?;
        let current = self.namespaces.get(&entry.namespace).and_then(|keys| keys.get(&entry.key));
        Ok(match current {
            Some(slot) if !wins(entry, &entry.id(), &slot.entry, &slot.id) => Applied::Superseded,
            _ => Applied::Changed,
        })
    }

    /// Applies a batch of entries from the network or a store: signatures
    /// verified together ([`Entry::verify_all`]), access-list entries first
    /// (so a grant and the writes it allows may travel together). The new
    /// winners of each part are handed to `persist` before they become
    /// visible; if it fails, that part changes nothing and its error is
    /// returned. One outcome per entry, in the order applied. `now_ms` is
    /// `None` for entries read back from this node's own store (not judged
    /// against the current time).
    pub fn apply_all<E>(
        &mut self,
        entries: Vec<Entry>,
        now_ms: Option<u64>,
        persist: impl FnMut(&[&Entry]) -> Result<(), E>,
    ) -> Result<Vec<Outcome>, E> {
        self.apply_parts(entries, now_ms, Signatures::Check, persist)
    }

    /// [`Replica::apply_all`] for entries this node has just signed with
    /// its own key ([`Entry::sign`]): judged (authorisation, time) and
    /// merged like any other, without checking the signature it just made.
    pub(crate) fn apply_signed_here<E>(
        &mut self,
        entries: Vec<Entry>,
        now_ms: u64,
        persist: impl FnMut(&[&Entry]) -> Result<(), E>,
    ) -> Result<Vec<Outcome>, E> {
        self.apply_parts(entries, Some(now_ms), Signatures::OursFresh, persist)
    }

    /// Access-list entries first, then the rest.
    fn apply_parts<E>(
        &mut self,
        entries: Vec<Entry>,
        now_ms: Option<u64>,
        signatures: Signatures,
        mut persist: impl FnMut(&[&Entry]) -> Result<(), E>,
    ) -> Result<Vec<Outcome>, E> {
        let (acl, rest): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.key.starts_with(ACL_PREFIX));
        let mut outcomes = self.apply_part(acl, now_ms, signatures, &mut persist)?;
        outcomes.extend(self.apply_part(rest, now_ms, signatures, &mut persist)?);
        Ok(outcomes)
    }

    fn apply_part<E>(
        &mut self,
        entries: Vec<Entry>,
        now_ms: Option<u64>,
        signatures: Signatures,
        persist: &mut impl FnMut(&[&Entry]) -> Result<(), E>,
    ) -> Result<Vec<Outcome>, E> {
        // Entries already held need no verification (gossip and
        // reconciliation both deliver them).
        let held: Vec<bool> = entries.iter().map(|e| self.holds(e)).collect();
        let fresh = entries.iter().zip(&held).filter(|(_, held)| !**held).map(|(e, _)| e);
        let mut verified = match signatures {
            Signatures::Check => Entry::verify_all(fresh),
            Signatures::OursFresh => fresh.map(|_| Ok(())).collect(),
        }
        .into_iter();
        let mut results = Vec::with_capacity(entries.len());
        // Within the batch, the winner so far of each key: its index.
        let mut winners: HashMap<(&str, &str), usize> = HashMap::new();
        // Per namespace: keys new to it and bytes added by the batch so far
        // (for the limits; not judged for entries read back from the store).
        let mut pending: HashMap<&str, (usize, isize)> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let result = if held[i] {
                Ok(Applied::Duplicate)
            } else {
                match verified.next() {
                    Some(Ok(())) => self.judge(entry, now_ms),
                    Some(Err(e)) => Err(e),
                    None => Ok(Applied::Duplicate),
                }
            };
            let result = match result {
                Ok(Applied::Changed)
                    if now_ms.is_some() && !winners.contains_key(&(&entry.namespace, &entry.key)) =>
                {
                    let (keys, bytes) = pending.get(entry.namespace.as_str()).copied().unwrap_or_default();
                    self.fits(entry, keys, bytes).map(|(new_key, added)| {
                        let slot = pending.entry(&entry.namespace).or_default();
                        *slot = (slot.0 + usize::from(new_key), slot.1 + added);
                        Applied::Changed
                    })
                }
                other => other,
            };
            let result = match result {
                Ok(Applied::Changed) => match winners.get(&(&entry.namespace, &entry.key)) {
                    Some(&j) if entries[j] == *entry => Ok(Applied::Duplicate),
                    Some(&j) if wins(&entries[j], &entries[j].id(), entry, &entry.id()) => {
                        Ok(Applied::Superseded)
                    }
                    Some(&j) => {
                        results[j] = Ok(Applied::Superseded);
                        winners.insert((&entry.namespace, &entry.key), i);
                        Ok(Applied::Changed)
                    }
                    None => {
                        winners.insert((&entry.namespace, &entry.key), i);
                        Ok(Applied::Changed)
                    }
                },
                other => other,
            };
            results.push(result);
        }
        let mut changed: Vec<usize> = winners.into_values().collect();
        changed.sort_unstable();
        persist(&changed.iter().map(|&i| &entries[i]).collect::<Vec<_>>())?;
        let outcomes = entries
            .into_iter()
            .zip(results)
            .map(|(entry, result)| {
                let outcome = Outcome {
                    namespace: entry.namespace.clone(),
                    key: entry.key.clone(),
                    timestamp: entry.timestamp,
                    result,
                };
                if outcome.result == Ok(Applied::Changed) {
                    self.merge(entry);
                }
                outcome
            })
            .collect();
        Ok(outcomes)
    }

    /// Makes an entry that [`Replica::check`] found `Changed` the winner
    /// of its key, without checking it again.
    pub(crate) fn merge(&mut self, entry: Entry) {
        let id = entry.id();
        self.clock.observe(entry.timestamp);
        // The namespace's strings are cloned only the first time it is seen.
        if !self.namespaces.contains_key(&entry.namespace) {
            self.namespaces.insert(entry.namespace.clone(), BTreeMap::new());
            self.id_sums.insert(entry.namespace.clone(), [0; 32]);
            if let Ok(owner) = entry.namespace.parse() {
                self.owners.insert(entry.namespace.clone(), owner);
            }
        }
        let freed = self.get(&entry.namespace, &entry.key).map_or(0, weight);
        self.count_bytes(&entry.namespace, weight(&entry), freed);
        let keys = self.namespaces.get_mut(&entry.namespace).expect("inserted above");
        let sum = self.id_sums.get_mut(&entry.namespace).expect("inserted with the namespace");
        if let Some(old) = keys.get(&entry.key) {
            self.by_id.remove(&old.id);
            sub_id(sum, &old.id);
        }
        add_id(sum, &id);
        self.by_id.insert(id, (entry.namespace.clone(), entry.key.clone()));
        let revoked = entry
            .key
            .strip_prefix(ACL_PREFIX)
            .filter(|_| entry.json().ok().flatten() != Some(serde_json::Value::Bool(true)))
            .and_then(|writer| writer.parse::<PeerId>().ok())
            .map(|writer| (entry.namespace.clone(), writer, entry.timestamp));
        match keys.get_mut(&entry.key) {
            Some(slot) => *slot = Slot { entry, id },
            None => {
                keys.insert(entry.key.clone(), Slot { entry, id });
            }
        }
        if let Some((namespace, writer, at)) = revoked {
            self.purge(&namespace, &writer, at);
        }
    }

    fn count_bytes(&mut self, namespace: &str, added: usize, freed: usize) {
        if let Some(bytes) = self.bytes.get_mut(namespace) {
            *bytes = (*bytes + added).saturating_sub(freed);
        } else {
            self.bytes.insert(namespace.to_owned(), added.saturating_sub(freed));
        }
        if self.own.as_deref() != Some(namespace) {
            self.others_bytes = (self.others_bytes + added).saturating_sub(freed);
        }
    }

    /// Drops `writer`'s entries of `namespace` written at or after `at`,
    /// when its access was revoked.
    fn purge(&mut self, namespace: &str, writer: &PeerId, at: u64) {
        let author = writer.to_bytes();
        let Some(keys) = self.namespaces.get_mut(namespace) else { return };
        let gone: Vec<String> = keys
            .iter()
            .filter(|(key, slot)| {
                slot.entry.author == author && slot.entry.timestamp >= at && !is_internal_key(key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut freed = 0;
        for key in gone {
            let slot = keys.remove(&key).expect("listed above");
            self.by_id.remove(&slot.id);
            sub_id(self.id_sums.get_mut(namespace).expect("kept with the namespace"), &slot.id);
            freed += weight(&slot.entry);
            self.purged.push((namespace.to_owned(), key));
        }
        self.count_bytes(namespace, 0, freed);
    }

    /// The owner of a namespace writes it, and so does every node the
    /// owner's access-control list names; only the owner edits that list.
    fn authorize(&self, entry: &Entry) -> Result<(), EntryError> {
        let author = entry.author_id()?;
        let owner = match self.owners.get(&entry.namespace) {
            Some(owner) => *owner,
            None => entry.namespace.parse().map_err(|_| EntryError {
                reason: EntryRejection::Malformed,
                detail: "namespace is not a node ID".into(),
            })?,
        };
        if author == owner {
            return Ok(());
        }
        let unauthorized = |detail: String| Err(EntryError { reason: EntryRejection::Unauthorized, detail });
        if is_internal_key(&entry.key) {
            // The access list, KEM keys and networks: an authorised writer
            // must not replace the keys others encrypt to, nor the lists.
            return unauthorized(format!("only the owner {owner} writes {}", entry.key));
        }
        let acl_key = format!("{ACL_PREFIX}{author}");
        // Granted now, or revoked only after this entry was written.
        let listed = self.get(&entry.namespace, &acl_key).is_some_and(|acl| {
            acl.json().ok().flatten() == Some(serde_json::Value::Bool(true))
                || acl.timestamp > entry.timestamp
        });
        if listed { Ok(()) } else { unauthorized(format!("{author} may not write {owner}'s namespace")) }
    }

    /// A timestamp for a new local write, after everything seen.
    pub fn next_timestamp(&mut self, now_ms: u64) -> u64 {
        self.clock.tick(now_ms)
    }

    /// The winning entry of a key (a tombstone if it was deleted).
    pub fn get(&self, namespace: &str, key: &str) -> Option<&Entry> {
        self.namespaces.get(namespace)?.get(key).map(|s| &s.entry)
    }

    /// The winning entries of a namespace, in key order, tombstones included.
    pub fn entries<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.namespaces.get(namespace).into_iter().flat_map(|keys| keys.values().map(|s| &s.entry))
    }

    /// The winning entries of a namespace whose keys start with `prefix`,
    /// in key order, tombstones included.
    pub fn entries_under<'a>(
        &'a self,
        namespace: &str,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.namespaces.get(namespace).into_iter().flat_map(move |keys| {
            keys.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                .take_while(move |(key, _)| key.starts_with(prefix))
                .map(|(_, slot)| &slot.entry)
        })
    }

    /// The live values of a namespace as a JSON object (deleted keys and the
    /// access list left out).
    pub fn to_json(&self, namespace: &str) -> serde_json::Map<String, serde_json::Value> {
        self.entries(namespace)
            .filter(|e| !super::entry::is_internal_key(&e.key))
            .filter_map(|e| Some((e.key.clone(), e.json().ok()??)))
            .collect()
    }

    /// How many namespaces this replica holds.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// How many entries (winners, tombstones included) this replica holds.
    pub fn entry_count(&self) -> usize {
        self.by_id.len()
    }

    /// Every namespace this replica holds.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// The winning entry with this ID, if it is one.
    pub fn by_id(&self, id: &[u8; 32]) -> Option<&Entry> {
        let (ns, key) = self.by_id.get(id)?;
        self.get(ns, key)
    }

    /// `(timestamp, id)` of every winning entry of a namespace: the set two
    /// replicas reconcile.
    pub fn sync_items(&self, namespace: &str) -> Vec<(u64, [u8; 32])> {
        self.namespaces
            .get(namespace)
            .map(|keys| keys.values().map(|s| (s.entry.timestamp, s.id)).collect())
            .unwrap_or_default()
    }

    /// The sum of a namespace's winning entry IDs (mod 2^256).
    pub fn id_sum(&self, namespace: &str) -> [u8; 32] {
        self.id_sums.get(namespace).copied().unwrap_or([0; 32])
    }

    /// How many keys (tombstones included) a namespace holds.
    pub fn len(&self, namespace: &str) -> usize {
        self.namespaces.get(namespace).map_or(0, BTreeMap::len)
    }

    /// Whether a namespace holds nothing.
    pub fn is_empty(&self, namespace: &str) -> bool {
        self.len(namespace) == 0
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;
    use crate::Identity;

    const NOW: u64 = 1_700_000_000_000;

    fn ids() -> (Identity, Identity, String) {
        let owner = Identity::from_seed([1; 32]);
        let other = Identity::from_seed([2; 32]);
        let ns = owner.peer_id().to_base58();
        (owner, other, ns)
    }

    #[test]
    fn later_write_wins_and_ties_break_on_author_then_id() {
        let (owner, other, ns) = ids();
        let mut r = Replica::new();
        let grant =
            Entry::sign(&owner, &ns, &format!("_acl/{}", other.peer_id()), Some(&json!(true)), 1).unwrap();
        r.apply(grant, NOW).unwrap();
        let t = Hlc::from_millis(NOW);
        let a = Entry::sign(&owner, &ns, "k", Some(&json!("a")), t).unwrap();
        let b = Entry::sign(&other, &ns, "k", Some(&json!("b")), t).unwrap();
        let later = Entry::sign(&owner, &ns, "k", Some(&json!("later")), t + 1).unwrap();
        let expected_tie = if other.peer_id().to_bytes() > owner.peer_id().to_bytes() { "b" } else { "a" };

        for order in [[&a, &b], [&b, &a]] {
            let mut r = r.clone();
            for e in order {
                r.apply(e.clone(), NOW).unwrap();
            }
            assert_eq!(r.get(&ns, "k").unwrap().json().unwrap(), Some(json!(expected_tie)));
            assert_eq!(r.apply(later.clone(), NOW).unwrap(), Applied::Changed);
            assert_eq!(r.apply(a.clone(), NOW).unwrap(), Applied::Superseded);
            assert_eq!(r.apply(later.clone(), NOW).unwrap(), Applied::Duplicate);
        }
    }

    #[test]
    fn deletes_are_tombstones_that_win_by_time() {
        let (owner, _, ns) = ids();
        let mut r = Replica::new();
        let t = r.next_timestamp(NOW);
        r.apply(Entry::sign(&owner, &ns, "k", Some(&json!(1)), t).unwrap(), NOW).unwrap();
        let t2 = r.next_timestamp(NOW);
        r.apply(Entry::sign(&owner, &ns, "k", None, t2).unwrap(), NOW).unwrap();
        assert!(r.get(&ns, "k").unwrap().is_tombstone());
        assert!(r.to_json(&ns).is_empty());
    }

    #[test]
    fn only_the_owner_and_listed_writers_may_write() {
        let (owner, other, ns) = ids();
        let mut r = Replica::new();
        let intruder = Entry::sign(&other, &ns, "k", Some(&json!(1)), 1).unwrap();
        assert_eq!(r.apply(intruder.clone(), NOW).unwrap_err().reason, EntryRejection::Unauthorized);
        let self_grant =
            Entry::sign(&other, &ns, &format!("_acl/{}", other.peer_id()), Some(&json!(true)), 1);
        assert_eq!(r.apply(self_grant.unwrap(), NOW).unwrap_err().reason, EntryRejection::Unauthorized);
        assert!(r.is_empty(&ns));

        let grant =
            Entry::sign(&owner, &ns, &format!("_acl/{}", other.peer_id()), Some(&json!(true)), 2).unwrap();
        r.apply(grant, NOW).unwrap();
        assert_eq!(r.apply(intruder, NOW).unwrap(), Applied::Changed);
        assert_eq!(r.to_json(&ns).get("k"), Some(&json!(1)), "the access list is not part of the data");
    }

    #[test]
    fn a_batch_ends_as_the_same_entries_applied_one_by_one() {
        let (owner, other, ns) = ids();
        let t = Hlc::from_millis(NOW);
        let grant =
            Entry::sign(&owner, &ns, &format!("_acl/{}", other.peer_id()), Some(&json!(true)), t).unwrap();
        let by_other = Entry::sign(&other, &ns, "shared", Some(&json!("from other")), t + 1).unwrap();
        let first = Entry::sign(&owner, &ns, "k", Some(&json!(1)), t + 2).unwrap();
        let second = Entry::sign(&owner, &ns, "k", Some(&json!(2)), t + 3).unwrap();
        let mut forged = Entry::sign(&owner, &ns, "f", Some(&json!(1)), t).unwrap();
        forged.value = Some("2".into());
        // The grant travels after the write it allows; the later write of k first.
        let batch = vec![by_other, second.clone(), first, forged, grant, second];

        let mut r = Replica::new();
        let outcomes = r.apply_all(batch, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
        let result = |key: &str| {
            outcomes.iter().filter(|o| o.key == key).map(|o| o.result.clone()).collect::<Vec<_>>()
        };
        assert_eq!(result("shared"), vec![Ok(Applied::Changed)], "the grant was applied first");
        assert_eq!(result("k"), vec![Ok(Applied::Changed), Ok(Applied::Superseded), Ok(Applied::Duplicate)]);
        assert_eq!(result("f")[0].as_ref().unwrap_err().reason, EntryRejection::BadSignature);
        assert_eq!(r.to_json(&ns), json!({"k": 2, "shared": "from other"}).as_object().unwrap().clone());

        // A store that fails leaves the part it failed on invisible.
        let mut r2 = Replica::new();
        let write = Entry::sign(&owner, &ns, "k", Some(&json!(1)), t).unwrap();
        assert_eq!(r2.apply_all(vec![write], Some(NOW), |_| Err("disk full")), Err("disk full"));
        assert!(r2.is_empty(&ns));
    }

    #[test]
    fn timestamps_beyond_the_allowed_skew_are_refused() {
        let (owner, _, ns) = ids();
        let mut r = Replica::new();
        let ahead = Hlc::from_millis(NOW + MAX_CLOCK_SKEW_MS + 1_000);
        let e = Entry::sign(&owner, &ns, "k", Some(&json!(1)), ahead).unwrap();
        assert_eq!(r.apply(e, NOW).unwrap_err().reason, EntryRejection::FutureTimestamp);
        let near = Hlc::from_millis(NOW + 1_000);
        r.apply(Entry::sign(&owner, &ns, "k", Some(&json!(1)), near).unwrap(), NOW).unwrap();
        assert!(r.next_timestamp(NOW) > near, "the clock moved past what it saw");
    }

    #[test]
    fn a_listed_writer_cannot_replace_the_owners_internal_keys() {
        let (owner, writer, ns) = ids();
        let mut r = Replica::new();
        let grant =
            Entry::sign(&owner, &ns, &format!("_acl/{}", writer.peer_id()), Some(&json!(true)), 1).unwrap();
        r.apply(grant, NOW).unwrap();
        let kem = Entry::sign(&owner, &ns, "_kem/3", Some(&json!({"key": "owner's"})), 2).unwrap();
        r.apply(kem, NOW).unwrap();
        for key in ["_kem/3", "_net/x", "_nets/x", "_acl/someone"] {
            let overwrite = Entry::sign(&writer, &ns, key, Some(&json!({"key": "writer's"})), 3).unwrap();
            assert_eq!(r.apply(overwrite, NOW).unwrap_err().reason, EntryRejection::Unauthorized, "{key}");
        }
        assert_eq!(r.get(&ns, "_kem/3").unwrap().json().unwrap(), Some(json!({"key": "owner's"})));
        let data = Entry::sign(&writer, &ns, "k", Some(&json!(1)), 3).unwrap();
        assert_eq!(r.apply(data, NOW).unwrap(), Applied::Changed, "the data keys stay open to it");
    }

    /// Every order of a writer's entries, written before and after its
    /// revocation, and the revocation itself ends in the same replica,
    /// and reading that replica back from its stored winners changes
    /// nothing.
    #[test]
    fn a_revocation_converges_whatever_the_order_and_survives_a_restart() {
        let (owner, writer, ns) = ids();
        let acl = format!("_acl/{}", writer.peer_id());
        let grant = Entry::sign(&owner, &ns, &acl, Some(&json!(true)), 10).unwrap();
        let base = Entry::sign(&owner, &ns, "k", Some(&json!("owner")), 15).unwrap();
        let before = Entry::sign(&writer, &ns, "a", Some(&json!("before")), 20).unwrap();
        let revoke = Entry::sign(&owner, &ns, &acl, Some(&json!(false)), 30).unwrap();
        let after = Entry::sign(&writer, &ns, "k", Some(&json!("after")), 40).unwrap();
        let all = [grant, base, before, revoke, after];
        let mut results = Vec::new();
        // Every permutation of the five, one entry at a time.
        let mut order: Vec<usize> = (0..all.len()).collect();
        permutations(&mut order, 0, &mut |order| {
            let mut r = Replica::new();
            for &i in order {
                let _ = r.apply(all[i].clone(), NOW);
            }
            // Then catch-up, which offers again what other replicas hold.
            for &i in order {
                let _ = r.apply(all[i].clone(), NOW);
            }
            results.push((r.to_json(&ns), r.id_sum(&ns)));
        });
        let (first, first_sum) = &results[0];
        for (json, sum) in &results {
            assert_eq!((json, sum), (first, first_sum));
        }
        // The writer's entry from before the revocation stays; the one from
        // after it does not, and the owner's value it replaced is there.
        assert_eq!(first.get("a"), Some(&json!("before")));
        assert_eq!(first.get("k"), Some(&json!("owner")));

        // A replica that took `after` before the revocation reports the key
        // it dropped, then catches the owner's value up again.
        let mut r = Replica::new();
        for e in [&all[0], &all[1], &all[2], &all[4]] {
            r.apply(e.clone(), NOW).unwrap();
        }
        assert_eq!(r.to_json(&ns).get("k"), Some(&json!("after")));
        r.apply(all[3].clone(), NOW).unwrap();
        assert_eq!(r.take_purged(), [(ns.clone(), "k".to_owned())]);
        assert_eq!(r.to_json(&ns).get("k"), None);
        assert_eq!(r.apply(all[1].clone(), NOW).unwrap(), Applied::Changed, "the owner's value comes back");
        // Restart: what the store kept (every winner it was handed,
        // including the dropped one) reads back to the same state.
        let stored: Vec<Entry> = all.to_vec();
        let mut reopened = Replica::new();
        reopened.apply_all(stored, None, |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(reopened.to_json(&ns), r.to_json(&ns));
    }

    fn permutations(items: &mut Vec<usize>, k: usize, visit: &mut impl FnMut(&[usize])) {
        if k == items.len() {
            return visit(items);
        }
        for i in k..items.len() {
            items.swap(k, i);
            permutations(items, k + 1, visit);
            items.swap(k, i);
        }
    }

    #[test]
    fn namespaces_and_the_replica_are_bounded() {
        let (owner, writer, ns) = ids();
        let limits = ReplicaLimits { entries_per_namespace: 3, bytes_per_namespace: 1000, total_bytes: 1500 };
        let mut r = Replica::with_limits(limits, None);
        let put = |r: &mut Replica, key: &str, value: serde_json::Value, t: u64| {
            r.apply(Entry::sign(&owner, &ns, key, Some(&value), t).unwrap(), NOW)
        };
        put(&mut r, "a", json!(1), 1).unwrap();
        put(&mut r, "b", json!(1), 2).unwrap();
        r.apply(Entry::sign(&owner, &ns, "b", None, 3).unwrap(), NOW).unwrap();
        put(&mut r, "c", json!(1), 4).unwrap();
        assert_eq!(
            put(&mut r, "d", json!(1), 5).unwrap_err().reason,
            EntryRejection::Full,
            "tombstones count"
        );
        assert_eq!(put(&mut r, "a", json!(2), 6).unwrap(), Applied::Changed, "existing keys still change");
        let big = json!("x".repeat(900));
        assert_eq!(put(&mut r, "a", big.clone(), 7).unwrap_err().reason, EntryRejection::Full, "bytes");
        // A batch cannot pass the limit either.
        let mut r2 = Replica::with_limits(
            ReplicaLimits { entries_per_namespace: 3, bytes_per_namespace: 1 << 20, total_bytes: 1 << 20 },
            None,
        );
        let batch: Vec<Entry> = (0..5)
            .map(|i| Entry::sign(&owner, &ns, &format!("k{i}"), Some(&json!(i)), 10 + i).unwrap())
            .collect();
        let outcomes = r2.apply_all(batch, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(outcomes.iter().filter(|o| o.result.is_ok()).count(), 3);
        assert_eq!(r2.len(&ns), 3);
        // The total, across namespaces of others.
        let other_ns = writer.peer_id().to_base58();
        let mut r3 = Replica::with_limits(
            ReplicaLimits { entries_per_namespace: 100, bytes_per_namespace: 1100, total_bytes: 1500 },
            Some(ns.clone()),
        );
        let e = |id: &Identity, ns: &str, key: &str, t| Entry::sign(id, ns, key, Some(&big), t).unwrap();
        r3.apply(e(&writer, &other_ns, "a", 1), NOW).unwrap();
        let third = Identity::from_seed([3; 32]);
        let third_ns = third.peer_id().to_base58();
        let over = r3.apply(e(&third, &third_ns, "a", 2), NOW).unwrap_err();
        assert!(over.reason == EntryRejection::Full && over.detail.contains("others"), "{over}");
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            let own = Entry::sign(&owner, &ns, key, Some(&json!("y".repeat(200))), i as u64 + 1).unwrap();
            r3.apply(own, NOW).unwrap();
        }
        // Read back from the store, nothing is refused.
        let stored: Vec<Entry> = (0..5).map(|i| e(&writer, &other_ns, &format!("s{i}"), i)).collect();
        let loaded = r3.apply_all(stored, None, |_| Ok::<_, ()>(())).unwrap();
        assert!(loaded.iter().all(|o| o.result.is_ok()));
    }
}
