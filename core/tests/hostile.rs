//! What a slow application or a hostile peer cannot do to a node: events
//! are never lost without a trace, and direct messages are acknowledged
//! only once the application has them.
// Native only: these run nodes on tokio (the unit tests cover the browser).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use infermesh_core::{Identity, Mesh, MeshError, MeshEvent, store::MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_falls_behind_is_told_what_it_missed() {
    const KEYS: usize = 2_000;
    let a =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    // B's application reads nothing until the end (its stream holds 16).
    let mut config = memory_config(Identity::generate().unwrap(), vec![a.addr.clone()]);
    config.event_buffer = 16;
    let store = MemoryStore::default();
    let (b, mut events, event_loop) =
        Mesh::build_with_stores(config, Box::new(store.clone()), Box::new(store)).unwrap();
    tokio::spawn(event_loop.run());
    b.listen_on("/memory/0".parse().unwrap()).await.unwrap();
    let ns = a.peer_id().to_base58();
    wait_until(Duration::from_secs(20), "B connected to A", || async { a.connected_to(&b.peer_id()).await })
        .await;
    b.state(Some(&ns)).await.unwrap(); // B replicates A's namespace

    write_keys(&a.mesh, KEYS).await;
    wait_until(Duration::from_secs(30), "B to hold every key", || async {
        b.state(Some(&ns)).await.is_ok_and(|v| v.data.as_object().is_some_and(|o| o.len() == KEYS))
    })
    .await;

    // A direct message while B's application is behind: refused, and A is
    // told why, rather than acknowledged and dropped.
    let refused = a.mesh.send_text(b.peer_id(), "while behind").await;
    match refused {
        Err(MeshError::RejectedByPeer { reason, .. }) => assert_eq!(reason, "queue_full"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // B's application catches up: every change was reported, or it is told
    // to re-read A's namespace.
    let mut reported = std::collections::HashSet::new();
    let mut lagged = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        match event {
            MeshEvent::StateChanged { namespace, key, .. } if namespace == ns => {
                reported.insert(key);
            }
            MeshEvent::Lagged { namespaces, .. } => lagged.extend(namespaces),
            _ => {}
        }
    }
    eprintln!("{} of {KEYS} changes reported one by one; lagged: {lagged:?}", reported.len());
    assert!(reported.len() < KEYS, "a 16-event stream cannot have taken them all");
    assert!(lagged.contains(&ns), "B's application must learn that it missed changes to {ns}");

    // Caught up: direct messages are taken again.
    a.mesh.send_text(b.peer_id(), "caught up").await.expect("delivered once there is room");
    let delivered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            if let MeshEvent::Message(m) = event {
                return m.envelope.content;
            }
        }
        None
    })
    .await
    .expect("the message arrives");
    assert_eq!(delivered.as_deref(), Some("caught up"));
}

/// Sybils that connect to a node first take at most three quarters of its
/// `max_peers`, and its bootstrap peer is let in whatever the count: a
/// node cannot be eclipsed by peers that come to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_cannot_eclipse_a_node_from_its_bootstrap_peer() {
    let bootstrap_identity = Identity::generate().unwrap();
    let port = 1_000_000 + u64::from(std::process::id());
    let bootstrap_addr: libp2p::Multiaddr =
        format!("/memory/{port}/p2p/{}", bootstrap_identity.peer_id()).parse().unwrap();
    let mut config = memory_config(Identity::generate().unwrap(), vec![bootstrap_addr]);
    config.max_peers = 4;
    let node = TestNode::start(config, "/memory/0".parse().unwrap()).await;

    // Five sybils connect while the bootstrap peer is down.
    let mut sybils = Vec::new();
    for _ in 0..5 {
        let mut config = memory_config(Identity::generate().unwrap(), vec![node.addr.clone()]);
        config.timing.reconnect_attempts = 1;
        sybils.push(TestNode::start(config, "/memory/0".parse().unwrap()).await);
    }
    wait_until(Duration::from_secs(20), "three sybils in", || async { node.peer_count().await == 3 }).await;
    let status = node.mesh.status().await.unwrap();
    assert_eq!(status.limits["max_inbound_peers"], 3);

    // The bootstrap peer comes up: the node reaches it.
    let bootstrap = TestNode::start(
        memory_config(bootstrap_identity, vec![]),
        format!("/memory/{port}").parse().unwrap(),
    )
    .await;
    wait_until(Duration::from_secs(20), "the node to reach its bootstrap peer", || async {
        node.connected_to(&bootstrap.peer_id()).await
    })
    .await;
    let mut admitted = 0;
    for sybil in &sybils {
        admitted += usize::from(node.connected_to(&sybil.peer_id()).await);
    }
    assert_eq!(admitted, 3, "no more than three quarters of max_peers came in");
}
