//! The native stores: state entries and held mail in one redb database
//! (`<data-dir>/state.redb`). Entries are one row per `(namespace, key)`,
//! held messages one row per message. Commits run on a writer thread
//! behind a bounded queue, each one transaction that redb makes durable
//! (fsync) before it reports success, so the event loop never waits on
//! the disk and an acknowledged write survives a crash.

use std::{
    path::Path,
    sync::{Arc, mpsc},
    thread,
};

use futures::{FutureExt, channel::oneshot};
use infermesh_core::{
    PeerId,
    messaging::Held,
    state::Entry,
    store::{Commit, MailChange, MailStore, Store, StoreError},
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// `namespace \0 key` → encoded entry.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

/// `recipient, author, message ID` (each length-prefixed) → expiry
/// (8 bytes, big-endian milliseconds) and the sealed envelope.
const MAIL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mail");

/// Commits waiting for the writer thread. The mesh has at most one commit
/// of each kind outstanding, so two never wait.
const QUEUE: usize = 2;

fn mail_key(recipient: &PeerId, author: &PeerId, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(96 + id.len());
    for part in [recipient.to_bytes(), author.to_bytes(), id.as_bytes().to_vec()] {
        key.push(part.len() as u8);
        key.extend_from_slice(&part);
    }
    key
}

/// `(recipient, author, id)` from a row key; `None` if damaged.
fn parse_mail_key(mut key: &[u8]) -> Option<(PeerId, PeerId, String)> {
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let (&len, rest) = key.split_first()?;
        let part = rest.get(..len as usize)?;
        parts.push(part);
        key = &rest[len as usize..];
    }
    Some((
        PeerId::from_bytes(parts[0]).ok()?,
        PeerId::from_bytes(parts[1]).ok()?,
        String::from_utf8(parts[2].to_vec()).ok()?,
    ))
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// What the writer thread does.
enum Job {
    Entries(Vec<Entry>, oneshot::Sender<Result<(), StoreError>>),
    Mail(Vec<MailChange>, oneshot::Sender<Result<(), StoreError>>),
}

/// The database and its writer thread. Clones share both: one clone is the
/// mesh's [`Store`], another its [`MailStore`]. When the last clone goes,
/// the writer thread finishes what it was given and ends, and the file is
/// closed before the drop returns.
#[derive(Clone)]
pub struct RedbStore(Arc<Inner>);

struct Inner {
    db: Arc<Database>,
    jobs: Option<mpsc::SyncSender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its writer thread,
    /// which ends when the last clone is dropped.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(ENTRIES).map_err(err)?;
        tx.open_table(MAIL).map_err(err)?;
        tx.commit().map_err(err)?;
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let writer = db.clone();
        let thread = thread::Builder::new()
            .name("infermesh-store".into())
            .spawn(move || {
                for job in queue {
                    match job {
                        Job::Entries(entries, done) => {
                            let _ = done.send(write_entries(&writer, &entries));
                        }
                        Job::Mail(changes, done) => {
                            let _ = done.send(write_mail(&writer, &changes));
                        }
                    }
                }
            })
            .map_err(|e| err(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Self(Arc::new(Inner { db, jobs: Some(jobs), writer: Some(thread) })))
    }

    fn db(&self) -> &Database {
        &self.0.db
    }

    /// Hands a job to the writer thread; the future reports its outcome.
    fn submit(&self, job: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Job) -> Commit {
        let (done, outcome) = oneshot::channel();
        let Some(jobs) = &self.0.jobs else {
            return futures::future::ready(Err(err("the store is closed"))).boxed();
        };
        match jobs.try_send(job(done)) {
            Ok(()) => {
                outcome.map(|r| r.unwrap_or_else(|_| Err(err("the store's writer thread stopped")))).boxed()
            }
            Err(mpsc::TrySendError::Full(_)) => futures::future::ready(Err(err("the store is busy"))).boxed(),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                futures::future::ready(Err(err("the store's writer thread stopped"))).boxed()
            }
        }
    }
}

