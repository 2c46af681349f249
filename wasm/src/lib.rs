//! # infermesh (npm) / infermesh-wasm
//!
//! The browser binding of InferMesh: [`WasmP2PClient`] and
//! [`create_neural_message`], a thin wasm-bindgen layer over
//! `infermesh-core`. It converts types and spawns the core's event loop on
//! the browser's executor; the logic lives in the core.
#![cfg(target_arch = "wasm32")]

mod convert;
mod store_idb;

use std::{cell::RefCell, rc::Rc};

use convert::{js_error, to_js};
use futures::StreamExt;
use infermesh_core::{
    Envelope, Identity, Mesh, MeshConfig, MeshEvent, MeshHandle, MetricsSnapshot, MsgType, Multiaddr, PeerId,
    Sent, WriteMode,
};
use js_sys::{Function, Promise};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

type JsResult = Result<JsValue, JsValue>;

/// Installs the panic hook and console logging, once per page.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    tracing_wasm::set_as_global_default_with_config(
        tracing_wasm::WASMLayerConfigBuilder::new().set_max_level(tracing::Level::WARN).build(),
    );
}

/// The running node behind a client.
struct Node {
    mesh: MeshHandle,
    /// Waits for state writes to reach IndexedDB.
    durability: store_idb::StateDurability,
    identity: Identity,
    bootstrap: Vec<Multiaddr>,
    quantum_resistant: bool,
}

#[derive(Default)]
struct Shared {
    node: RefCell<Option<Node>>,
    handler: RefCell<Option<Function>>,
    state_handler: RefCell<Option<Function>>,
    starting: RefCell<bool>,
    closed: RefCell<bool>,
}

impl Shared {
    fn mesh(&self) -> Result<MeshHandle, JsValue> {
        if *self.closed.borrow() {
            return Err(js_error("the client is closed"));
        }
        match &*self.node.borrow() {
            Some(node) => Ok(node.mesh.clone()),
            None => Err(js_error("not initialized: call and await initialize() first")),
        }
    }

    /// The handle and the state writer, for calls that write state.
    fn writer(&self) -> Result<(MeshHandle, store_idb::StateDurability), JsValue> {
        let mesh = self.mesh()?;
        match &*self.node.borrow() {
            Some(node) => Ok((mesh, node.durability.clone())),
            None => Err(js_error("not initialized: call and await initialize() first")),
        }
    }

    fn identity(&self) -> Result<Identity, JsValue> {
        match &*self.node.borrow() {
            Some(node) => Ok(node.identity.clone()),
            None => Err(js_error("not initialized: call and await initialize() first")),
        }
    }
}

/// A peer-to-peer mesh client for web pages.
#[wasm_bindgen]
pub struct WasmP2PClient {
    name: String,
    shared: Rc<Shared>,
}

fn promise(work: impl std::future::Future<Output = JsResult> + 'static) -> Promise {
    future_to_promise(work)
}

fn parse_addr(text: &str) -> Result<Multiaddr, JsValue> {
    text.parse().map_err(|e| js_error(format!("invalid multiaddr '{text}': {e}")))
}

fn parse_peer(text: &str) -> Result<PeerId, JsValue> {
    text.parse().map_err(|_| js_error(format!("'{text}' is not a node ID (they look like 12D3KooW…)")))
}

fn sent_to_js(sent: Sent) -> JsResult {
    #[derive(Serialize)]
    struct Outcome {
        id: String,
        /// Acknowledged by the recipient.
        delivered: bool,
        rtt_ms: Option<f64>,
        topic: Option<String>,
        /// End-to-end encrypted.
        encrypted: bool,
        /// The recipient was offline: this node holds it for them.
        held_by: Option<String>,
    }
    let outcome = match sent {
        Sent::Direct(d) => Outcome {
            id: d.id,
            delivered: d.held_by.is_none(),
            rtt_ms: Some(d.rtt.as_secs_f64() * 1000.0),
            topic: None,
            encrypted: d.encrypted,
            held_by: d.held_by.map(|p| p.to_base58()),
        },
        Sent::Broadcast { id, topic } => Outcome {
            id,
            delivered: false,
            rtt_ms: None,
            topic: Some(topic),
            encrypted: false,
            held_by: None,
        },
    };
    to_js(&outcome)
}

