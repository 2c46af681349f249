//! A node's state as its user sees it: a [`Replica`] over a durable
//! [`Store`], and writes signed with the node's own key. A write returns
//! only after the store has made it durable.

use std::collections::BTreeMap;

use libp2p::PeerId;
use serde_json::Value;

use super::{Applied, Entry, EntryError, Outcome, Replica};
use crate::{Identity, messaging::Held};

/// Where entries are kept across restarts (redb natively, IndexedDB in the
/// browser, memory in tests). `put` returns once the entry is durable.
pub trait Store {
    /// Every stored entry, to rebuild the replica at start.
    fn load(&self) -> Result<Vec<Entry>, StoreError>;
    /// Stores each entry as the winner of its `(namespace, key)`, replacing
    /// the previous one; all durably, in one transaction where the backend
    /// has them.
    fn put(&mut self, entries: &[&Entry]) -> Result<(), StoreError>;

    /// The messages this node holds for offline peers (its mailbox), with
    /// their recipients, to restore at start. Backends that keep no mailbox
    /// (the browser's) hold none.
    fn load_mail(&self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        Ok(Vec::new())
    }
    /// Keeps a held message for `recipient`, durably.
    fn put_mail(&mut self, _recipient: &PeerId, _held: &Held) -> Result<(), StoreError> {
        Ok(())
    }
    /// Forgets held messages (delivered or expired), by recipient, author
    /// and message ID.
    fn drop_mail(&mut self, _messages: &[(PeerId, PeerId, String)]) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        (**self).load()
    }
    fn put(&mut self, entries: &[&Entry]) -> Result<(), StoreError> {
        (**self).put(entries)
    }
    fn load_mail(&self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        (**self).load_mail()
    }
    fn put_mail(&mut self, recipient: &PeerId, held: &Held) -> Result<(), StoreError> {
        (**self).put_mail(recipient, held)
    }
    fn drop_mail(&mut self, messages: &[(PeerId, PeerId, String)]) -> Result<(), StoreError> {
        (**self).drop_mail(messages)
    }
}

/// A storage failure, with what the backend said.
#[derive(Debug, thiserror::Error)]
#[error("state storage: {0}")]
pub struct StoreError(pub String);

/// Why a state call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The entry was refused (too large, not authorised, …).
    #[error("{0}")]
    Rejected(#[from] EntryError),
    /// The store failed; nothing was acknowledged.
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

/// Entries (and held messages) kept in memory only.
#[derive(Default)]
pub struct MemoryStore {
    entries: BTreeMap<(String, String), Entry>,
    mail: BTreeMap<(PeerId, PeerId, String), Held>,
}

impl MemoryStore {
    /// A store holding these entries (the last of each key wins).
    pub fn with(entries: impl IntoIterator<Item = Entry>) -> Self {
        Self {
            entries: entries.into_iter().map(|e| ((e.namespace.clone(), e.key.clone()), e)).collect(),
            mail: BTreeMap::new(),
        }
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.entries.values().cloned().collect())
    }
    fn put(&mut self, entries: &[&Entry]) -> Result<(), StoreError> {
        for &entry in entries {
            self.entries.insert((entry.namespace.clone(), entry.key.clone()), entry.clone());
        }
        Ok(())
    }
    fn load_mail(&self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        Ok(self.mail.iter().map(|((recipient, _, _), held)| (*recipient, held.clone())).collect())
    }
    fn put_mail(&mut self, recipient: &PeerId, held: &Held) -> Result<(), StoreError> {
        self.mail.insert((*recipient, held.author, held.id.clone()), held.clone());
        Ok(())
    }
    fn drop_mail(&mut self, messages: &[(PeerId, PeerId, String)]) -> Result<(), StoreError> {
        for key in messages {
            self.mail.remove(key);
        }
        Ok(())
    }
}

/// This node's view of the replicated state.
pub struct LocalState<S: Store> {
    identity: Identity,
    replica: Replica,
    store: S,
    /// Stored entries that no longer verified at load (counted, skipped).
    pub skipped_at_load: usize,
}

