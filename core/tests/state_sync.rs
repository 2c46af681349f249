//! Replicated state between nodes in one process (memory transport):
//! catch-up on connect, live updates, and an owner's state outliving the
//! owner's device: another device with the same key gets it back from a
//! replica and keeps writing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::time::Duration;

use common::*;
use infermesh_core::{Identity, WriteMode};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

async fn data_of(node: &TestNode, namespace: &str) -> serde_json::Value {
    node.mesh.state(Some(namespace)).await.unwrap().data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_follows_the_key_through_a_replica() {
    let owner = Identity::generate().unwrap();
    let ns = owner.peer_id().to_base58();

    // The owner writes before anyone else is around.
    let laptop = TestNode::start(memory_config(owner.clone(), vec![]), "/memory/0".parse().unwrap()).await;
    laptop.mesh.state_write("name", Some(json!("John")), WriteMode::Update).await.unwrap();
    laptop.mesh.state_write("age", Some(json!(25)), WriteMode::Update).await.unwrap();
    laptop.mesh.state_write("config", Some(json!({"theme": "dark"})), WriteMode::Create).await.unwrap();
    assert!(laptop.mesh.state_write("age", Some(json!(1)), WriteMode::Create).await.is_err());

    // A replica node joins: it catches up on connect.
    let replica = TestNode::start(
        memory_config(Identity::generate().unwrap(), vec![laptop.addr.clone()]),
        "/memory/0".parse().unwrap(),
    )
    .await;
    let expected = json!({"name": "John", "age": 25, "config": {"theme": "dark"}});
    wait_until(DEADLINE, "the replica to catch up", || async { data_of(&replica, &ns).await == expected })
        .await;

    // Live: a new write reaches the replica without a reconnect.
    laptop.mesh.state_write("active", Some(json!(true)), WriteMode::Update).await.unwrap();
    wait_until(DEADLINE, "the live write to arrive", || async {
        data_of(&replica, &ns).await["active"] == json!(true)
    })
    .await;
    let view = laptop.mesh.state(None).await.unwrap();
    assert!(view.replicas.contains(&replica.peer_id().to_base58()), "the laptop knows the replica: {view:?}");

    // The laptop goes away; a phone with the same key finds its state on
    // the replica and edits it.
    laptop.mesh.shutdown().await.unwrap();
    let phone = TestNode::start(
        memory_config(owner.clone(), vec![replica.addr.clone()]),
        "/memory/0".parse().unwrap(),
    )
    .await;
    wait_until(DEADLINE, "the phone to get the owner's state", || async {
        data_of(&phone, &ns).await["active"] == json!(true)
    })
    .await;
    phone.mesh.state_write("age", Some(json!(26)), WriteMode::Update).await.unwrap();
    phone.mesh.state_write("name", None, WriteMode::Delete).await.unwrap();
    wait_until(DEADLINE, "the replica to see the phone's edits", || async {
        data_of(&replica, &ns).await == json!({"age": 26, "config": {"theme": "dark"}, "active": true})
    })
    .await;

    // Someone else's node holds the data too, but cannot write it: its
    // writes only ever go to its own namespace.
    let stranger = TestNode::start(
        memory_config(Identity::generate().unwrap(), vec![replica.addr.clone()]),
        "/memory/0".parse().unwrap(),
    )
    .await;
    wait_until(DEADLINE, "the stranger to replicate the namespace", || async {
        data_of(&stranger, &ns).await["age"] == json!(26)
    })
    .await;
    stranger.mesh.state_write("age", Some(json!(99)), WriteMode::Update).await.unwrap();
    assert_eq!(data_of(&stranger, &ns).await["age"], json!(26));
    assert_eq!(stranger.mesh.state(None).await.unwrap().data, json!({"age": 99}));
}

/// Nodes that keep replicas only on request: the owner asks for as many as
/// its replication factor, no more, and asks another when one goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_keeps_its_replication_factor() {
    const FACTOR: usize = 2;
    // End-to-end encryption off: no node publishes a KEM key, so a node's
    // entry count is the owner's entries it holds.
    let on_request = |bootstrap: Vec<infermesh_core::Multiaddr>| infermesh_core::MeshConfig {
        replicate: false,
        replica_quota: 100,
        quantum_resistant: false,
        ..memory_config(Identity::generate().unwrap(), bootstrap)
    };
    let first = TestNode::start(on_request(vec![]), "/memory/0".parse().unwrap()).await;
    let mut nodes = vec![first];
    for _ in 0..3 {
        let config = on_request(vec![nodes[0].addr.clone()]);
        nodes.push(TestNode::start(config, "/memory/0".parse().unwrap()).await);
    }
    let owner_config = infermesh_core::MeshConfig {
        replicate: false,
        replica_quota: 0,
        replication_factor: FACTOR,
        quantum_resistant: false,
        ..memory_config(Identity::generate().unwrap(), vec![nodes[0].addr.clone()])
    };
    let owner = TestNode::start(owner_config, "/memory/0".parse().unwrap()).await;
    nodes.push(owner);
    wait_full_mesh(&nodes, DEADLINE).await;
    let owner = nodes.pop().unwrap();
    owner.mesh.state_write("name", Some(json!("John")), WriteMode::Update).await.unwrap();
    owner.mesh.state_write("age", Some(json!(25)), WriteMode::Update).await.unwrap();

    // Which of `nodes` hold the owner's two entries (asking them for the
    // data would make them replicate it: their metrics tell instead).
    fn holding(nodes: &[TestNode]) -> Vec<String> {
        nodes
            .iter()
            .filter(|n| n.mesh.metrics().state_entries == 2)
            .map(|n| n.peer_id().to_base58())
            .collect()
    }
    wait_until(DEADLINE, "two nodes to hold the owner's namespace", || async {
        holding(&nodes).len() >= FACTOR && owner.mesh.state(None).await.unwrap().replicas.len() >= FACTOR
    })
    .await;
    let mut held = holding(&nodes);
    held.sort();
    assert_eq!(held.len(), FACTOR, "exactly the factor, not every node: {held:?}");
    assert_eq!(owner.mesh.state(None).await.unwrap().replicas, held, "the owner lists its replicas");

    // A holder goes away: the owner asks another node.
    let gone = nodes.iter().position(|n| n.peer_id().to_base58() == held[0]).unwrap();
    nodes.remove(gone).mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "a new replica to replace the one that left", || async {
        holding(&nodes).len() == FACTOR
    })
    .await;
    let replicas = owner.mesh.state(None).await.unwrap().replicas;
    assert_eq!(replicas.len(), FACTOR + 1, "the one that left is still known to hold a copy: {replicas:?}");
}

