//! Helpers for multi-node tests over libp2p's memory transport.
#![allow(dead_code)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use infermesh_core::{
    Identity, InboundMessage, Mesh, MeshConfig, MeshEvent, MeshHandle, Multiaddr, PeerId, Timing,
    TransportConfig, store::MemoryStore,
};

/// A test node: its handle, identity, listen address and the messages it
/// received (collected by a background task so its event stream never
/// fills up).
pub struct TestNode {
    pub mesh: MeshHandle,
    pub identity: Identity,
    pub addr: Multiaddr,
    pub inbox: Arc<Mutex<Vec<InboundMessage>>>,
}

pub fn fast_timing() -> Timing {
    Timing {
        gossip_heartbeat: Duration::from_millis(100),
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_secs(4),
        reconnect_initial: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        reconnect_attempts: 30,
        discovery_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(600),
        state_sync_interval: Duration::from_secs(2),
    }
}

pub fn memory_config(identity: Identity, bootstrap: Vec<Multiaddr>) -> MeshConfig {
    MeshConfig {
        transport: TransportConfig::Memory,
        bootstrap,
        mdns: false,
        autonat: false,
        timing: fast_timing(),
        ..MeshConfig::server(identity)
    }
}

/// A light node (a browser page's configuration) on the memory transport.
pub fn client_config(identity: Identity) -> MeshConfig {
    MeshConfig { transport: TransportConfig::Memory, timing: fast_timing(), ..MeshConfig::client(identity) }
}

impl TestNode {
    /// Starts a node on `listen` (e.g. `/memory/0`).
    pub async fn start(config: MeshConfig, listen: Multiaddr) -> TestNode {
        Self::start_with_store(config, listen, MemoryStore::default()).await
    }

    /// Starts a node keeping its state and mailbox in `store` (a clone kept
    /// by the test outlives the node, like a data directory).
    pub async fn start_with_store(config: MeshConfig, listen: Multiaddr, store: MemoryStore) -> TestNode {
        let identity = config.identity.clone();
        let (mesh, mut events, event_loop) =
            Mesh::build_with_stores(config, Box::new(store.clone()), Box::new(store)).expect("mesh builds");
        tokio::spawn(event_loop.run());
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let sink = inbox.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let MeshEvent::Message(m) = event {
                    sink.lock().unwrap().push(m);
                }
            }
        });
        let addr = mesh.listen_on(listen).await.expect("listens");
        TestNode { mesh, identity, addr, inbox }
    }

    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    pub async fn peer_count(&self) -> usize {
        self.mesh.peers().await.map(|p| p.len()).unwrap_or(0)
    }

    pub async fn connected_to(&self, other: &PeerId) -> bool {
        let other = other.to_base58();
        self.mesh.peers().await.map(|p| p.iter().any(|i| i.peer_id == other)).unwrap_or(false)
    }

    pub fn received(&self, pred: impl Fn(&InboundMessage) -> bool) -> usize {
        self.inbox.lock().unwrap().iter().filter(|m| pred(m)).count()
    }

    /// Waits until `expected` received messages match `pred` (events reach
    /// the inbox shortly after their acknowledgement), then checks there
    /// are not more.
    pub async fn expect_received(&self, expected: usize, what: &str, pred: impl Fn(&InboundMessage) -> bool) {
        wait_until(Duration::from_secs(20), what, || async { self.received(&pred) >= expected }).await;
        assert_eq!(self.received(&pred), expected, "{what}: exactly {expected}");
    }
}

/// Waits until `check` returns true, polling every 20 ms; panics with
/// `what` after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let result = tokio::time::timeout(deadline, async {
        loop {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "timed out after {deadline:?} waiting for: {what}");
}

/// Starts `n` nodes; node 0 is the bootstrap of all the others.
pub async fn mesh_of(n: usize) -> Vec<TestNode> {
    let first =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    let bootstrap = vec![first.addr.clone()];
    let mut nodes = vec![first];
    for _ in 1..n {
        let config = memory_config(Identity::generate().unwrap(), bootstrap.clone());
        nodes.push(TestNode::start(config, "/memory/0".parse().unwrap()).await);
    }
    nodes
}

/// Waits until every node is connected to every other.
pub async fn wait_full_mesh(nodes: &[TestNode], deadline: Duration) {
    let n = nodes.len();
    wait_until(deadline, "every node connected to all others", || async {
        for node in nodes {
            if node.peer_count().await != n - 1 {
                return false;
            }
        }
        true
    })
    .await;
}

/// Writes keys `k0`…`k<n-1>` (values 0…n-1) to `mesh`'s own namespace, 64
/// at a time, each acknowledged.
pub async fn write_keys(mesh: &MeshHandle, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let mesh = mesh.clone();
            async move {
                mesh.state_write(
                    &format!("k{i}"),
                    Some(serde_json::json!(i)),
                    infermesh_core::WriteMode::Update,
                )
                .await
            }
        })
        .buffer_unordered(64)
        .for_each(|r| async { r.unwrap() })
        .await;
}
