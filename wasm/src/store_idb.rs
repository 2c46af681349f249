//! IndexedDB storage: the browser's identity, so that a reload keeps the
//! same node ID, and the client's replicated state, so that a reload keeps
//! every acknowledged write. Both per client name (`new WasmP2PClient(name)`).

use std::collections::BTreeMap;

use futures::{
    StreamExt,
    channel::{mpsc, oneshot},
};
use infermesh_core::{
    Identity,
    state::{Entry, Store, StoreError},
};
use js_sys::{Array, Uint8Array};
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;

const DB: &str = "infermesh";
const IDENTITIES: &str = "identities";

async fn open() -> Result<Rexie, String> {
    Rexie::builder(DB)
        .version(1)
        .add_object_store(ObjectStore::new(IDENTITIES))
        .build()
        .await
        .map_err(|e| format!("cannot open IndexedDB: {e}"))
}

/// The identity stored under `name`, or a new one stored now (`true`).
pub(crate) async fn load_or_create_identity(name: &str) -> Result<(Identity, bool), String> {
    let db = open().await?;
    let key = JsValue::from_str(name);
    let stored = {
        let tx = db.transaction(&[IDENTITIES], TransactionMode::ReadOnly).map_err(|e| e.to_string())?;
        let store = tx.store(IDENTITIES).map_err(|e| e.to_string())?;
        store.get(key.clone()).await.map_err(|e| format!("cannot read the stored identity: {e}"))?
    };
    if let Some(hex) = stored.and_then(|v| v.as_string()) {
        let identity =
            Identity::from_hex(&hex).map_err(|e| format!("the stored identity is damaged: {e}"))?;
        db.close();
        return Ok((identity, false));
    }
    let identity = Identity::generate().map_err(|e| e.to_string())?;
    store_identity_in(&db, name, &identity).await?;
    db.close();
    Ok((identity, true))
}

/// Stores `identity` under `name`, replacing what was there.
pub(crate) async fn store_identity(name: &str, identity: &Identity) -> Result<(), String> {
    let db = open().await?;
    let result = store_identity_in(&db, name, identity).await;
    db.close();
    result
}

async fn store_identity_in(db: &Rexie, name: &str, identity: &Identity) -> Result<(), String> {
    let tx = db.transaction(&[IDENTITIES], TransactionMode::ReadWrite).map_err(|e| e.to_string())?;
    let store = tx.store(IDENTITIES).map_err(|e| e.to_string())?;
    store
        .put(&JsValue::from_str(&identity.to_hex()), Some(&JsValue::from_str(name)))
        .await
        .map_err(|e| format!("cannot store the identity: {e}"))?;
    // Resolves once the write is durable.
    tx.done().await.map_err(|e| format!("cannot store the identity: {e}"))?;
    Ok(())
}

// ---- replicated state ----------------------------------------------------