#[derive(Serialize)]
struct Metrics {
    peers: u64,
    bytes_in: u64,
    bytes_out: u64,
    messages_in: u64,
    messages_out: u64,
    messages_dropped: u64,
    dropped_by_reason: std::collections::BTreeMap<String, u64>,
    e2e_sessions: u64,
    e2e_rekeys: u64,
    e2e_decrypt_failures: u64,
    e2e_replays_rejected: u64,
    state_namespaces: u64,
    state_entries: u64,
    state_entries_ingested: u64,
    state_entries_rejected: u64,
    state_rejected_by_reason: std::collections::BTreeMap<String, u64>,
    state_sync_lag_ms: u64,
}

impl From<MetricsSnapshot> for Metrics {
    fn from(m: MetricsSnapshot) -> Self {
        Metrics {
            peers: m.connected_peers,
            bytes_in: m.bytes_in,
            bytes_out: m.bytes_out,
            messages_in: m.messages_in,
            messages_out: m.messages_out,
            messages_dropped: m.messages_dropped,
            dropped_by_reason: m.dropped_by_reason,
            e2e_sessions: m.e2e_sessions,
            e2e_rekeys: m.e2e_rekeys,
            e2e_decrypt_failures: m.e2e_decrypt_failures,
            e2e_replays_rejected: m.e2e_replays_rejected,
            state_namespaces: m.state_namespaces,
            state_entries: m.state_entries,
            state_entries_ingested: m.state_entries_ingested,
            state_entries_rejected: m.state_entries_rejected,
            state_rejected_by_reason: m.state_rejected_by_reason,
            state_sync_lag_ms: m.state_last_sync_lag_ms,
        }
    }
}

#[wasm_bindgen]
impl WasmP2PClient {
    /// A client named `name`; the name keys its identity and its state in
    /// IndexedDB.
    #[wasm_bindgen(constructor)]
    pub fn new(name: String) -> WasmP2PClient {
        WasmP2PClient { name, shared: Rc::new(Shared::default()) }
    }

    /// Starts the node: `{ bootstrap_peers, max_peers, quantum_resistant,
    /// mlkem_security_level, private_key, replication_factor }`, all
    /// optional. Without
    /// `private_key` the identity is created once and kept in IndexedDB.
    /// Resolves with the node ID once connected to a bootstrap peer (if any
    /// were given).
    pub fn initialize(&self, options: JsValue) -> Promise {
        let (name, shared) = (self.name.clone(), self.shared.clone());
        promise(async move {
            if shared.node.borrow().is_some() || shared.starting.replace(true) {
                return Err(js_error("already initialized"));
            }
            let result = start_node(&name, &shared, options).await;
            *shared.starting.borrow_mut() = false;
            result
        })
    }

    /// Calls `handler(message, payload)` for every message received.
    pub fn set_message_handler(&self, handler: JsValue) -> Result<(), JsValue> {
        let handler =
            handler.dyn_into::<Function>().map_err(|_| js_error("the message handler must be a function"))?;
        *self.shared.handler.borrow_mut() = Some(handler);
        Ok(())
    }