fn write_entries(db: &Database, entries: &[Entry]) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(err)?;
    {
        let mut table = tx.open_table(ENTRIES).map_err(err)?;
        for entry in entries {
            let row = format!("{}\0{}", entry.namespace, entry.key);
            table.insert(row.as_str(), entry.encode().as_slice()).map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

fn write_mail(db: &Database, changes: &[MailChange]) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(err)?;
    {
        let mut table = tx.open_table(MAIL).map_err(err)?;
        for change in changes {
            match change {
                MailChange::Hold(recipient, held) => {
                    let mut value = Vec::with_capacity(8 + held.frame.len());
                    value.extend_from_slice(&held.expires_at_ms.to_be_bytes());
                    value.extend_from_slice(&held.frame);
                    let key = mail_key(recipient, &held.author, &held.id);
                    table.insert(key.as_slice(), value.as_slice()).map_err(err)?;
                }
                MailChange::Drop(recipient, author, id) => {
                    table.remove(mail_key(recipient, author, id).as_slice()).map_err(err)?;
                }
            }
        }
    }
    tx.commit().map_err(err)
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<Vec<Entry>, StoreError> {
        let tx = self.db().begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            match Entry::decode(value.value()) {
                Ok(entry) => out.push(entry),
                // A damaged row is reported and skipped, never trusted.
                Err(e) => tracing::warn!(row = key.value(), "skipping a damaged state entry: {e}"),
            }
        }
        Ok(out)
    }

    fn commit(&mut self, entries: Vec<Entry>) -> Commit {
        self.submit(|done| Job::Entries(entries, done))
    }
}

impl MailStore for RedbStore {
    fn load_mail(&mut self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        let tx = self.db().begin_read().map_err(err)?;
        let table = tx.open_table(MAIL).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let (key, value) = (key.value(), value.value());
            let parsed = parse_mail_key(key).zip(value.split_first_chunk::<8>());
            let Some(((recipient, author, id), (expiry, frame))) = parsed else {
                tracing::warn!("skipping a damaged held message");
                continue;
            };
            let held = Held { author, id, expires_at_ms: u64::from_be_bytes(*expiry), frame: frame.to_vec() };
            out.push((recipient, held));
        }
        Ok(out)
    }

    fn commit_mail(&mut self, changes: Vec<MailChange>) -> Commit {
        self.submit(|done| Job::Mail(changes, done))
    }
}

#[cfg(test)]
mod tests {
    use infermesh_core::{Identity, state::LocalState};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn entries_survive_reopening_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let id = Identity::from_seed([3; 32]);
        let ns = id.peer_id().to_base58();
        {
            let mut store = RedbStore::open(&path).unwrap();
            let (mut state, _) = LocalState::open(id.clone(), store.load().unwrap());
            let name = state.update("name", &json!("John"), 1_700_000_000_000).unwrap();
            let age = state.update("age", &json!(25), 1_700_000_000_000).unwrap();
            store.commit(vec![name, age]).await.unwrap();
        }
        {
            let mut store = RedbStore::open(&path).unwrap();
            let tx = store.db().begin_write().unwrap();
            tx.open_table(ENTRIES).unwrap().insert("garbage\0row", &[0xff, 0x01][..]).unwrap();
            tx.commit().unwrap();
            assert_eq!(store.load().unwrap().len(), 2);
        }
        let (state, _) = LocalState::open(id, RedbStore::open(&path).unwrap().load().unwrap());
        assert_eq!(state.data(&ns), json!({"name": "John", "age": 25}));
    }

    #[tokio::test]
    async fn held_messages_survive_reopening_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (bob, alice) = (PeerId::random(), PeerId::random());
        let held = |id: &str| Held { author: alice, id: id.into(), expires_at_ms: 42, frame: vec![1, 2, 3] };
        {
            let mut store = RedbStore::open(&path).unwrap();
            let changes = vec![MailChange::Hold(bob, held("m1")), MailChange::Hold(bob, held("m2"))];
            store.commit_mail(changes).await.unwrap();
            store.commit_mail(vec![MailChange::Drop(bob, alice, "m1".into())]).await.unwrap();
            let tx = store.db().begin_write().unwrap();
            tx.open_table(MAIL).unwrap().insert(&[9u8, 9][..], &[1u8][..]).unwrap();
            tx.commit().unwrap();
        }
        let mut store = RedbStore::open(&path).unwrap();
        assert_eq!(store.load_mail().unwrap(), [(bob, held("m2"))], "the damaged row is skipped");
    }

    #[tokio::test]
    async fn a_commit_is_reported_by_the_writer_thread_and_a_second_waits_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let id = Identity::from_seed([4; 32]);
        let (mut state, _) = LocalState::open(id, Vec::new());
        let first = store.commit(vec![state.update("a", &json!(1), 1_700_000_000_000).unwrap()]);
        let second =
            store.commit_mail(vec![MailChange::Drop(PeerId::random(), PeerId::random(), "x".into())]);
        assert!(first.await.is_ok() && second.await.is_ok());
        assert_eq!(store.load().unwrap().len(), 1);
    }
}
