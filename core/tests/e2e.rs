//! End-to-end encryption between nodes in one process (memory transport):
//! sealed direct messages and their status, a recipient that lost its
//! session, the transport-only fallback, and the offline mailbox.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use infermesh_core::{
    Delivery, Envelope, Identity, MeshConfig, MeshError, MsgType, Sent, Via, crypto::Level,
    store::MemoryStore,
};

const DEADLINE: Duration = Duration::from_secs(20);

fn memory() -> infermesh_core::Multiaddr {
    "/memory/0".parse().unwrap()
}

/// Alice and Bob as light clients (browser pages' configuration) of
/// `holder`, each connected and holding a relay reservation on it, so that
/// they reach each other through circuits; and Bob's identity.
async fn two_clients_of(holder: &TestNode) -> (TestNode, Identity, TestNode) {
    let client =
        |identity: Identity| MeshConfig { bootstrap: vec![holder.addr.clone()], ..client_config(identity) };
    let alice = TestNode::start(client(Identity::generate().unwrap()), memory()).await;
    let bob_identity = Identity::generate().unwrap();
    let bob = TestNode::start(client(bob_identity.clone()), memory()).await;
    for node in [&alice, &bob] {
        wait_until(DEADLINE, "clients connect to the holder", || async {
            holder.connected_to(&node.peer_id()).await
        })
        .await;
        wait_until(DEADLINE, "a relay reservation", || async {
            node.mesh.status().await.unwrap().listen_addrs.iter().any(|a| a.contains("/p2p-circuit"))
        })
        .await;
    }
    (alice, bob_identity, bob)
}

async fn send(from: &TestNode, to: &TestNode, text: &str) -> Result<Delivery, MeshError> {
    match from.mesh.send_text(to.peer_id(), text).await? {
        Sent::Direct(delivery) => Ok(delivery),
        other => panic!("a node ID means a direct message, got {other:?}"),
    }
}

