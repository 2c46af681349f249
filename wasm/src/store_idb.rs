//! IndexedDB storage: the browser's identity, so that a reload keeps the
//! same node ID, and the client's replicated state, so that a reload keeps
//! every acknowledged write. Both per client name (`new WasmP2PClient(name)`).

use futures::{
    FutureExt, StreamExt,
    channel::{mpsc, oneshot},
};
use idb::{Database, ObjectStore, Query, TransactionMode};
use infermesh_core::{
    Identity,
    state::Entry,
    store::{Commit, Store, StoreError},
};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;
use web_sys::{IdbDatabase, IdbTransaction};

#[wasm_bindgen]
extern "C" {
    /// An `IDBDatabase`, for the one call web-sys only has behind an
    /// unstable flag.
    #[wasm_bindgen(js_name = IDBDatabase)]
    type IdbWithOptions;

    /// `IDBDatabase.transaction(names, mode, options)` (options: `durability`).
    #[wasm_bindgen(method, catch, js_name = transaction)]
    fn transaction_with_options(
        this: &IdbWithOptions,
        names: &JsValue,
        mode: &str,
        options: &JsValue,
    ) -> Result<IdbTransaction, JsValue>;
}

const DB: &str = "infermesh";
const IDENTITIES: &str = "identities";
const ENTRIES: &str = "entries";
/// Commits waiting for the writer task. The mesh has one outstanding at a
/// time (it gathers the writes made meanwhile into the next), so one slot
/// would do; two leave room for a commit handed over as another finishes.
const QUEUE: usize = 2;

async fn open(name: &str, store: &str) -> Result<IdbDatabase, String> {
    let db = Database::builder(name)
        .version(1)
        .add_object_store(ObjectStore::builder(store))
        .build()
        .await
        .map_err(|e| format!("cannot open IndexedDB ({name}): {e}"))?;
    Ok(db.into())
}

/// An object store to read, in a read-only transaction.
fn read_transaction(db: &IdbDatabase, store: &str) -> Result<ObjectStore, String> {
    let tx = Database::from(db.clone())
        .transaction(&[store], TransactionMode::ReadOnly)
        .map_err(|e| e.to_string())?;
    tx.object_store(store).map_err(|e| e.to_string())
}

/// A read-write transaction on `store` that the browser reports complete
/// only once it is written to disk (`durability: "strict"`).
fn strict_transaction(db: &IdbDatabase, store: &str) -> Result<idb::Transaction, String> {
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &JsValue::from_str("durability"), &JsValue::from_str("strict"))
        .map_err(|e| format!("cannot ask for a strict transaction: {e:?}"))?;
    let names = Array::of1(&JsValue::from_str(store));
    db.unchecked_ref::<IdbWithOptions>()
        .transaction_with_options(&names, "readwrite", &options)
        .map(idb::Transaction::from)
        .map_err(|e| format!("cannot start a transaction: {e:?}"))
}

/// Waits for a transaction to finish; `Err` unless it committed.
async fn committed(tx: idb::Transaction, what: &str) -> Result<(), String> {
    match tx.await {
        Ok(result) if result.is_committed() => Ok(()),
        Ok(_) => Err(format!("cannot save {what}: the transaction was aborted")),
        Err(e) => Err(format!("cannot save {what}: {e}")),
    }
}

