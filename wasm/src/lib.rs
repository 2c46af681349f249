//! # infermesh (npm) / infermesh-wasm
//!
//! The browser binding of InferMesh: [`WasmP2PClient`] and
//! [`create_neural_message`], a thin wasm-bindgen layer over
//! `infermesh-core`. It converts types and spawns the core's event loop on
//! the browser's executor; the logic lives in the core.
#![cfg(target_arch = "wasm32")]

mod compute;
mod convert;
mod store_idb;

use std::{
    cell::{Cell, RefCell},
    rc::{Rc, Weak},
};

use convert::{js_error, to_js};
use futures::StreamExt;
use infermesh_core::{
    Identity, Mesh, MeshConfig, MeshEvent, MeshEvents, MeshHandle, Multiaddr, PeerId, WriteMode,
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

thread_local! {
    /// Clients alive, event loops running and event pumps running on this
    /// page (see [`runtime_stats`]).
    static CLIENTS: Cell<u32> = const { Cell::new(0) };
    static EVENT_LOOPS: Cell<u32> = const { Cell::new(0) };
    static EVENT_PUMPS: Cell<u32> = const { Cell::new(0) };
}

/// Counts one of something while it lives.
struct Live(&'static std::thread::LocalKey<Cell<u32>>);

impl Live {
    fn new(counter: &'static std::thread::LocalKey<Cell<u32>>) -> Self {
        counter.with(|c| c.set(c.get() + 1));
        Live(counter)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// The running node behind a client.
struct Node {
    mesh: MeshHandle,
    identity: Identity,
    bootstrap: Vec<Multiaddr>,
    quantum_resistant: bool,
}

/// Where a client is in its life.
enum Lifecycle {
    /// Made, `initialize` not called yet.
    Idle,
    /// `initialize` under way.
    Starting,
    /// Running.
    Running(Box<Node>),
    /// `close` was called (maybe while starting: the start then stops the
    /// node it made).
    Closed,
}

struct Shared {
    life: RefCell<Lifecycle>,
    handler: RefCell<Option<Function>>,
    state_handler: RefCell<Option<Function>>,
    progress_handler: RefCell<Option<Function>>,
    /// This page's compute workers, while it offers compute.
    compute: RefCell<Option<Rc<compute::ComputeWorkers>>>,
    _live: Live,
}

const NOT_STARTED: &str = "not initialized: call and await initialize() first";
const CLOSED: &str = "the client is closed";

impl Shared {
    fn node<T>(&self, pick: impl FnOnce(&Node) -> T) -> Result<T, JsValue> {
        match &*self.life.borrow() {
            Lifecycle::Running(node) => Ok(pick(node)),
            Lifecycle::Closed => Err(js_error(CLOSED)),
            Lifecycle::Idle | Lifecycle::Starting => Err(js_error(NOT_STARTED)),
        }
    }

    fn mesh(&self) -> Result<MeshHandle, JsValue> {
        self.node(|node| node.mesh.clone())
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

#[wasm_bindgen]
impl WasmP2PClient {
    /// A client named `name`; the name keys its identity and its state in
    /// IndexedDB.
    #[wasm_bindgen(constructor)]
    pub fn new(name: String) -> WasmP2PClient {
        let shared = Shared {
            life: RefCell::new(Lifecycle::Idle),
            handler: RefCell::new(None),
            state_handler: RefCell::new(None),
            progress_handler: RefCell::new(None),
            compute: RefCell::new(None),
            _live: Live::new(&CLIENTS),
        };
        WasmP2PClient { name, shared: Rc::new(shared) }
    }

    /// Starts the node: `{ bootstrap_peers, max_peers, quantum_resistant,
    /// mlkem_security_level, min_security_level, private_key,
    /// replication_factor }`, all
    /// optional. Without `private_key` the identity is created once and kept
    /// in IndexedDB. Resolves with the node ID once connected to a
    /// bootstrap peer (if any were given).
    pub fn initialize(&self, options: JsValue) -> Promise {
        let (name, shared) = (self.name.clone(), self.shared.clone());
        promise(async move {
            {
                let mut life = shared.life.borrow_mut();
                match &*life {
                    Lifecycle::Idle => *life = Lifecycle::Starting,
                    Lifecycle::Closed => return Err(js_error(CLOSED)),
                    Lifecycle::Starting | Lifecycle::Running(_) => {
                        return Err(js_error("already initialized"));
                    }
                }
            }
            let started = start_node(&name, &shared, options).await;
            let closed = matches!(*shared.life.borrow(), Lifecycle::Closed);
            match started {
                Ok(node) if closed => {
                    // Closed while it started: the node it made stops.
                    let _ = node.mesh.shutdown().await;
                    Err(js_error("the client was closed while it started"))
                }
                Ok(node) => {
                    let id = node.identity.peer_id().to_base58();
                    *shared.life.borrow_mut() = Lifecycle::Running(Box::new(node));
                    Ok(JsValue::from_str(&id))
                }
                Err(e) => {
                    if !closed {
                        *shared.life.borrow_mut() = Lifecycle::Idle;
                    }
                    Err(e)
                }
            }
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
            convert::sent(mesh.send(envelope).await.map_err(js_error)?)
        })
    }

    /// This node's ID.
    pub fn peer_id(&self) -> Result<String, JsValue> {
        self.shared.node(|node| node.identity.peer_id().to_base58())
    }

    /// The private key (64 hex characters): whoever has it is this node.
    pub fn export_private_key(&self) -> Result<String, JsValue> {
        self.shared.node(|node| node.identity.to_hex())
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
            convert::sent(mesh.publish_bytes(&topic, convert::payload(&data)?).await.map_err(js_error)?)
        })
    }

    /// Sends bytes (a `Uint8Array`) directly to a node; resolves when
    /// acknowledged.
    pub fn send_direct(&self, peer_id: String, data: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            let peer = parse_peer(&peer_id)?;
            convert::sent(mesh.send_bytes(peer, convert::payload(&data)?).await.map_err(js_error)?)
        })
    }

    /// Connection state, transport, addresses, topics and metrics.
    pub fn status(&self) -> Promise {
        let (name, shared) = (self.name.clone(), self.shared.clone());
        promise(async move { status(&name, &shared).await })
    }

    /// The node's metrics (the core's `MetricsSnapshot`): `{
    /// connected_peers, bytes_in, bytes_out, messages_in, messages_out,
    /// messages_dropped, dropped_by_reason, state_…, e2e_…, mailbox_…,
    /// relay_… }`.
    pub fn metrics(&self) -> Result<JsValue, JsValue> {
        to_js(&self.shared.mesh()?.metrics())
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
            let mesh = shared.mesh()?;
            if private {
                if namespace.is_some() {
                    return Err(js_error("private values live in your own namespace: drop `namespace`"));
                }
                mesh.state_write_private(&key, value, WriteMode::Update).await
            } else {
                mesh.state_write_in(namespace.as_deref(), &key, Some(value), WriteMode::Update).await
            }
            .map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes `key`; resolves once that is saved. `options`: `{ namespace }`.
    pub fn delete(&self, key: String, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let namespace = convert::namespace_option(&options)?;
            let mesh = shared.mesh()?;
            mesh.state_write_in(namespace.as_deref(), &key, None, WriteMode::Delete)
                .await
                .map_err(js_error)?;
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
    /// deleted). If the page fell behind and changes were missed, it calls
    /// `handler({ namespace, lagged: true })` instead: re-read that
    /// namespace with `state()`.
    pub fn on_state_change(&self, handler: JsValue) -> Result<(), JsValue> {
        let handler =
            handler.dyn_into::<Function>().map_err(|_| js_error("the state handler must be a function"))?;
        *self.shared.state_handler.borrow_mut() = Some(handler);
        Ok(())
    }

    /// Stops the node and closes its connections (also while it starts).
    pub fn close(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let previous = shared.life.replace(Lifecycle::Closed);
            if let Some(workers) = shared.compute.borrow_mut().take() {
                workers.stop();
            }
            if let Lifecycle::Running(node) = previous {
                node.mesh.shutdown().await.map_err(js_error)?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Starts the node of client `name`; the event pump holds the client
/// weakly, so a client dropped by the page stops its node.
async fn start_node(name: &str, shared: &Rc<Shared>, options: JsValue) -> Result<Node, JsValue> {
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
    let (identity, store) = futures::join!(identity, store_idb::IdbStore::open(name));
    let identity = identity?;
    let store = store.map_err(js_error)?;
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
    let quantum_resistant = options.quantum_resistant.unwrap_or(true);
    config.quantum_resistant = quantum_resistant;
    if let Some(level) = options.mlkem_security_level {
        config.kem_level = infermesh_core::crypto::Level::try_from(level).map_err(js_error)?;
    }
    if let Some(level) = options.min_security_level {
        config.min_kem_level = Some(infermesh_core::crypto::Level::try_from(level).map_err(js_error)?);
    }
    let (mesh, events, event_loop) = Mesh::build_with_store(config, Box::new(store)).map_err(js_error)?;
    let running = Live::new(&EVENT_LOOPS);
    spawn_local(async move {
        event_loop.run().await;
        drop(running);
    });
    spawn_local(pump(events, Rc::downgrade(shared)));

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
    Ok(Node { mesh, identity, bootstrap, quantum_resistant })
}

/// Hands the node's events to the page's handlers while the client lives;
/// ends with the node's event stream.
async fn pump(mut events: MeshEvents, client: Weak<Shared>) {
    let _running = Live::new(&EVENT_PUMPS);
    while let Some(event) = events.next().await {
        let Some(shared) = client.upgrade() else { break };
        match event {
            MeshEvent::StateChanged { namespace, key, value } => {
                let Some(handler) = shared.state_handler.borrow().clone() else { continue };
                #[derive(Serialize)]
                struct Change {
                    namespace: String,
                    key: String,
                    value: Option<serde_json::Value>,
                }
                call_state_handler(&handler, &Change { namespace, key, value });
            }
            MeshEvent::Lagged { namespaces, messages, .. } => {
                if messages > 0 {
                    web_sys::console::warn_1(
                        &format!("infermesh: the page fell behind; {messages} broadcast message(s) missed")
                            .into(),
                    );
                }
                let Some(handler) = shared.state_handler.borrow().clone() else { continue };
                #[derive(Serialize)]
                struct Lagged {
                    namespace: String,
                    lagged: bool,
                }
                for namespace in namespaces {
                    call_state_handler(&handler, &Lagged { namespace, lagged: true });
                }
            }
            MeshEvent::Message(message) => {
                let Some(handler) = shared.handler.borrow().clone() else { continue };
                match convert::inbound(&message) {
                    Ok((message, payload)) => {
                        if let Err(e) = handler.call2(&JsValue::NULL, &message, &payload) {
                            web_sys::console::error_2(&"infermesh: the message handler threw".into(), &e);
                        }
                    }
                    Err(e) => web_sys::console::error_1(&e),
                }
            }
            _ => {}
        }
    }
}

fn call_state_handler(handler: &Function, change: &impl Serialize) {
    match to_js(change) {
        Ok(change) => {
            if let Err(e) = handler.call1(&JsValue::NULL, &change) {
                web_sys::console::error_2(&"infermesh: the state handler threw".into(), &e);
            }
        }
        Err(e) => web_sys::console::error_1(&e),
    }
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
        metrics: infermesh_core::MetricsSnapshot,
    }
    #[derive(Serialize)]
    struct Session {
        peer_id: String,
        kem_level: Option<u8>,
    }
    let (mesh, bootstrap, quantum_resistant) =
        shared.node(|node| (node.mesh.clone(), node.bootstrap.clone(), node.quantum_resistant))?;
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
        metrics: status.metrics,
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

/// Clients alive on this page, and the event loops and event pumps their
/// nodes run: `{ clients, event_loops, event_pumps }`. A client freed
/// (`client.free()`) stops its node, and both counts go down.
#[wasm_bindgen]
pub fn runtime_stats() -> JsResult {
    #[derive(Serialize)]
    struct Stats {
        clients: u32,
        event_loops: u32,
        event_pumps: u32,
    }
    to_js(&Stats {
        clients: CLIENTS.with(Cell::get),
        event_loops: EVENT_LOOPS.with(Cell::get),
        event_pumps: EVENT_PUMPS.with(Cell::get),
    })
}
