//! Several nodes in one process over the memory transport: discovery from
//! one bootstrap address, broadcast, direct messages with acknowledgements,
//! healing after a restart, and `max_peers`.
// Native only: these run swarms on tokio (the unit tests cover the browser).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::time::Duration;

use common::*;
use infermesh_core::{Envelope, Identity, MeshError, MsgType, PeerId, Sent, Via};
use libp2p::multiaddr::Protocol;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_find_each_other_from_one_bootstrap_address() {
    let nodes = mesh_of(5).await;
    wait_full_mesh(&nodes, DEADLINE).await;
    // Node 4 only ever knew node 0's address, yet it talks to node 1 directly.
    assert!(nodes[4].connected_to(&nodes[1].peer_id()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_node() {
    let nodes = mesh_of(5).await;
    wait_full_mesh(&nodes, DEADLINE).await;
    for node in &nodes {
        assert!(node.mesh.subscribe("swarm-alpha").await.unwrap());
    }
    wait_until(DEADLINE, "node 2 sees 4 subscribers", || async {
        nodes[2].mesh.topic_peers("swarm-alpha").await.unwrap().len() == 4
    })
    .await;

    let env = Envelope::new(MsgType::ConsensusProposal, "swarm-alpha", 7, 60)
        .with_payload(vec![1, 2, 3])
        .with_content("proposal 1");
    let sent = nodes[2].mesh.send(env.clone()).await.unwrap();
    assert_eq!(sent, Sent::Broadcast { id: env.id.clone(), topic: "swarm-alpha".into() });

    let sender = nodes[2].peer_id();
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != 2) {
        wait_until(DEADLINE, &format!("node {i} receives the broadcast"), || async {
            node.received(|m| m.envelope.id == env.id) == 1
        })
        .await;
        let inbox = node.inbox.lock().unwrap();
        let m = inbox.iter().find(|m| m.envelope.id == env.id).unwrap();
        assert_eq!(m.sender, sender);
        assert_eq!(m.via, Via::Topic("swarm-alpha".into()));
        assert_eq!(m.envelope.msg_type, MsgType::ConsensusProposal);
        assert_eq!(m.envelope.payload, vec![1, 2, 3]);
        assert_eq!(m.envelope.from, sender.to_base58());
    }
    assert_eq!(nodes[2].received(|_| true), 0, "a publisher does not receive its own message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_round_trip_with_acknowledgements() {
    let nodes = mesh_of(5).await;
    wait_full_mesh(&nodes, DEADLINE).await;
    let (a, b) = (&nodes[1], &nodes[4]);

    let Sent::Direct(delivery) = a.mesh.send_text(b.peer_id(), "ping from a").await.unwrap() else {
        panic!("a node ID means a direct message")
    };
    assert!(delivery.rtt > Duration::ZERO);
    b.expect_received(1, "b gets the direct message", |m| m.envelope.id == delivery.id).await;
    let got = b.inbox.lock().unwrap().iter().find(|m| m.envelope.id == delivery.id).cloned();
    let got = got.expect("acknowledged means delivered to the receiver's event stream");
    assert_eq!(got.via, Via::Direct);
    assert_eq!(got.sender, a.peer_id());
    assert_eq!(got.envelope.content.as_deref(), Some("ping from a"));

    // And back, with the seed's addressing: `to` is the node ID.
    let reply =
        Envelope::new(MsgType::Response, a.peer_id().to_base58(), 9, 30).with_payload(b"pong".to_vec());
    assert!(matches!(b.mesh.send(reply.clone()).await.unwrap(), Sent::Direct(_)));
    a.expect_received(1, "a gets the reply", |m| m.envelope.id == reply.id && m.sender == b.peer_id()).await;

    // Many at once: more than the in-flight window, all acknowledged.
    let to = b.peer_id();
    let sends = (0..200).map(|i| {
        let mesh = a.mesh.clone();
        async move { mesh.send_text(to, &format!("burst {i}")).await }
    });
    let results = futures::future::join_all(sends).await;
    assert!(results.iter().all(|r| r.is_ok()), "{:?}", results.iter().find(|r| r.is_err()));
    b.expect_received(200, "the burst", |m| {
        m.envelope.content.as_deref().is_some_and(|c| c.starts_with("burst "))
    })
    .await;

    // A node nobody knows cannot be reached, and the error says so.
    let stranger = Identity::generate().unwrap().peer_id();
    let err = a.mesh.send_text(stranger, "hello?").await.unwrap_err();
    assert!(matches!(err, MeshError::Delivery { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_healed_back_into_the_mesh() {
    let mut nodes = mesh_of(5).await;
    wait_full_mesh(&nodes, DEADLINE).await;

    let gone = nodes.remove(3);
    let (identity, addr, id) = (gone.identity.clone(), gone.addr.clone(), gone.peer_id());
    gone.mesh.shutdown().await.unwrap();
    drop(gone);
    wait_until(DEADLINE, "the others notice node 3 left", || async {
        for node in &nodes {
            if node.connected_to(&id).await {
                return false;
            }
        }
        true
    })
    .await;

    // Same key, same address, and no bootstrap list: it is the others who
    // find their way back to it.
    let listen = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    let back = TestNode::start(memory_config(identity, vec![]), listen).await;
    assert_eq!(back.peer_id(), id);
    nodes.push(back);
    wait_full_mesh(&nodes, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_is_enforced() {
    let boot =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    let limited = TestNode::start(
        infermesh_core::MeshConfig {
            max_peers: 2,
            ..memory_config(Identity::generate().unwrap(), vec![boot.addr.clone()])
        },
        "/memory/0".parse().unwrap(),
    )
    .await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let config = memory_config(Identity::generate().unwrap(), vec![boot.addr.clone()]);
        others.push(TestNode::start(config, "/memory/0".parse().unwrap()).await);
    }
    // Everyone learns of everyone, and the limited node fills its two slots.
    wait_until(DEADLINE, "the limited node has two peers", || async { limited.peer_count().await == 2 })
        .await;
    wait_until(DEADLINE, "the others form a mesh with the bootstrap node", || async {
        for node in &others {
            let peers: Vec<PeerId> = node
                .mesh
                .peers()
                .await
                .unwrap()
                .iter()
                .filter_map(|p| p.peer_id.parse().ok())
                .filter(|p| *p != limited.peer_id())
                .collect();
            if peers.len() != 3 {
                return false;
            }
        }
        true
    })
    .await;
    // Every node agrees on who holds the two slots.
    let limited_id = limited.peer_id();
    wait_until(DEADLINE, "views of the limited node's connections agree", || async {
        let holders: Vec<String> =
            limited.mesh.peers().await.unwrap().into_iter().map(|p| p.peer_id).collect();
        let mut claimed = 0;
        for node in std::iter::once(&boot).chain(&others) {
            let connected = node.connected_to(&limited_id).await;
            if connected != holders.contains(&node.peer_id().to_base58()) {
                return false;
            }
            claimed += usize::from(connected);
        }
        claimed == 2
    })
    .await;
    assert_eq!(limited.peer_count().await, 2, "never more than max_peers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_clients_reach_each_other_through_a_relay() {
    let relay =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    // Light clients (browser pages): no listener of their own, a reservation
    // on the relay instead.
    let client = || async {
        let config = client_config(Identity::generate().unwrap());
        let identity = config.identity.clone();
        let (mesh, mut events, event_loop) = infermesh_core::Mesh::build(config).unwrap();
        tokio::spawn(event_loop.run());
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = inbox.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(event) = events.next().await {
                if let infermesh_core::MeshEvent::Message(m) = event {
                    sink.lock().unwrap().push(m);
                }
            }
        });
        mesh.join(relay.addr.clone()).await.expect("joins through the relay");
        TestNode { mesh, identity, addr: "/memory/1".parse().unwrap(), inbox }
    };
    let (a, b) = (client().await, client().await);
    for node in [&a, &b] {
        wait_until(DEADLINE, "a relay reservation", || async {
            node.mesh
                .status()
                .await
                .unwrap()
                .listen_addrs
                .iter()
                .any(|addr| addr.contains("/p2p-circuit/p2p/"))
        })
        .await;
    }
    assert!(!a.connected_to(&b.peer_id()).await, "the clients only know the relay");

    let Sent::Direct(delivery) = a.mesh.send_text(b.peer_id(), "through the relay").await.unwrap() else {
        panic!("direct")
    };
    b.expect_received(1, "b gets it through the relay", |m| {
        m.envelope.id == delivery.id && m.sender == a.peer_id()
    })
    .await;
    let peers = a.mesh.peers().await.unwrap();
    let to_b = peers.iter().find(|p| p.peer_id == b.peer_id().to_base58()).expect("connected to b now");
    assert_eq!(to_b.transport, "relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_relays_broadcasts_between_clients_as_a_gossip_hub() {
    let hub =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    let client = || async {
        let config =
            infermesh_core::MeshConfig { auto_relay: false, ..client_config(Identity::generate().unwrap()) };
        let node = TestNode::start(config, "/memory/0".parse().unwrap()).await;
        node.mesh.join(hub.addr.clone()).await.unwrap();
        node
    };
    let (a, b) = (client().await, client().await);
    b.mesh.subscribe("chat").await.unwrap();
    a.mesh.subscribe("chat").await.unwrap();
    wait_until(DEADLINE, "the hub joins the topic", || async {
        hub.mesh.status().await.unwrap().hub_topics == vec!["chat".to_owned()]
    })
    .await;
    // Subscriptions travel on their own: wait until the hub knows both
    // subscribers (and a knows the hub) before publishing.
    wait_until(DEADLINE, "the hub sees both subscribers, a sees the hub", || async {
        let at_hub = hub.mesh.topic_peers("chat").await.unwrap();
        at_hub.contains(&a.peer_id())
            && at_hub.contains(&b.peer_id())
            && a.mesh.topic_peers("chat").await.unwrap().contains(&hub.peer_id())
    })
    .await;
    let sent = a.mesh.publish_text("chat", "hello b").await.unwrap();
    let Sent::Broadcast { id, .. } = sent else { panic!("broadcast") };
    wait_until(DEADLINE, "b receives through the hub", || async { b.received(|m| m.envelope.id == id) == 1 })
        .await;
    assert!(!a.connected_to(&b.peer_id()).await, "only through the hub");
    // The hub relays but does not deliver to its own user, and its user's
    // topics are not changed by it.
    assert_eq!(hub.received(|_| true), 0);
    assert_eq!(hub.mesh.metrics().messages_in, 1, "relayed messages count as received");
    assert!(hub.mesh.status().await.unwrap().topics.is_empty());
    assert!(hub.mesh.subscribe("chat").await.unwrap(), "the hub's user joins for the first time");
    // Everyone leaves: the hub stops relaying the topic.
    assert!(hub.mesh.unsubscribe("chat").await.unwrap());
    a.mesh.unsubscribe("chat").await.unwrap();
    b.mesh.unsubscribe("chat").await.unwrap();
    wait_until(DEADLINE, "the hub leaves the unused topic", || async {
        hub.mesh.status().await.unwrap().hub_topics.is_empty()
    })
    .await;
}