/// The identity stored under `name`, or a new one stored now (`true`).
pub(crate) async fn load_or_create_identity(name: &str) -> Result<(Identity, bool), String> {
    let db = open(DB, IDENTITIES).await?;
    let stored = async {
        let store = read_transaction(&db, IDENTITIES)?;
        let request = store.get(Query::Key(JsValue::from_str(name))).map_err(|e| e.to_string())?;
        request.await.map_err(|e| format!("cannot read the stored identity: {e}"))
    }
    .await;
    let result = match stored {
        Ok(Some(hex)) if hex.as_string().is_some() => {
            let hex = hex.as_string().unwrap_or_default();
            Identity::from_hex(&hex)
                .map(|id| (id, false))
                .map_err(|e| format!("the stored identity is damaged: {e}"))
        }
        Ok(_) => match Identity::generate() {
            Ok(identity) => store_identity_in(&db, name, &identity).await.map(|()| (identity, true)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e),
    };
    db.close();
    result
}

/// Stores `identity` under `name`, replacing what was there.
pub(crate) async fn store_identity(name: &str, identity: &Identity) -> Result<(), String> {
    let db = open(DB, IDENTITIES).await?;
    let result = store_identity_in(&db, name, identity).await;
    db.close();
    result
}

async fn store_identity_in(db: &IdbDatabase, name: &str, identity: &Identity) -> Result<(), String> {
    let tx = strict_transaction(db, IDENTITIES)?;
    let store = tx.object_store(IDENTITIES).map_err(|e| e.to_string())?;
    store
        .put(&JsValue::from_str(&identity.to_hex()), Some(&JsValue::from_str(name)))
        .map_err(|e| format!("cannot store the identity: {e}"))?;
    committed(tx, "the identity").await
}

// ---- replicated state ----------------------------------------------------

/// The replicated state of one client, in its own database
/// (`infermesh-state:<name>`): one record per `(namespace, key)` holding the
/// winning entry's bytes, keyed by the array `[namespace, key]`.
///
/// Commits go to a writer task through a bounded queue; each is one strict
/// transaction, reported done only once it is on disk, so the mesh
/// acknowledges a write only then.
pub(crate) struct IdbStore {
    loaded: Vec<Entry>,
    jobs: mpsc::Sender<Job>,
}

/// A batch for the writer task, and where its outcome goes.
type Job = (Vec<Entry>, oneshot::Sender<Result<(), StoreError>>);

impl IdbStore {
    /// Opens the client's state database, reads every stored entry and
    /// starts the writer task (it ends when the mesh drops the store).
    /// Records that do not decode are skipped with a warning (the replica
    /// verifies the rest before trusting them).
    pub(crate) async fn open(name: &str) -> Result<IdbStore, String> {
        let db = open(&format!("infermesh-state:{name}"), ENTRIES).await?;
        let records = async {
            let store = read_transaction(&db, ENTRIES)?;
            let request = store.get_all(None, None).map_err(|e| e.to_string())?;
            request.await.map_err(|e| format!("cannot read the stored state: {e}"))
        }
        .await
        .inspect_err(|_| db.close())?;
        let mut loaded = Vec::with_capacity(records.len());
        let mut damaged = 0usize;
        for record in records {
            match record.dyn_into::<Uint8Array>().ok().and_then(|b| Entry::decode(&b.to_vec()).ok()) {
                Some(entry) => loaded.push(entry),
                None => damaged += 1,
            }
        }
        if damaged > 0 {
            tracing::warn!("{damaged} stored state records could not be read and were skipped");
        }
        let (jobs, queue) = mpsc::channel(QUEUE);
        spawn_local(writer(db, queue));
        Ok(IdbStore { loaded, jobs })
    }
}

impl Store for IdbStore {
    fn load(&mut self) -> Result<Vec<Entry>, StoreError> {
        Ok(std::mem::take(&mut self.loaded))
    }

    fn commit(&mut self, entries: Vec<Entry>) -> Commit {
        let (done, outcome) = oneshot::channel();
        match self.jobs.try_send((entries, done)) {
            Ok(()) => outcome
                .map(|r| r.unwrap_or_else(|_| Err(StoreError("the state database is closed".into()))))
                .boxed(),
            Err(e) => {
                let reason =
                    if e.is_full() { "the state database is busy" } else { "the state database is closed" };
                futures::future::ready(Err(StoreError(reason.into()))).boxed()
            }
        }
    }
}

/// Commits batches in arrival order, one strict transaction each.
async fn writer(db: IdbDatabase, mut jobs: mpsc::Receiver<Job>) {
    while let Some((entries, done)) = jobs.next().await {
        let _ = done.send(commit(&db, &entries).await.map_err(StoreError));
    }
    db.close();
}

async fn commit(db: &IdbDatabase, entries: &[Entry]) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let tx = strict_transaction(db, ENTRIES)?;
    let store = tx.object_store(ENTRIES).map_err(|e| e.to_string())?;
    for entry in entries {
        let id = Array::of2(&JsValue::from_str(&entry.namespace), &JsValue::from_str(&entry.key));
        let bytes = Uint8Array::from(entry.encode().as_slice());
        // The request's outcome is the transaction's: awaited below.
        store.put(&bytes, Some(&id)).map_err(|e| format!("cannot save state: {e}"))?;
    }
    committed(tx, "state").await
}