    /// Sends a message made by `create_neural_message`: to a node ID it is
    /// direct and resolves when acknowledged; to any other `to` it is
    /// published on that topic.
    pub fn send_message(&self, message: JsValue, payload: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            let envelope = convert::envelope(message, convert::payload(&payload)?)?;
            sent_to_js(mesh.send(envelope).await.map_err(js_error)?)
        })
    }

    /// This node's ID.
    pub fn peer_id(&self) -> Result<String, JsValue> {
        Ok(self.shared.identity()?.peer_id().to_base58())
    }

    /// The private key (64 hex characters): whoever has it is this node.
    pub fn export_private_key(&self) -> Result<String, JsValue> {
        Ok(self.shared.identity()?.to_hex())
    }

    /// Connects to a multiaddr; resolves with the peer's node ID.
    pub fn connect(&self, addr: String) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            let peer = mesh.dial(parse_addr(&addr)?).await.map_err(js_error)?;
            Ok(JsValue::from_str(&peer.to_base58()))
        })
    }

    /// Connected peers: `[{ peer_id, transport, connections, rtt_ms, agent }]`.
    pub fn peers(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move { to_js(&shared.mesh()?.peers().await.map_err(js_error)?) })
    }

    /// Receives messages published on `topic`.
    pub fn subscribe(&self, topic: String) -> Promise {
        let shared = self.shared.clone();
        promise(
            async move { Ok(JsValue::from_bool(shared.mesh()?.subscribe(&topic).await.map_err(js_error)?)) },
        )
    }

    /// Stops receiving `topic`.
    pub fn unsubscribe(&self, topic: String) -> Promise {
        let shared = self.shared.clone();
        promise(
            async move { Ok(JsValue::from_bool(shared.mesh()?.unsubscribe(&topic).await.map_err(js_error)?)) },
        )
    }

    /// Publishes bytes (a `Uint8Array`) on `topic`.
    pub fn publish(&self, topic: String, data: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            let envelope = Envelope::new(MsgType::Custom("data".into()), topic, 5, 300)
                .with_payload(convert::payload(&data)?);
            sent_to_js(mesh.send(envelope).await.map_err(js_error)?)
        })
    }

    /// Sends bytes (a `Uint8Array`) directly to a node; resolves when
    /// acknowledged.
    pub fn send_direct(&self, peer_id: String, data: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            let peer = parse_peer(&peer_id)?;
            let envelope = Envelope::new(MsgType::Custom("data".into()), peer.to_base58(), 5, 300)
                .with_payload(convert::payload(&data)?);
            sent_to_js(mesh.send(envelope).await.map_err(js_error)?)
        })
    }

    /// Connection state, transport, addresses, topics and metrics.
    pub fn status(&self) -> Promise {
        let (name, shared) = (self.name.clone(), self.shared.clone());
        promise(async move { status(&name, &shared).await })
    }

    /// Counters: `{ peers, bytes_in, bytes_out, messages_in, messages_out,
    /// messages_dropped, dropped_by_reason }`.
    pub fn metrics(&self) -> Result<JsValue, JsValue> {
        to_js(&Metrics::from(self.shared.mesh()?.metrics()))
    }

    /// The value of `key` (a JS value of its JSON type), or `undefined`.
    /// `options`: `{ namespace }` to read another node's namespace (the
    /// first read starts replicating it; values follow shortly).
    pub fn get(&self, key: String, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let namespace = convert::namespace_option(&options)?;
            let mesh = shared.mesh()?;
            match mesh.state_get(namespace.as_deref(), &key).await.map_err(js_error)? {
                Some(value) => to_js(&value),
                None => Ok(JsValue::UNDEFINED),
            }
        })
    }

    /// Sets `key` to `value` (any JSON-compatible JS value); resolves once
    /// it is saved in IndexedDB. `options`: `{ namespace }` to write a
    /// namespace whose owner granted this node; `{ private: true }` to seal
    /// the value to this page's own key (replicas hold ciphertext; any
    /// device with the private key reads it).
    pub fn set(&self, key: String, value: JsValue, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let namespace = convert::namespace_option(&options)?;
            let private = convert::private_option(&options)?;
            let value = convert::json_value(value)?;
            let (mesh, durability) = shared.writer()?;
            if private {
                if namespace.is_some() {
                    return Err(js_error("private values live in your own namespace: drop `namespace`"));
                }
                mesh.state_write_private(&key, value, WriteMode::Update).await
            } else {
                mesh.state_write_in(namespace.as_deref(), &key, Some(value), WriteMode::Update).await
            }
            .map_err(js_error)?;
            durability.flush().await.map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes `key`; resolves once that is saved. `options`: `{ namespace }`.
    pub fn delete(&self, key: String, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let namespace = convert::namespace_option(&options)?;
            let (mesh, durability) = shared.writer()?;
            mesh.state_write_in(namespace.as_deref(), &key, None, WriteMode::Delete)
                .await
                .map_err(js_error)?;
            durability.flush().await.map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// `{ namespace, data, replicas }` of this node's namespace, or of
    /// `options.namespace`.
    pub fn state(&self, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let namespace = convert::namespace_option(&options)?;
            let mesh = shared.mesh()?;
            to_js(&mesh.state(namespace.as_deref()).await.map_err(js_error)?)
        })
    }

    /// Calls `handler({ namespace, key, value })` whenever a key of a
    /// namespace this page holds changes (`value` is `null` when it was
    /// deleted).
    pub fn on_state_change(&self, handler: JsValue) -> Result<(), JsValue> {
        let handler =
            handler.dyn_into::<Function>().map_err(|_| js_error("the state handler must be a function"))?;
        *self.shared.state_handler.borrow_mut() = Some(handler);
        Ok(())
    }

    /// Stops the node and closes its connections.
    pub fn close(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let node = shared.node.borrow_mut().take();
            *shared.closed.borrow_mut() = true;
            if let Some(node) = node {
                node.mesh.shutdown().await.map_err(js_error)?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}

async fn start_node(name: &str, shared: &Rc<Shared>, options: JsValue) -> JsResult {
    let options = convert::init_options(options)?;
    let bootstrap = options.bootstrap_peers.iter().map(|a| parse_addr(a)).collect::<Result<Vec<_>, _>>()?;
    let identity = async {
        match &options.private_key {
            Some(key) => {
                let identity =
                    Identity::from_hex(key).map_err(|e| js_error(format!("invalid private_key: {e}")))?;
                store_idb::store_identity(name, &identity).await.map_err(js_error)?;
                Ok::<_, JsValue>(identity)
            }
            None => Ok(store_idb::load_or_create_identity(name).await.map_err(js_error)?.0),
        }
    };
    // The identity and the stored state load together.
    let (identity, state) = futures::join!(identity, store_idb::IdbStore::open(name));
    let identity = identity?;
    let (store, durability) = state.map_err(js_error)?;
    let mut config = MeshConfig::client(identity.clone());
    if let Some(max) = options.max_peers {
        if max == 0 {
            return Err(js_error("max_peers must be at least 1"));
        }
        config.max_peers = max;
    }
    if let Some(factor) = options.replication_factor {
        config.replication_factor = factor;
    }
    config.quantum_resistant = options.quantum_resistant.unwrap_or(true);
    if let Some(level) = options.mlkem_security_level {
        config.kem_level = infermesh_core::crypto::Level::try_from(level).map_err(js_error)?;
    }
    let (mesh, mut events, event_loop) = Mesh::build_with_store(config, Box::new(store)).map_err(js_error)?;
    spawn_local(event_loop.run());

    let pump = shared.clone();
    spawn_local(async move {
        while let Some(event) = events.next().await {
            if let MeshEvent::StateChanged { namespace, key, value } = &event {
                let Some(handler) = pump.state_handler.borrow().clone() else { continue };
                #[derive(Serialize)]
                struct Change<'a> {
                    namespace: &'a str,
                    key: &'a str,
                    value: &'a Option<serde_json::Value>,
                }
                match to_js(&Change { namespace, key, value }) {
                    Ok(change) => {
                        if let Err(e) = handler.call1(&JsValue::NULL, &change) {
                            web_sys::console::error_2(&"infermesh: the state handler threw".into(), &e);
                        }
                    }
                    Err(e) => web_sys::console::error_1(&e),
                }
                continue;
            }
            if let MeshEvent::Message(message) = event {
                let Some(handler) = pump.handler.borrow().clone() else { continue };
                match convert::inbound(&message) {
                    Ok((message, payload)) => {
                        if let Err(e) = handler.call2(&JsValue::NULL, &message, &payload) {
                            web_sys::console::error_2(&"infermesh: the message handler threw".into(), &e);
                        }
                    }
                    Err(e) => web_sys::console::error_1(&e),
                }
            }
        }
    });

    if !bootstrap.is_empty() {
        let joins = bootstrap.iter().map(|addr| mesh.join(addr.clone()));
        let results = futures::future::join_all(joins).await;
        if results.iter().all(|r| r.is_err()) {
            let _ = mesh.shutdown().await;
            let reasons: Vec<String> =
                results.into_iter().filter_map(|r| r.err()).map(|e| e.to_string()).collect();
            return Err(js_error(format!("could not connect to any bootstrap peer: {}", reasons.join("; "))));
        }
    }
    *shared.node.borrow_mut() = Some(Node {
        mesh,
        durability,
        identity: identity.clone(),
        bootstrap,
        quantum_resistant: options.quantum_resistant.unwrap_or(true),
    });
    Ok(JsValue::from_str(&identity.peer_id().to_base58()))
}