/// The replicated state of one client, kept in its own database
/// (`infermesh-state:<name>`): one record per `(namespace, key)` holding the
/// winning entry's bytes, keyed by the array `[namespace, key]`.
///
/// IndexedDB is asynchronous and the core's [`Store`] is not, so writes are
/// handed to a writer task that commits them in order, a batch per
/// transaction. [`StateDurability::flush`] resolves once everything handed
/// over before it is committed: the client calls it before acknowledging a
/// write to the page.
pub(crate) struct IdbStore {
    loaded: Vec<Entry>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Waits for the state writer (cloneable, `Send`).
#[derive(Clone)]
pub(crate) struct StateDurability {
    jobs: mpsc::UnboundedSender<Job>,
}

enum Job {
    Put(Vec<(String, String, Vec<u8>)>),
    Flush(oneshot::Sender<Result<(), String>>),
}

const ENTRIES: &str = "entries";
/// Records committed per transaction at most.
const WRITE_BATCH: usize = 2048;

async fn open_state(name: &str) -> Result<Rexie, String> {
    Rexie::builder(&format!("infermesh-state:{name}"))
        .version(1)
        .add_object_store(ObjectStore::new(ENTRIES))
        .build()
        .await
        .map_err(|e| format!("cannot open the state database: {e}"))
}

impl IdbStore {
    /// Opens the client's state database, reads every stored entry and
    /// starts the writer task. Records that do not decode are skipped with a
    /// warning (the replica verifies the rest before trusting them).
    pub(crate) async fn open(name: &str) -> Result<(IdbStore, StateDurability), String> {
        let db = open_state(name).await?;
        let records = {
            let tx = db.transaction(&[ENTRIES], TransactionMode::ReadOnly).map_err(|e| e.to_string())?;
            let store = tx.store(ENTRIES).map_err(|e| e.to_string())?;
            store.get_all(None, None).await.map_err(|e| format!("cannot read the stored state: {e}"))?
        };
        let mut loaded = Vec::with_capacity(records.len());
        let mut damaged = 0usize;
        for record in records {
            match record
                .dyn_into::<Uint8Array>()
                .map_err(|_| ())
                .and_then(|b| Entry::decode(&b.to_vec()).map_err(|_| ()))
            {
                Ok(entry) => loaded.push(entry),
                Err(()) => damaged += 1,
            }
        }
        if damaged > 0 {
            tracing::warn!("{damaged} stored state records could not be read and were skipped");
        }
        let (jobs, rx) = mpsc::unbounded();
        spawn_local(writer(db, rx));
        Ok((IdbStore { loaded, jobs: jobs.clone() }, StateDurability { jobs }))
    }
}

impl Store for IdbStore {
    fn load(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.loaded.clone())
    }

    fn put(&mut self, entries: &[&Entry]) -> Result<(), StoreError> {
        let records = entries.iter().map(|e| (e.namespace.clone(), e.key.clone(), e.encode())).collect();
        self.jobs
            .unbounded_send(Job::Put(records))
            .map_err(|_| StoreError("the state database is closed".into()))
    }
}

impl StateDurability {
    /// Resolves once every entry stored before this call is committed to
    /// IndexedDB, or with the error that kept it from being committed.
    pub(crate) async fn flush(&self) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.jobs.unbounded_send(Job::Flush(reply)).map_err(|_| "the state database is closed".to_owned())?;
        done.await.map_err(|_| "the state database is closed".to_owned())?
    }
}

/// Commits puts in arrival order. A failed transaction keeps its records
/// pending (the next round retries them) and fails the flushes waiting on
/// it, so a write is never acknowledged without being committed.
async fn writer(db: Rexie, mut jobs: mpsc::UnboundedReceiver<Job>) {
    // (namespace, key) → bytes of the newest winner not yet committed.
    let mut pending: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut warned = false;
    while let Some(job) = jobs.next().await {
        let mut flushes = Vec::new();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Put(records) => {
                    for (namespace, key, bytes) in records {
                        pending.insert((namespace, key), bytes);
                    }
                }
                Job::Flush(reply) => flushes.push(reply),
            }
            if pending.len() < WRITE_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        let result = commit(&db, &pending).await;
        match &result {
            Ok(()) => pending.clear(),
            Err(e) if !warned => {
                warned = true;
                tracing::warn!("state not saved to IndexedDB (will retry): {e}");
            }
            Err(_) => {}
        }
        for reply in flushes {
            let _ = reply.send(result.clone());
        }
    }
    db.close();
}

async fn commit(db: &Rexie, records: &BTreeMap<(String, String), Vec<u8>>) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    let failed = |e: rexie::Error| format!("cannot save state: {e}");
    let tx = db.transaction(&[ENTRIES], TransactionMode::ReadWrite).map_err(failed)?;
    let store = tx.store(ENTRIES).map_err(failed)?;
    let rows = records.iter().map(|((namespace, key), bytes)| {
        let id = Array::of2(&JsValue::from_str(namespace), &JsValue::from_str(key));
        (Uint8Array::from(bytes.as_slice()).into(), Some(id.into()))
    });
    store.put_all(rows).await.map_err(failed)?;
    if tx.done().await.map_err(failed)?.is_committed() {
        Ok(())
    } else {
        Err("cannot save state: the transaction was aborted".into())
    }
}
