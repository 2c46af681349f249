//! A replica of any number of namespaces: it admits verified, authorised
//! entries and keeps, per `(namespace, key)`, the one that wins the merge.
//!
//! The merge is last-writer-wins on `(timestamp, author, id)`: a total
//! order, so every replica that has seen the same entries keeps the same
//! winners, whatever order they arrived in, however often.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;

use super::{
    Hlc,
    entry::{ACL_PREFIX, Entry, EntryError, EntryRejection},
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
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `entry` (signature, limits, authorisation, time) and merges
    /// it. A refused entry changes nothing.
    pub fn apply(&mut self, entry: Entry, now_ms: u64) -> Result<Applied, EntryError> {
        let applied = self.check(&entry, Some(now_ms))?;
        if applied == Applied::Changed {
            self.merge(entry);
        }
        Ok(applied)
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
        let keys = self.namespaces.get_mut(&entry.namespace).expect("inserted above");
        let sum = self.id_sums.get_mut(&entry.namespace).expect("inserted with the namespace");
        if let Some(old) = keys.get(&entry.key) {
            self.by_id.remove(&old.id);
            sub_id(sum, &old.id);
        }
        add_id(sum, &id);
        self.by_id.insert(id, (entry.namespace.clone(), entry.key.clone()));
        match keys.get_mut(&entry.key) {
            Some(slot) => *slot = Slot { entry, id },
            None => {
                keys.insert(entry.key.clone(), Slot { entry, id });
            }
        }
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
        if entry.key.starts_with(ACL_PREFIX) {
            return unauthorized(format!("only the owner {owner} edits the access list"));
        }
        let acl_key = format!("{ACL_PREFIX}{author}");
        let listed = self
            .get(&entry.namespace, &acl_key)
            .and_then(|e| e.json().ok().flatten())
            .is_some_and(|v| v == serde_json::Value::Bool(true));
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
}
