//! A node's state as its user sees it: a [`Replica`] and writes signed
//! with the node's own key. Pure: what changed is handed back to the
//! caller, which makes it durable ([`crate::store`]) before it
//! acknowledges anything.

use serde_json::Value;

use super::{Applied, Entry, EntryError, Outcome, Replica, ReplicaLimits};
use crate::Identity;

/// A storage failure, with what the backend said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state storage: {0}")]
pub struct StoreError(pub String);

/// Why a state call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The entry was refused (too large, not authorised, …).
    #[error("{0}")]
    Rejected(#[from] EntryError),
    /// The store failed: the write is not durable (the node holds it in
    /// memory and keeps trying to save it).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// `create` of a key that already has a value.
    #[error("key '{0}' already exists (use update to change it)")]
    Exists(String),
    /// A private value that could not be sealed, or not in this node's own
    /// namespace.
    #[error("private value: {0}")]
    Private(String),
    /// `delete` of a key that has no value.
    #[error("key '{0}' does not exist")]
    Missing(String),
}

/// How a write treats an existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Set the key whether or not it has a value.
    Update,
    /// Set a key that has no value yet.
    Create,
    /// Remove a key that has a value.
    Delete,
}

/// This node's view of the replicated state.
pub struct LocalState {
    identity: Identity,
    replica: Replica,
}

/// What a batch from elsewhere did: each entry's outcome, and the entries
/// that became winners (to be stored).
pub struct Ingested {
    /// One per entry, in the order applied.
    pub outcomes: Vec<Outcome>,
    /// The new winners, to make durable.
    pub winners: Vec<Entry>,
}

impl LocalState {
    /// The state of `identity`, from the entries a store held. Entries that
    /// no longer verify (a damaged file) are skipped and counted, never
    /// trusted. Returns the state and how many were skipped.
    pub fn open(identity: Identity, stored: Vec<Entry>) -> (Self, usize) {
        Self::open_with_limits(identity, stored, ReplicaLimits::default())
    }

    /// [`LocalState::open`] with these limits on what peers may add.
    pub fn open_with_limits(identity: Identity, stored: Vec<Entry>, limits: ReplicaLimits) -> (Self, usize) {
        let mut replica = Replica::with_limits(limits, Some(identity.peer_id().to_base58()));
        let loaded = replica.apply_all(stored, None, |_| Ok::<_, ()>(())).unwrap_or_default();
        let skipped = loaded.iter().filter(|o| o.result.is_err()).count();
        (Self { identity, replica }, skipped)
    }

    /// This node's own namespace (its node ID).
    pub fn own_namespace(&self) -> String {
        self.identity.peer_id().to_base58()
    }

