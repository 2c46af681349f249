//! The native state store: signed entries in a redb database
//! (`<data-dir>/state.redb`), one row per `(namespace, key)`. Every `put`
//! (one write, or one batch from a peer) is one committed, fsynced
//! transaction, so an acknowledged write survives a crash. The mailbox
//! (sealed messages held for offline peers) lives in the same file, one row
//! per message.

use std::path::Path;

use infermesh_core::{
    PeerId,
    messaging::Held,
    state::{Entry, Store, StoreError},
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// `namespace \0 key` → encoded entry.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

/// `recipient, author, message ID` (each length-prefixed) → expiry
/// (8 bytes, big-endian milliseconds) and the sealed envelope.
const MAIL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mail");

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

/// Entries on disk.
pub struct RedbStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(ENTRIES).map_err(err)?;
        tx.open_table(MAIL).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
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

    fn put(&mut self, entries: &[&Entry]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(err)?;
            for entry in entries {
                let row = format!("{}\0{}", entry.namespace, entry.key);
                table.insert(row.as_str(), entry.encode().as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn load_mail(&self) -> Result<Vec<(PeerId, Held)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
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

    fn put_mail(&mut self, recipient: &PeerId, held: &Held) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(8 + held.frame.len());
        value.extend_from_slice(&held.expires_at_ms.to_be_bytes());
        value.extend_from_slice(&held.frame);
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(MAIL).map_err(err)?;
            let key = mail_key(recipient, &held.author, &held.id);
            table.insert(key.as_slice(), value.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn drop_mail(&mut self, messages: &[(PeerId, PeerId, String)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(MAIL).map_err(err)?;
            for (recipient, author, id) in messages {
                table.remove(mail_key(recipient, author, id).as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use infermesh_core::{
        Identity,
        state::{LocalState, Store},
    };
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_survive_reopening_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let id = Identity::from_seed([3; 32]);
        let ns = id.peer_id().to_base58();
        {
            let mut state = LocalState::open(id.clone(), RedbStore::open(&path).unwrap()).unwrap();
            state.update("name", &json!("John"), 1_700_000_000_000).unwrap();
            state.update("age", &json!(25), 1_700_000_000_000).unwrap();
        }
        {
            let store = RedbStore::open(&path).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(ENTRIES).unwrap().insert("garbage\0row", &[0xff, 0x01][..]).unwrap();
            tx.commit().unwrap();
            assert_eq!(store.load().unwrap().len(), 2);
        }
        let state = LocalState::open(id, RedbStore::open(&path).unwrap()).unwrap();
        assert_eq!(state.data(&ns), json!({"name": "John", "age": 25}));
    }

    #[test]
    fn held_messages_survive_reopening_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let (bob, alice) = (PeerId::random(), PeerId::random());
        let held = |id: &str| Held { author: alice, id: id.into(), expires_at_ms: 42, frame: vec![1, 2, 3] };
        {
            let mut store = RedbStore::open(&path).unwrap();
            store.put_mail(&bob, &held("m1")).unwrap();
            store.put_mail(&bob, &held("m2")).unwrap();
            store.drop_mail(&[(bob, alice, "m1".into())]).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(MAIL).unwrap().insert(&[9u8, 9][..], &[1u8][..]).unwrap();
            tx.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.load_mail().unwrap(), [(bob, held("m2"))], "the damaged row is skipped");
    }
}