/// A catch-up larger than a connection takes requests at once (32 streams)
/// arrives whole in one round, not in pieces at each periodic round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_catch_up_arrives_in_one_round() {
    const ENTRIES: usize = 9_000; // > 32 fetches of 256
    let config = |bootstrap| {
        let mut config = memory_config(Identity::generate().unwrap(), bootstrap);
        // No periodic round to make up for lost requests.
        config.timing.state_sync_interval = Duration::from_secs(3600);
        // No KEM key published: the entry count is the writes.
        config.quantum_resistant = false;
        config
    };
    let a = TestNode::start(config(vec![]), "/memory/0".parse().unwrap()).await;
    write_keys(&a.mesh, ENTRIES).await;
    assert_eq!(a.mesh.metrics().state_entries, ENTRIES as u64);
    let b = TestNode::start(config(vec![a.addr.clone()]), "/memory/0".parse().unwrap()).await;
    wait_until(Duration::from_secs(60), "the new node to hold every entry", || async {
        b.mesh.metrics().state_entries == ENTRIES as u64
    })
    .await;
    let ns = a.peer_id().to_base58();
    assert_eq!(data_of(&b, &ns).await, data_of(&a, &ns).await);
    // Each entry that arrived was timed from its write.
    let exposition = b.mesh.prometheus_metrics();
    let lag_count = exposition
        .lines()
        .find_map(|l| l.strip_prefix("infermesh_state_sync_lag_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(lag_count, Some(ENTRIES as u64), "{exposition}");
    assert_eq!(b.mesh.metrics().state_entries_ingested, ENTRIES as u64);
}