    /// The replica (read-only).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The live value of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<Value> {
        self.replica.get(namespace, key)?.json().ok()?
    }

    /// Writes `key` of `namespace` (this node's own, or one whose owner
    /// granted this node): `Update` sets it, `Create` sets a key with no
    /// value yet, `Delete` removes a key that has one (`value` ignored).
    /// Returns the signed entry, now the key's winner here; the caller
    /// stores it.
    pub fn write(
        &mut self,
        namespace: &str,
        key: &str,
        value: Option<&Value>,
        mode: WriteMode,
        now_ms: u64,
    ) -> Result<Entry, StateError> {
        let exists = self.get(namespace, key).is_some();
        let value = match mode {
            WriteMode::Create if exists => return Err(StateError::Exists(key.to_owned())),
            WriteMode::Delete if !exists => return Err(StateError::Missing(key.to_owned())),
            WriteMode::Delete => None,
            WriteMode::Update | WriteMode::Create => value,
        };
        let timestamp = self.replica.next_timestamp(now_ms);
        let entry = Entry::sign(&self.identity, namespace, key, value, timestamp)?;
        let outcome = self
            .replica
            .apply_signed_here(vec![entry.clone()], now_ms, |_| Ok::<_, ()>(()))
            .unwrap_or_default()
            .pop();
        if let Some(outcome) = outcome {
            outcome.result?;
        }
        Ok(entry)
    }

    /// `update`: sets a key of this node's namespace.
    pub fn update(&mut self, key: &str, value: &Value, now_ms: u64) -> Result<Entry, StateError> {
        self.write(&self.own_namespace(), key, Some(value), WriteMode::Update, now_ms)
    }

    /// `create`: sets a key of this node's namespace that has no value yet.
    pub fn create(&mut self, key: &str, value: &Value, now_ms: u64) -> Result<Entry, StateError> {
        self.write(&self.own_namespace(), key, Some(value), WriteMode::Create, now_ms)
    }

    /// `delete`: removes a key of this node's namespace that has a value.
    pub fn delete(&mut self, key: &str, now_ms: u64) -> Result<Entry, StateError> {
        self.write(&self.own_namespace(), key, None, WriteMode::Delete, now_ms)
    }

    /// Merges an entry from anywhere (a peer, a sync).
    pub fn ingest(&mut self, entry: Entry, now_ms: u64) -> Result<Applied, EntryError> {
        match self.ingest_all(vec![entry], now_ms).outcomes.pop() {
            Some(outcome) => outcome.result,
            None => Ok(Applied::Duplicate),
        }
    }

    /// Merges a batch (see [`Replica::apply_all`]: signatures verified
    /// together, access-list entries first).
    pub fn ingest_all(&mut self, entries: Vec<Entry>, now_ms: u64) -> Ingested {
        let mut winners = Vec::new();
        let outcomes = self
            .replica
            .apply_all(entries, Some(now_ms), |changed| {
                winners.extend(changed.iter().map(|e| (*e).clone()));
                Ok::<_, ()>(())
            })
            .unwrap_or_default();
        Ingested { outcomes, winners }
    }

    /// Keys whose winner a revocation dropped since the last call.
    pub fn take_purged(&mut self) -> Vec<(String, String)> {
        self.replica.take_purged()
    }

    /// A namespace's data as one JSON object.
    pub fn data(&self, namespace: &str) -> Value {
        Value::Object(self.replica.to_json(namespace))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn writes_are_typed_and_reload_from_what_was_stored() {
        let id = Identity::from_seed([5; 32]);
        let (mut state, _) = LocalState::open(id.clone(), Vec::new());
        let ns = state.own_namespace();
        let mut stored = std::collections::BTreeMap::new();
        let mut keep = |e: Entry| {
            stored.insert(e.key.clone(), e);
        };
        keep(state.update("name", &json!("John"), NOW).unwrap());
        keep(state.update("age", &json!(25), NOW).unwrap());
        keep(state.create("config", &json!({"theme": "dark", "fontSize": 14}), NOW).unwrap());
        assert!(matches!(state.create("age", &json!(1), NOW), Err(StateError::Exists(_))));
        keep(state.delete("name", NOW).unwrap());
        assert!(matches!(state.delete("name", NOW), Err(StateError::Missing(_))));

        let (reopened, skipped) = LocalState::open(id, stored.into_values().collect());
        assert_eq!(reopened.data(&ns), json!({"age": 25, "config": {"theme": "dark", "fontSize": 14}}));
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_batch_hands_back_only_its_new_winners() {
        let owner = Identity::from_seed([9; 32]);
        let ns = owner.peer_id().to_base58();
        let old = Entry::sign(&owner, &ns, "k", Some(&json!(1)), 1 << 16).unwrap();
        let new = Entry::sign(&owner, &ns, "k", Some(&json!(2)), 2 << 16).unwrap();
        let other = Entry::sign(&owner, &ns, "j", Some(&json!(3)), 1 << 16).unwrap();
        let (mut state, _) = LocalState::open(Identity::from_seed([1; 32]), vec![new.clone()]);
        let ingested = state.ingest_all(vec![old, other.clone(), new.clone()], NOW);
        assert_eq!(ingested.winners, vec![other]);
        assert_eq!(ingested.outcomes.len(), 3);
        assert_eq!(state.get(&ns, "k"), Some(json!(2)));
    }

    #[test]
    fn damaged_stored_entries_are_skipped_not_trusted() {
        let id = Identity::from_seed([5; 32]);
        let ns = id.peer_id().to_base58();
        let good = Entry::sign(&id, &ns, "a", Some(&json!(1)), 1 << 16).unwrap();
        let mut bad = Entry::sign(&id, &ns, "b", Some(&json!(2)), 1 << 16).unwrap();
        bad.value = Some("3".into());
        let (state, skipped) = LocalState::open(id, vec![good, bad]);
        assert_eq!(skipped, 1);
        assert_eq!(state.data(&ns), json!({"a": 1}));
    }
}