/// The holder's metrics count the relay reservations it keeps for light
/// clients and the circuits it relays between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_counts_its_reservations_and_circuits() {
    let holder = TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), memory()).await;
    let (alice, _, bob) = two_clients_of(&holder).await;
    wait_until(DEADLINE, "two reservations", || async { holder.mesh.metrics().relay_reservations == 2 })
        .await;
    send(&alice, &bob, "through the relay").await.unwrap();
    // (The holder's event loop may count it a moment after the message passed.)
    wait_until(DEADLINE, "the circuit alice reached bob through", || async {
        holder.mesh.metrics().relay_circuits >= 1
    })
    .await;
    let exposition = holder.mesh.prometheus_metrics();
    assert!(exposition.contains("infermesh_relay_reservations 2"), "{exposition}");
    bob.mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "bob's reservation and circuit to close", || async {
        let m = holder.mesh.metrics();
        m.relay_reservations == 1 && m.relay_circuits == 0
    })
    .await;
    assert_eq!(alice.mesh.metrics().relay_reservations, 0, "a light client relays for nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_are_sealed_end_to_end_and_the_status_says_so() {
    let x = TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), memory()).await;
    let y_identity = Identity::generate().unwrap();
    let y = TestNode::start(memory_config(y_identity.clone(), vec![x.addr.clone()]), memory()).await;
    wait_until(DEADLINE, "y connects", || async { x.connected_to(&y.peer_id()).await }).await;

    let delivery = send(&x, &y, "quantum hello").await.unwrap();
    assert!(delivery.encrypted && delivery.held_by.is_none());
    y.expect_received(1, "y gets it, opened", |m| {
        m.envelope.content.as_deref() == Some("quantum hello")
            && m.e2e == Some(Level::L3)
            && m.via == Via::Direct
    })
    .await;
    let peers = x.mesh.peers().await.unwrap();
    let y_info = peers.iter().find(|p| p.peer_id == y.peer_id().to_base58()).unwrap();
    assert!(y_info.quantum_secure && y_info.kem_level == Some(3), "{y_info:?}");
    let metrics = x.mesh.metrics();
    assert_eq!(metrics.e2e_sessions, 1);
    // The transport counted the bytes both ways (the handshake alone is
    // over a kilobyte).
    assert!(metrics.bytes_out > 1024 && metrics.bytes_in > 0, "{metrics:?}");
    let status = x.mesh.status().await.unwrap();
    assert!(status.quantum_resistant && status.kem_level == 3);

    // Each side published its signed KEM key in its namespace, out of the
    // application's data.
    let ns = y.peer_id().to_base58();
    wait_until(DEADLINE, "y's KEM key to be in y's namespace", || async {
        y.mesh.state_get(Some(&ns), "_kem/3").await.unwrap().is_some()
    })
    .await;
    assert_eq!(y.mesh.state(None).await.unwrap().data, serde_json::json!({}));

    // y restarts: it has lost the session; x's next message is refused
    // once, then goes again with a fresh handshake.
    y.mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "x to see y leave", || async { !x.connected_to(&y.peer_id()).await }).await;
    let y = TestNode::start(memory_config(y_identity, vec![x.addr.clone()]), memory()).await;
    wait_until(DEADLINE, "y reconnects", || async { x.connected_to(&y.peer_id()).await }).await;
    let delivery = send(&x, &y, "after your restart").await.unwrap();
    assert!(delivery.encrypted);
    y.expect_received(1, "the message after the restart", |m| {
        m.envelope.content.as_deref() == Some("after your restart")
    })
    .await;
    assert_eq!(y.mesh.metrics().dropped_by_reason["e2e_no_session"], 1);

    // A node with quantum resistance off: transport encryption only.
    let plain_config = MeshConfig {
        quantum_resistant: false,
        ..memory_config(Identity::generate().unwrap(), vec![x.addr.clone()])
    };
    let z = TestNode::start(plain_config, memory()).await;
    wait_until(DEADLINE, "z connects", || async { x.connected_to(&z.peer_id()).await }).await;
    let delivery = send(&z, &x, "in the clear").await.unwrap();
    assert!(!delivery.encrypted);
    x.expect_received(1, "x gets it, not end-to-end encrypted", |m| {
        m.envelope.content.as_deref() == Some("in the clear") && m.e2e.is_none()
    })
    .await;
    assert!(!z.mesh.status().await.unwrap().quantum_resistant);
}

