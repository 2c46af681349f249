//! What a slow application or a hostile peer cannot do to a node: events
//! are never lost without a trace, and direct messages are acknowledged
//! only once the application has them.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use infermesh_core::{Identity, Mesh, MeshError, MeshEvent, WriteMode, store::MemoryStore};
use serde_json::json;

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

    futures::stream::iter(0..KEYS)
        .map(|i| {
            let mesh = a.mesh.clone();
            async move { mesh.state_write(&format!("k{i}"), Some(json!(i)), WriteMode::Update).await }
        })
        .buffer_unordered(64)
        .for_each(|r| async { r.unwrap() })
        .await;
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
