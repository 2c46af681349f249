//! IndexedDB storage of the browser's identity, so that a reload keeps the
//! same node ID. One key per client name (`new WasmP2PClient(name)`).

use infermesh_core::Identity;
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::JsValue;

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