/// Keys rotate while messages are in flight: none is lost, both sides count
/// the rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_rotate_under_load_without_losing_a_message() {
    use futures::StreamExt;
    use infermesh_core::crypto::Rekey;
    const SENT: usize = 1000;
    let rekey = Rekey { messages: 200, age: Duration::from_secs(3600) };
    let config = |bootstrap| MeshConfig {
        e2e_rekey: rekey,
        ..memory_config(Identity::generate().unwrap(), bootstrap)
    };
    let x = TestNode::start(config(vec![]), memory()).await;
    let y = TestNode::start(config(vec![x.addr.clone()]), memory()).await;
    wait_until(DEADLINE, "y connects", || async { x.connected_to(&y.peer_id()).await }).await;
    let to = y.peer_id();
    let results: Vec<_> = futures::stream::iter(0..SENT)
        .map(|i| {
            let mesh = x.mesh.clone();
            async move { mesh.send_text(to, &format!("rotating {i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    y.expect_received(SENT, "every message", |m| m.e2e == Some(Level::L3)).await;
    // 1000 messages, a new key every 200: epochs 0 to 4.
    assert_eq!(x.mesh.metrics().e2e_rekeys, 4);
    assert_eq!(y.mesh.metrics().e2e_rekeys, 4);
    assert_eq!(y.mesh.metrics().dropped_by_reason.values().sum::<u64>(), 0, "nothing refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_offline_peer_waits_sealed_in_a_mailbox() {
    // A native holder (its store outlives its restart); light clients
    // (browser pages' configuration) that reach each other through it.
    let holder_identity = Identity::generate().unwrap();
    let holder_store = MemoryStore::default();
    let holder = TestNode::start_with_store(
        memory_config(holder_identity.clone(), vec![]),
        memory(),
        holder_store.clone(),
    )
    .await;
    let client =
        |identity: Identity| MeshConfig { bootstrap: vec![holder.addr.clone()], ..client_config(identity) };
    let (alice, bob_identity, bob) = two_clients_of(&holder).await;
    let delivery = send(&alice, &bob, "hello bob").await.unwrap();
    assert!(delivery.encrypted && delivery.held_by.is_none());
    bob.expect_received(1, "bob online", |m| m.envelope.content.as_deref() == Some("hello bob")).await;
    // Bob's KEM key reached the holder's replica of his namespace.
    let bob_ns = bob.peer_id().to_base58();
    wait_until(DEADLINE, "the holder to replicate bob's key", || async {
        holder.mesh.state_get(Some(&bob_ns), "_kem/3").await.unwrap().is_some()
    })
    .await;

    bob.mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "bob to be gone", || async { !holder.connected_to(&bob.peer_id()).await }).await;

    // Alice knows bob's key; carol never met bob and finds it at the holder.
    let held = send(&alice, &bob, "while you were out").await.unwrap();
    assert_eq!(held.held_by, Some(holder.peer_id()));
    let carol = TestNode::start(client(Identity::generate().unwrap()), memory()).await;
    wait_until(DEADLINE, "carol connects", || async { holder.connected_to(&carol.peer_id()).await }).await;
    // Carol writes as an agent: the name is kept, the node behind it proven.
    let mut as_agent =
        Envelope::new(MsgType::Thought, bob.peer_id().to_base58(), 5, 60).with_content("hi from carol");
    as_agent.from = "carol-agent".into();
    let Sent::Direct(from_carol) = carol.mesh.send(as_agent).await.unwrap() else { panic!("direct") };
    assert_eq!(from_carol.held_by, Some(holder.peer_id()));

    let stored = holder.mesh.held_mail().await.unwrap();
    assert_eq!(stored.len(), 2);
    for frame in &stored {
        for plain in [&b"while you were out"[..], b"hi from carol"] {
            assert!(!frame.windows(plain.len()).any(|w| w == plain), "the holder keeps ciphertext only");
        }
    }
    assert_eq!(holder.mesh.metrics().mailbox_held, 2);

    // The holder restarts: the messages were on its disk, ciphertext only.
    let on_disk = holder_store.mail();
    assert_eq!(on_disk.len(), 2);
    for (recipient, held) in &on_disk {
        assert_eq!(*recipient, bob.peer_id());
        for plain in [&b"while you were out"[..], b"hi from carol"] {
            assert!(!held.frame.windows(plain.len()).any(|w| w == plain), "stored as ciphertext only");
        }
    }
    holder.mesh.shutdown().await.unwrap();
    let holder =
        TestNode::start_with_store(memory_config(holder_identity, vec![]), memory(), holder_store.clone())
            .await;
    assert_eq!(holder.mesh.metrics().mailbox_held, 2);

    // Bob comes back (the same key, a new device): the mail is delivered.
    let bob = TestNode::start(
        MeshConfig { bootstrap: vec![holder.addr.clone()], ..client_config(bob_identity) },
        memory(),
    )
    .await;
    bob.expect_received(2, "bob's mail", |m| {
        m.via == Via::Mailbox(holder.peer_id()) && m.e2e == Some(Level::L3)
    })
    .await;
    let senders: Vec<_> = {
        let inbox = bob.inbox.lock().unwrap();
        let mut s: Vec<_> = inbox.iter().map(|m| (m.envelope.content.clone().unwrap(), m.sender)).collect();
        s.sort();
        s
    };
    assert_eq!(
        senders,
        [("hi from carol".to_owned(), carol.peer_id()), ("while you were out".to_owned(), alice.peer_id())]
    );
    assert_eq!(bob.received(|m| m.envelope.from == "carol-agent"), 1);
    // Once bob's node confirms, the holder forgets them, on disk too.
    wait_until(DEADLINE, "the holder to let go", || async {
        holder.mesh.metrics().mailbox_delivered == 2 && holder_store.mail().is_empty()
    })
    .await;
    assert!(holder.mesh.held_mail().await.unwrap().is_empty());

    // Nobody knows a stranger's key: a clear error, nothing held.
    let stranger = Identity::generate().unwrap().peer_id();
    let err = alice.mesh.send_text(stranger, "hello?").await.unwrap_err();
    assert!(err.to_string().contains("key is unknown"), "{err}");
}

/// A node publishes its KEM key when it starts: one that went offline
/// before it ever sent or received an encrypted message can still be
/// written to, sealed, through a holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_used_encryption_can_be_written_to_while_offline() {
    let holder = TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), memory()).await;
    let client =
        |identity: Identity| MeshConfig { bootstrap: vec![holder.addr.clone()], ..client_config(identity) };
    let bob_identity = Identity::generate().unwrap();
    let bob = TestNode::start(client(bob_identity.clone()), memory()).await;
    let bob_ns = bob.peer_id().to_base58();
    wait_until(DEADLINE, "the holder to replicate bob's key", || async {
        holder.mesh.state_get(Some(&bob_ns), "_kem/3").await.unwrap().is_some()
    })
    .await;
    assert_eq!(bob.mesh.metrics().e2e_sessions, 0, "bob never used end-to-end encryption");
    bob.mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "bob to be gone", || async { !holder.connected_to(&bob.peer_id()).await }).await;

    // Alice (at level 1) arrives after bob left: she finds his level-3 key
    // at the holder and seals up to it. Dave, at level 5, does not seal
    // down: a clear error, nothing held.
    let at_level = |level: Level| MeshConfig { kem_level: level, ..client(Identity::generate().unwrap()) };
    let alice = TestNode::start(at_level(Level::L1), memory()).await;
    let dave = TestNode::start(at_level(Level::L5), memory()).await;
    for node in [&alice, &dave] {
        wait_until(DEADLINE, "a sender connects", || async { holder.connected_to(&node.peer_id()).await })
            .await;
    }
    let held = send(&alice, &bob, "welcome back").await.unwrap();
    assert_eq!(held.held_by, Some(holder.peer_id()));
    assert!(held.encrypted);
    let err = send(&dave, &bob, "not below level 5").await.unwrap_err();
    assert!(err.to_string().contains("key is unknown"), "{err}");
    assert_eq!(holder.mesh.metrics().mailbox_held, 1);

    let bob = TestNode::start(client(bob_identity), memory()).await;
    bob.expect_received(1, "bob's mail", |m| {
        m.via == Via::Mailbox(holder.peer_id())
            && m.e2e == Some(Level::L3)
            && m.envelope.content.as_deref() == Some("welcome back")
    })
    .await;
}