impl<S: Store> LocalState<S> {
    /// Loads what `store` holds. Entries that no longer verify (a damaged
    /// file) are skipped and counted, never trusted.
    pub fn open(identity: Identity, store: S) -> Result<Self, StoreError> {
        let mut replica = Replica::new();
        let loaded = replica.apply_all(store.load()?, None, |_| Ok::<_, StoreError>(()))?;
        let skipped = loaded.iter().filter(|o| o.result.is_err()).count();
        Ok(Self { identity, replica, store, skipped_at_load: skipped })
    }

    /// This node's own namespace (its node ID).
    pub fn own_namespace(&self) -> String {
        self.identity.peer_id().to_base58()
    }

    /// The replica (read-only).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The store (for the mailbox, which keeps its messages there too).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The live value of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<Value> {
        self.replica.get(namespace, key)?.json().ok()?
    }

    /// Writes `key` of `namespace` (this node's own, or one whose owner
    /// granted this node): `Update` sets it, `Create` sets a key with no
    /// value yet, `Delete` removes a key that has one (`value` ignored).
    /// Returns the signed entry once it is durable.
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
        let store = &mut self.store;
        let outcome = self
            .replica
            .apply_signed_here(vec![entry.clone()], now_ms, |winners| {
                if winners.is_empty() { Ok(()) } else { store.put(winners) }
            })?
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

    /// Merges an entry from anywhere (a peer, a sync) and stores it if it
    /// became the winner of its key.
    pub fn ingest(&mut self, entry: Entry, now_ms: u64) -> Result<Applied, StateError> {
        match self.ingest_all(vec![entry], now_ms)?.pop() {
            Some(outcome) => Ok(outcome.result?),
            None => Ok(Applied::Duplicate),
        }
    }

    /// Merges a batch (see [`Replica::apply_all`]): signatures verified
    /// together, the new winners stored in one write before they become
    /// visible. A store failure leaves the part it failed on unapplied.
    pub fn ingest_all(&mut self, entries: Vec<Entry>, now_ms: u64) -> Result<Vec<Outcome>, StoreError> {
        let store = &mut self.store;
        self.replica.apply_all(entries, Some(now_ms), |winners| {
            if winners.is_empty() { Ok(()) } else { store.put(winners) }
        })
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
    fn writes_are_typed_durable_and_reloaded() {
        let id = Identity::from_seed([5; 32]);
        let mut state = LocalState::open(id.clone(), MemoryStore::default()).unwrap();
        let ns = state.own_namespace();
        state.update("name", &json!("John"), NOW).unwrap();
        state.update("age", &json!(25), NOW).unwrap();
        state.create("config", &json!({"theme": "dark", "fontSize": 14}), NOW).unwrap();
        assert!(matches!(state.create("age", &json!(1), NOW), Err(StateError::Exists(_))));
        state.delete("name", NOW).unwrap();
        assert!(matches!(state.delete("name", NOW), Err(StateError::Missing(_))));

        let store = MemoryStore::with(state.store.load().unwrap());
        let reopened = LocalState::open(id, store).unwrap();
        assert_eq!(reopened.data(&ns), json!({"age": 25, "config": {"theme": "dark", "fontSize": 14}}));
        assert_eq!(reopened.skipped_at_load, 0);
    }

    #[test]
    fn a_store_failure_is_not_acknowledged_and_not_visible() {
        struct Broken;
        impl Store for Broken {
            fn load(&self) -> Result<Vec<Entry>, StoreError> {
                Ok(Vec::new())
            }
            fn put(&mut self, _: &[&Entry]) -> Result<(), StoreError> {
                Err(StoreError("disk full".into()))
            }
        }
        let mut state = LocalState::open(Identity::from_seed([6; 32]), Broken).unwrap();
        assert!(matches!(state.update("k", &json!(1), NOW), Err(StateError::Store(_))));
        assert_eq!(state.get(&state.own_namespace(), "k"), None);
    }

    #[test]
    fn damaged_stored_entries_are_skipped_not_trusted() {
        let id = Identity::from_seed([5; 32]);
        let ns = id.peer_id().to_base58();
        let good = Entry::sign(&id, &ns, "a", Some(&json!(1)), 1 << 16).unwrap();
        let mut bad = Entry::sign(&id, &ns, "b", Some(&json!(2)), 1 << 16).unwrap();
        bad.value = Some("3".into());
        let state = LocalState::open(id, MemoryStore::with([good, bad])).unwrap();
        assert_eq!(state.skipped_at_load, 1);
        assert_eq!(state.data(&ns), json!({"a": 1}));
    }
}