async fn status(name: &str, shared: &Rc<Shared>) -> JsResult {
    #[derive(Serialize)]
    struct JsStatus {
        name: String,
        peer_id: String,
        /// `connected`, `connecting` (no peer yet) or `closed`.
        state: &'static str,
        /// Transport to the first bootstrap peer, else to any peer.
        transport: Option<String>,
        peers: usize,
        max_peers: usize,
        topics: Vec<String>,
        /// Where others reach this page: `<relay>/p2p-circuit/p2p/<id>`.
        relay_addrs: Vec<String>,
        quantum_resistant: bool,
        /// The KEM level this page encapsulates at (1, 3 or 5).
        mlkem_security_level: u8,
        /// Peers with an end-to-end session: `[{ peer_id, kem_level }]`.
        sessions: Vec<Session>,
        metrics: Metrics,
    }
    #[derive(Serialize)]
    struct Session {
        peer_id: String,
        kem_level: Option<u8>,
    }
    let mesh = shared.mesh()?;
    let (bootstrap, quantum_resistant) = match &*shared.node.borrow() {
        Some(node) => (node.bootstrap.clone(), node.quantum_resistant),
        None => return Err(js_error("not initialized: call and await initialize() first")),
    };
    let status = mesh.status().await.map_err(js_error)?;
    let peers = mesh.peers().await.map_err(js_error)?;
    let bootstrap_ids: Vec<String> = bootstrap
        .iter()
        .filter_map(|a| match a.iter().last() {
            Some(infermesh_core::multiaddr::Protocol::P2p(p)) => Some(p.to_base58()),
            _ => None,
        })
        .collect();
    let transport = peers
        .iter()
        .find(|p| bootstrap_ids.contains(&p.peer_id))
        .or_else(|| peers.iter().find(|p| p.transport != "relay"))
        .or(peers.first())
        .map(|p| p.transport.clone());
    to_js(&JsStatus {
        name: name.to_owned(),
        peer_id: status.peer_id,
        state: if peers.is_empty() { "connecting" } else { "connected" },
        transport,
        peers: status.connected_peers,
        max_peers: status.max_peers,
        topics: status.topics,
        relay_addrs: status.listen_addrs.into_iter().filter(|a| a.contains("/p2p-circuit")).collect(),
        quantum_resistant,
        mlkem_security_level: status.kem_level,
        sessions: peers
            .iter()
            .filter(|p| p.quantum_secure)
            .map(|p| Session { peer_id: p.peer_id.clone(), kem_level: p.kem_level })
            .collect(),
        metrics: status.metrics.into(),
    })
}

/// A new message object `{ id, msg_type, from, to, priority, ttl, timestamp }`
/// for `send_message`. `msg_type` is one of the nine built-in kinds or a
/// custom name; `to` is a node ID (direct) or a topic.
#[wasm_bindgen]
pub fn create_neural_message(msg_type: &str, from: &str, to: &str, priority: u8, ttl: u32) -> JsResult {
    if priority > infermesh_core::messaging::MAX_PRIORITY {
        return Err(js_error(format!("priority must be 0-10, got {priority}")));
    }
    if ttl == 0 {
        return Err(js_error("ttl must be at least 1 second"));
    }
    if to.is_empty() {
        return Err(js_error("`to` must be a node ID or a topic name"));
    }
    convert::new_message(msg_type, from, to, priority, ttl)
}

/// The version of this package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