/// A recipient whose application is not reading its events yet takes
/// what fits in its event stream; the holder keeps the rest and delivers
/// it later, so nothing held is lost to a full queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_that_does_not_fit_the_recipients_event_stream_stays_with_the_holder() {
    use futures::StreamExt;
    use infermesh_core::{Mesh, MeshEvent};
    const MAIL: usize = 12;
    let holder = TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), memory()).await;
    let client =
        |identity: Identity| MeshConfig { bootstrap: vec![holder.addr.clone()], ..client_config(identity) };
    let (alice, bob_identity, bob) = two_clients_of(&holder).await;
    send(&alice, &bob, "hello").await.unwrap();
    bob.expect_received(1, "bob online", |m| m.envelope.content.as_deref() == Some("hello")).await;
    bob.mesh.shutdown().await.unwrap();
    wait_until(DEADLINE, "bob to be gone", || async { !holder.connected_to(&bob.peer_id()).await }).await;
    for i in 0..MAIL {
        let held = send(&alice, &bob, &format!("held {i}")).await.unwrap();
        assert_eq!(held.held_by, Some(holder.peer_id()));
    }

    // Bob's next device, with room for 8 events, and nobody reading them yet.
    let config = MeshConfig { event_buffer: 8, ..client(bob_identity) };
    let (bob2, mut events, event_loop) = Mesh::build(config).unwrap();
    tokio::spawn(event_loop.run());
    wait_until(DEADLINE, "some mail to be taken", || async { holder.mesh.metrics().mailbox_delivered >= 1 })
        .await;
    let metrics = holder.mesh.metrics();
    assert!(metrics.mailbox_held >= (MAIL - 8) as u64, "the rest stays with the holder: {metrics:?}");
    assert_eq!(bob2.metrics().dropped_by_reason["queue_full"], 0);

    // The application reads its events: the rest arrives, each once.
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let MeshEvent::Message(m) = event {
                sink.lock().unwrap().push(m.envelope.content.unwrap_or_default());
            }
        }
    });
    wait_until(DEADLINE, "all the mail", || async { received.lock().unwrap().len() >= MAIL }).await;
    let mut got = received.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<String> = (0..MAIL).map(|i| format!("held {i}")).collect();
    want.sort();
    assert_eq!(got, want);
    wait_until(DEADLINE, "the holder to let go", || async {
        let m = holder.mesh.metrics();
        m.mailbox_held == 0 && m.mailbox_delivered == MAIL as u64
    })
    .await;
    assert_eq!(bob2.metrics().dropped_by_reason["queue_full"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_value_is_ciphertext_on_a_replica_and_clear_on_the_owners_other_device() {
    use infermesh_core::WriteMode;
    use serde_json::json;
    let owner = Identity::generate().unwrap();
    let ns = owner.peer_id().to_base58();
    let laptop = TestNode::start(memory_config(owner.clone(), vec![]), memory()).await;
    laptop
        .mesh
        .state_write_private("wallet", json!({"pin": 4321, "seed": "correct horse"}), WriteMode::Update)
        .await
        .unwrap();
    laptop.mesh.state_write("name", Some(json!("Ada")), WriteMode::Update).await.unwrap();
    assert_eq!(
        laptop.mesh.state_get(None, "wallet").await.unwrap(),
        Some(json!({"pin": 4321, "seed": "correct horse"}))
    );
    assert_eq!(laptop.mesh.state(None).await.unwrap().data["wallet"]["pin"], json!(4321));
    // Only in one's own namespace.
    let elsewhere = laptop
        .mesh
        .state_write_in(
            Some(&Identity::generate().unwrap().peer_id().to_base58()),
            "x",
            Some(json!(1)),
            WriteMode::Update,
        )
        .await;
    assert!(elsewhere.is_err());

    let replica =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![laptop.addr.clone()]), memory())
            .await;
    wait_until(DEADLINE, "the replica to hold both values", || async {
        replica.mesh.state(Some(&ns)).await.unwrap().data.as_object().is_some_and(|o| o.len() == 2)
    })
    .await;
    let held = replica.mesh.state(Some(&ns)).await.unwrap().data;
    assert_eq!(held["name"], json!("Ada"));
    let sealed = held["wallet"].to_string();
    assert!(
        sealed.contains("$sealed") && !sealed.contains("4321") && !sealed.contains("correct horse"),
        "{sealed}"
    );

    // The laptop goes; a phone with the same key reads it from the replica.
    laptop.mesh.shutdown().await.unwrap();
    let phone = TestNode::start(memory_config(owner, vec![replica.addr.clone()]), memory()).await;
    wait_until(DEADLINE, "the phone to read the private value", || async {
        phone.mesh.state_get(None, "wallet").await.unwrap()
            == Some(json!({"pin": 4321, "seed": "correct horse"}))
    })
    .await;
}
