//! Where a node keeps what must survive a restart: the replicated state's
//! entries ([`Store`]) and the sealed messages it holds for offline peers
//! ([`MailStore`]). Each home brings its own implementation (redb natively,
//! IndexedDB in the browser) and injects it at build, the y-crdt way: the
//! rest of the core never knows where bytes live. [`MemoryStore`] keeps
//! both in memory, for tests and for nodes that need no persistence.
//!
//! The contract: a commit resolves `Ok` only once its changes are durable
//! (they survive the process being killed), and the mesh acknowledges a
//! write to its caller only then. Commits run off the event loop (a writer
//! thread or task); the mesh hands a store one batch at a time and gathers
//! the changes that arrive meanwhile into the next one (group commit), so
//! a store's own queue never holds more than one batch.

mod writer;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::PeerId;
pub(crate) use writer::{Finished, Writer};

pub use crate::state::StoreError;
use crate::{messaging::Held, state::Entry};

/// A commit under way: resolves once its changes are durable, or with why
/// they are not.
pub type Commit = BoxFuture<'static, Result<(), StoreError>>;

/// Durable storage of state entries: one record per `(namespace, key)`,
/// holding that key's winning entry.
pub trait Store: Send {
    /// Every stored entry, read once when the node starts.
    fn load(&mut self) -> Result<Vec<Entry>, StoreError>;

    /// Starts writing `entries`, each the new winner of its key (replacing
    /// the record there), in one transaction where the backend has them.
    /// Must not block: the work happens elsewhere and the returned future
    /// reports it. The mesh waits for one commit before it starts the next.
    fn commit(&mut self, entries: Vec<Entry>) -> Commit;
}

/// A held message: its recipient, author and message ID.
pub type MailKey = (PeerId, PeerId, String);

/// One change to the held messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailChange {
    /// Keep this message for this recipient.
    Hold(PeerId, Held),
    /// Forget a message (delivered or expired): recipient, author, ID.
    Drop(PeerId, PeerId, String),
}

/// Durable storage of the messages a node holds for offline peers (its
/// mailbox), one record per message.
pub trait MailStore: Send {
    /// Every held message with its recipient, read once when the node starts.
    fn load_mail(&mut self) -> Result<Vec<(PeerId, Held)>, StoreError>;

    /// Starts applying `changes`, in order; like [`Store::commit`].
    fn commit_mail(&mut self, changes: Vec<MailChange>) -> Commit;
}

#[derive(Default)]
struct Memory {
    entries: BTreeMap<(String, String), Entry>,
    mail: BTreeMap<(PeerId, PeerId, String), Held>,
}

/// Entries and held messages in memory. Clones share the same contents, so
/// a clone kept by a test outlives the node that used it (a data directory
/// across restarts).
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Memory>>);

impl MemoryStore {
    /// A store holding these entries (the last of each key wins).
    pub fn with(entries: impl IntoIterator<Item = Entry>) -> Self {
        let store = Self::default();
        store.lock().entries =
            entries.into_iter().map(|e| ((e.namespace.clone(), e.key.clone()), e)).collect();
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every stored entry.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Every held message with its recipient.
    pub fn mail(&self) -> Vec<(PeerId, Held)> {
        self.lock().mail.iter().map(|((recipient, _, _), held)| (*recipient, held.clone())).collect()
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.entries())
    }

    fn commit(&mut self, entries: Vec<Entry>) -> Commit {
        let mut memory = self.lock();
        for entry in entries {
            memory.entries.insert((entry.namespace.clone(), entry.key.clone()), entry);
        }
        futures::future::ready(Ok(())).boxed()
    }
}

impl MailStore for MemoryStore {
    fn load_mail(&mut self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        Ok(self.mail())
    }

    fn commit_mail(&mut self, changes: Vec<MailChange>) -> Commit {
        let mut memory = self.lock();
        for change in changes {
            match change {
                MailChange::Hold(recipient, held) => {
                    memory.mail.insert((recipient, held.author, held.id.clone()), held);
                }
                MailChange::Drop(recipient, author, id) => {
                    memory.mail.remove(&(recipient, author, id));
                }
            }
        }
        futures::future::ready(Ok(())).boxed()
    }
}
