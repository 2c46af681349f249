//! The native state store: signed entries in a redb database
//! (`<data-dir>/state.redb`), one row per `(namespace, key)`. Every `put`
//! (one write, or one batch from a peer) is one committed, fsynced
//! transaction, so an acknowledged write survives a crash.

use std::path::Path;

use infermesh_core::state::{Entry, Store, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// `namespace \0 key` → encoded entry.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

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
}
