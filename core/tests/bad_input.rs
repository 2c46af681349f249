//! Bad input from a peer we did not write: a bare libp2p swarm sends
//! malformed, oversize, expired, duplicate, spoofed and misaddressed
//! envelopes over gossip and direct messages, and raw garbage on every
//! protocol the node speaks. Each rejection must be counted by reason,
//! nothing bad may be delivered, and the node must keep working.
// Native only: these run swarms on tokio (the unit tests cover the browser).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::time::Duration;

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, channel::oneshot};
use infermesh_core::{
    Envelope, Identity, MsgType, PeerId, Sent,
    messaging::RejectReason,
    state::{Entry, EntryRejection, Hlc},
};
use libp2p::{
    Multiaddr, StreamProtocol, SwarmBuilder, Transport,
    core::{transport::MemoryTransport, upgrade},
    gossipsub, noise,
    swarm::NetworkBehaviour,
    yamux,
};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);
const DIRECT: StreamProtocol = StreamProtocol::new("/infermesh/direct/2.0.0");

#[derive(NetworkBehaviour)]
struct Raw {
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum RawCommand {
    Dial(Multiaddr),
    Subscribe(String),
    Publish(String, Vec<u8>, oneshot::Sender<Result<(), String>>),
    SubscribedPeers(String, oneshot::Sender<usize>),
    Connected(PeerId, oneshot::Sender<bool>),
}

/// The foreign peer, running in its own task.
struct RawPeer {
    id: PeerId,
    identity: Identity,
    commands: futures::channel::mpsc::Sender<RawCommand>,
    control: libp2p_stream::Control,
    /// Connections of its that ended or failed to be made.
    ended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawPeer {
    fn start() -> RawPeer {
        Self::start_with(false)
    }

    /// A peer of the state topic's own gossipsub (anonymous, content-addressed).
    fn start_state_gossip() -> RawPeer {
        Self::start_with(true)
    }

    fn start_with(state_gossip: bool) -> RawPeer {
        let identity = Identity::generate().unwrap();
        let id = identity.peer_id();
        let keypair = identity.keypair().clone();
        let mut swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|kp| {
                Ok(MemoryTransport::default()
                    .upgrade(upgrade::Version::V1)
                    .authenticate(noise::Config::new(kp)?)
                    .multiplex(yamux::Config::default()))
            })
            .unwrap()
            .with_behaviour(|kp| {
                let mut config = gossipsub::ConfigBuilder::default();
                config.max_transmit_size(4 * 1024 * 1024).heartbeat_interval(Duration::from_millis(100));
                let authenticity = if state_gossip {
                    config
                        .protocol_id_prefix("/infermesh/state-gossip")
                        .validation_mode(gossipsub::ValidationMode::Anonymous)
                        .message_id_fn(|m| {
                            use sha2::Digest;
                            gossipsub::MessageId::from(&sha2::Sha256::digest(&m.data)[..20])
                        });
                    gossipsub::MessageAuthenticity::Anonymous
                } else {
                    gossipsub::MessageAuthenticity::Signed(kp.clone())
                };
                Raw {
                    gossipsub: gossipsub::Behaviour::new(authenticity, config.build().unwrap()).unwrap(),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let control = swarm.behaviour().stream.new_control();
        let (commands, mut rx) = futures::channel::mpsc::channel::<RawCommand>(16);
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ends = ended.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.next() => match command {
                        None => break,
                        Some(RawCommand::Dial(addr)) => swarm.dial(addr).unwrap(),
                        Some(RawCommand::Subscribe(topic)) => {
                            swarm.behaviour_mut().gossipsub.subscribe(&gossipsub::IdentTopic::new(topic)).unwrap();
                        }
                        Some(RawCommand::Publish(topic, data, reply)) => {
                            let result = swarm.behaviour_mut().gossipsub.publish(gossipsub::IdentTopic::new(topic), data);
                            let _ = reply.send(result.map(|_| ()).map_err(|e| e.to_string()));
                        }
                        Some(RawCommand::Connected(peer, reply)) => {
                            let _ = reply.send(swarm.is_connected(&peer));
                        }
                        Some(RawCommand::SubscribedPeers(topic, reply)) => {
                            let hash = gossipsub::IdentTopic::new(topic).hash();
                            let n = swarm.behaviour().gossipsub.all_peers().filter(|(_, t)| t.contains(&&hash)).count();
                            let _ = reply.send(n);
                        }
                    },
                    event = swarm.select_next_some() => {
                        if matches!(
                            event,
                            libp2p::swarm::SwarmEvent::ConnectionClosed { .. }
                                | libp2p::swarm::SwarmEvent::OutgoingConnectionError { .. }
                        ) {
                            ends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        RawPeer { id, identity, commands, control, ended }
    }

    async fn send(&self, command: RawCommand) {
        use futures::SinkExt;
        self.commands.clone().send(command).await.unwrap();
    }

    /// Sends raw bytes on the direct protocol, on a stream of their own,
    /// as one request (`seq`, then the bytes, which the test frames itself so
    /// it can lie about lengths); returns the rejection label from the
    /// acknowledgement (`None` = accepted).
    async fn direct(&self, to: PeerId, framed: Vec<u8>) -> Option<String> {
        let mut stream = self.control.clone().open_stream(to, DIRECT).await.expect("direct stream");
        stream.write_all(&[7]).await.unwrap();
        stream.write_all(&framed).await.unwrap();
        stream.flush().await.unwrap();
        let (seq, rejected) = read_ack(&mut stream).await;
        assert_eq!(seq, 7, "the acknowledgement names the request");
        rejected
    }

    async fn connected_to(&self, peer: PeerId) -> bool {
        let (tx, rx) = oneshot::channel();
        self.send(RawCommand::Connected(peer, tx)).await;
        rx.await.unwrap()
    }

    async fn publish(&self, topic: &str, data: Vec<u8>) {
        let (tx, rx) = oneshot::channel();
        self.send(RawCommand::Publish(topic.into(), data, tx)).await;
        rx.await.unwrap().expect("published");
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut buf = unsigned_varint::encode::u64_buffer();
    let mut out = unsigned_varint::encode::u64(body.len() as u64, &mut buf).to_vec();
    out.extend_from_slice(body);
    out
}

fn envelope(from: &PeerId, to: &str) -> Envelope {
    let mut env = Envelope::new(MsgType::Thought, to, 5, 60).with_content("hi");
    env.from = from.to_base58();
    env.timestamp = infermesh_core::platform::now_ms();
    env
}

fn dropped(node: &TestNode, reason: RejectReason) -> u64 {
    node.mesh.metrics().dropped_by_reason[reason.as_str()]
}

async fn node_and_raw_peer() -> (TestNode, RawPeer) {
    let node =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    let raw = RawPeer::start();
    raw.send(RawCommand::Dial(node.addr.clone())).await;
    wait_until(DEADLINE, "raw peer connects", || async { node.connected_to(&raw.id).await }).await;
    (node, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_direct_messages_are_rejected_with_their_reason() {
    let (node, raw) = node_and_raw_peer().await;
    let to = node.peer_id().to_base58();

    let good = envelope(&raw.id, &to);
    assert_eq!(raw.direct(node.peer_id(), framed(&good.encode())).await, None);
    assert_eq!(raw.direct(node.peer_id(), framed(&good.encode())).await.as_deref(), Some("duplicate"));

    assert_eq!(
        raw.direct(node.peer_id(), framed(b"\xa3not cbor at all")).await.as_deref(),
        Some("malformed")
    );

    let mut expired = envelope(&raw.id, &to);
    expired.timestamp -= 120_000;
    assert_eq!(raw.direct(node.peer_id(), framed(&expired.encode())).await.as_deref(), Some("expired"));

    let mut future = envelope(&raw.id, &to);
    future.timestamp += 3_600_000;
    assert_eq!(
        raw.direct(node.peer_id(), framed(&future.encode())).await.as_deref(),
        Some("future_timestamp")
    );

    let mut loud = envelope(&raw.id, &to);
    loud.priority = 42;
    assert_eq!(raw.direct(node.peer_id(), framed(&loud.encode())).await.as_deref(), Some("schema"));

    let someone_else = Identity::generate().unwrap().peer_id();
    let spoofed = envelope(&someone_else, &to);
    assert_eq!(
        raw.direct(node.peer_id(), framed(&spoofed.encode())).await.as_deref(),
        Some("sender_mismatch")
    );

    let elsewhere = envelope(&raw.id, &someone_else.to_base58());
    assert_eq!(
        raw.direct(node.peer_id(), framed(&elsewhere.encode())).await.as_deref(),
        Some("misaddressed")
    );

    // A header announcing 64 MiB: refused from the header, the body is never read.
    let mut buf = unsigned_varint::encode::u64_buffer();
    let header = unsigned_varint::encode::u64(64 << 20, &mut buf).to_vec();
    assert_eq!(raw.direct(node.peer_id(), header).await.as_deref(), Some("oversize"));

    for reason in [
        RejectReason::Duplicate,
        RejectReason::Malformed,
        RejectReason::Expired,
        RejectReason::FutureTimestamp,
        RejectReason::Schema,
        RejectReason::SenderMismatch,
        RejectReason::Misaddressed,
        RejectReason::Oversize,
    ] {
        assert_eq!(dropped(&node, reason), 1, "{reason} counted once");
    }
    assert_eq!(node.mesh.metrics().messages_dropped, 8);
    // Only the good one was delivered.
    node.expect_received(1, "only the good message is delivered", |_| true).await;
    assert_eq!(node.received(|m| m.envelope.id == good.id), 1);
}

/// Reads one acknowledgement frame: its `seq` and rejection label.
async fn read_ack(stream: &mut libp2p::Stream) -> (u64, Option<String>) {
    let seq = unsigned_varint::aio::read_u64(&mut *stream).await.expect("an acknowledgement");
    let len = unsigned_varint::aio::read_u64(&mut *stream).await.unwrap();
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.unwrap();
    #[derive(serde::Deserialize)]
    struct Ack {
        rejected: Option<String>,
    }
    (seq, ciborium::from_reader::<Ack, _>(&body[..]).unwrap().rejected)
}

/// The direct protocol carries many messages on one stream, written back
/// to back, each answered by an acknowledgement naming its `seq`. An
/// oversize message in the middle is refused from its header, its bytes
/// are skipped, and the messages after it still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_carries_many_messages_and_survives_an_oversize_one() {
    let (node, raw) = node_and_raw_peer().await;
    let to = node.peer_id().to_base58();
    let first = envelope(&raw.id, &to);
    let last = envelope(&raw.id, &to);
    let limit = infermesh_core::messaging::Limits::default().max_envelope_bytes;

    let mut stream = raw.control.clone().open_stream(node.peer_id(), DIRECT).await.expect("direct stream");
    let mut wire = Vec::new();
    for (seq, body) in [
        (1u8, first.encode()),
        (2, b"\xa3not cbor at all".to_vec()),
        (3, vec![0u8; limit + 1]),
        (4, last.encode()),
    ] {
        wire.push(seq);
        wire.extend(framed(&body));
    }
    stream.write_all(&wire).await.unwrap();
    stream.flush().await.unwrap();

    let mut acks = std::collections::BTreeMap::new();
    while acks.len() < 4 {
        let (seq, rejected) =
            tokio::time::timeout(DEADLINE, read_ack(&mut stream)).await.expect("acks in time");
        assert!(acks.insert(seq, rejected).is_none(), "one acknowledgement per message");
    }
    assert_eq!(
        acks.into_iter().collect::<Vec<_>>(),
        vec![(1, None), (2, Some("malformed".into())), (3, Some("oversize".into())), (4, None)]
    );
    node.expect_received(2, "the messages on either side of the bad ones are delivered", |_| true).await;
    assert_eq!(node.received(|m| m.envelope.id == first.id || m.envelope.id == last.id), 2);
}

/// A peer that takes direct messages and never acknowledges them: the
/// sender gives up after its request timeout with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_acknowledges_times_out() {
    let mut config = memory_config(Identity::generate().unwrap(), vec![]);
    config.quantum_resistant = false;
    config.timing.request_timeout = Duration::from_millis(500);
    let node = TestNode::start(config, "/memory/0".parse().unwrap()).await;
    let raw = RawPeer::start();
    let mut incoming = raw.control.clone().accept(DIRECT).unwrap();
    raw.send(RawCommand::Dial(node.addr.clone())).await;
    wait_until(DEADLINE, "raw peer connects", || async { node.connected_to(&raw.id).await }).await;
    // Take the stream and read what arrives, but never answer.
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.expect("a direct stream");
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            read += n;
        }
        read
    });
    let error = tokio::time::timeout(DEADLINE, node.mesh.send_text(raw.id, "anyone?"))
        .await
        .expect("the send ends by itself")
        .expect_err("no acknowledgement");
    assert!(error.to_string().contains("no acknowledgement in time"), "{error}");
    drop(node);
    reader.abort();
}

/// Sealed direct messages are opened before delivery: one that does not
/// decrypt (tampered, or sealed for another node) or that names a session
/// the node does not have is refused with its reason, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_messages_that_do_not_open_are_rejected_with_their_reason() {
    use infermesh_core::crypto::{E2e, Level, SignedKemKey};
    let (node, raw) = node_and_raw_peer().await;
    let to = node.peer_id().to_base58();
    let mut e2e = E2e::new(raw.identity.clone(), Level::L3);
    e2e.learn_key(node.peer_id(), SignedKemKey::new(&node.identity, Level::L3)).unwrap();
    let sealed = |e2e: &mut E2e, content: &str| {
        let mut env = envelope(&raw.id, &to).with_content(content);
        e2e.seal(&node.peer_id(), &mut env).unwrap();
        env
    };

    // A session the node never saw the start of (its first message lost).
    let mut unseen = E2e::new(raw.identity.clone(), Level::L3);
    unseen.learn_key(node.peer_id(), SignedKemKey::new(&node.identity, Level::L3)).unwrap();
    let mut never_sent = envelope(&raw.id, &to).with_content("first");
    let first = unseen.seal(&node.peer_id(), &mut never_sent).unwrap();
    unseen.confirm(&node.peer_id(), first.session);
    let orphan = sealed(&mut unseen, "second");
    assert_eq!(raw.direct(node.peer_id(), framed(&orphan.encode())).await.as_deref(), Some("e2e_no_session"));

    let good = sealed(&mut e2e, "secret");
    assert!(!good.encode().windows(6).any(|w| w == b"secret"));
    assert_eq!(raw.direct(node.peer_id(), framed(&good.encode())).await, None);
    node.expect_received(1, "the sealed message, opened", |m| {
        m.envelope.id == good.id
            && m.envelope.content.as_deref() == Some("secret")
            && m.e2e == Some(Level::L3)
    })
    .await;

    // Tampered: one bit of the ciphertext (the bytes are found by value).
    let tampered = sealed(&mut e2e, "tamper me");
    let mut bytes = tampered.encode();
    let clean = Envelope::decode(&bytes).unwrap();
    let mut flipped = false;
    for i in (0..bytes.len()).rev() {
        bytes[i] ^= 1;
        if Envelope::decode(&bytes).is_ok_and(|e| e.id == clean.id && e != clean) {
            flipped = true;
            break;
        }
        bytes[i] ^= 1;
    }
    assert!(flipped);
    assert_eq!(raw.direct(node.peer_id(), framed(&bytes)).await.as_deref(), Some("decrypt_failed"));

    // Sealed for another node, then addressed to this one.
    let other = Identity::generate().unwrap();
    let mut for_other = E2e::new(raw.identity.clone(), Level::L3);
    for_other.learn_key(other.peer_id(), SignedKemKey::new(&other, Level::L3)).unwrap();
    let mut misdirected = envelope(&raw.id, &other.peer_id().to_base58()).with_content("not yours");
    for_other.seal(&other.peer_id(), &mut misdirected).unwrap();
    misdirected.to = to.clone();
    assert_eq!(
        raw.direct(node.peer_id(), framed(&misdirected.encode())).await.as_deref(),
        Some("decrypt_failed")
    );

    assert_eq!(dropped(&node, RejectReason::Decrypt), 2);
    assert_eq!(dropped(&node, RejectReason::NoSession), 1);
    assert_eq!(node.mesh.metrics().e2e_decrypt_failures, 2);
    assert_eq!(node.received(|_| true), 1, "nothing else was delivered");
}

/// The topic state entries are gossiped on (in a gossipsub of its own).
const STATE_TOPIC: &str = "/infermesh/state/1";

/// A fresh foreign peer, connected to `node` and subscribed to `topic`.
async fn gossiping_raw_peer(node: &TestNode, topic: &str) -> RawPeer {
    let raw = if topic == STATE_TOPIC { RawPeer::start_state_gossip() } else { RawPeer::start() };
    raw.send(RawCommand::Dial(node.addr.clone())).await;
    raw.send(RawCommand::Subscribe(topic.into())).await;
    wait_until(DEADLINE, "raw peer sees the node's subscription", || async {
        let (tx, rx) = oneshot::channel();
        raw.send(RawCommand::SubscribedPeers(topic.into(), tx)).await;
        rx.await.unwrap() == 1
    })
    .await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gossip_is_rejected_with_its_reason_and_not_delivered() {
    let node =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    node.mesh.subscribe("bad-input").await.unwrap();

    // One fresh peer per bad message: a peer whose message is rejected is
    // penalised by gossipsub scoring and its next messages are ignored
    // before they reach validation.
    type Make = fn(&PeerId, &PeerId) -> Vec<u8>;
    let cases: [(RejectReason, Make); 5] = [
        (RejectReason::Malformed, |_, _| b"garbage, not an envelope".to_vec()),
        (RejectReason::Oversize, |raw, _| {
            let mut env = envelope(raw, "bad-input");
            env.payload = vec![7; 1_500_000];
            env.encode()
        }),
        (RejectReason::Expired, |raw, _| {
            let mut env = envelope(raw, "bad-input");
            env.timestamp -= 120_000;
            env.encode()
        }),
        (RejectReason::SenderMismatch, |_, node| envelope(node, "bad-input").encode()),
        (RejectReason::Misaddressed, |raw, _| envelope(raw, "another-topic").encode()),
    ];
    for (reason, make) in cases {
        let raw = gossiping_raw_peer(&node, "bad-input").await;
        raw.publish("bad-input", make(&raw.id, &node.peer_id())).await;
        wait_until(DEADLINE, &format!("{reason} counted"), || async { dropped(&node, reason) == 1 }).await;
    }
    assert_eq!(node.received(|_| true), 0, "nothing bad was delivered");

    let raw = gossiping_raw_peer(&node, "bad-input").await;
    let good = envelope(&raw.id, "bad-input");
    raw.publish("bad-input", good.encode()).await;
    wait_until(DEADLINE, "the good message arrives", || async { node.received(|_| true) == 1 }).await;
    assert_eq!(node.received(|m| m.envelope.id == good.id && m.sender == raw.id), 1);
    assert_eq!(node.mesh.metrics().messages_dropped, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_protocol_does_not_take_the_node_down() {
    let (node, raw) = node_and_raw_peer().await;
    let witness = TestNode::start(
        memory_config(Identity::generate().unwrap(), vec![node.addr.clone()]),
        "/memory/0".parse().unwrap(),
    )
    .await;
    wait_until(DEADLINE, "witness connects", || async { node.connected_to(&witness.peer_id()).await }).await;

    let mut garbage = vec![0u8; 64 * 1024];
    getrandom::fill(&mut garbage).unwrap();
    let protocols = [
        "/infermesh/direct/2.0.0",
        "/infermesh/e2e/1.0.0",
        "/infermesh/state-sync/1.0.0",
        "/meshsub/1.2.0",
        "/meshsub/1.1.0",
        "/infermesh/kad/1.0.0",
        "/ipfs/id/1.0.0",
        "/ipfs/id/push/1.0.0",
        "/ipfs/ping/1.0.0",
        "/libp2p/circuit/relay/0.2.0/hop",
        "/libp2p/autonat/1.0.0",
        "/libp2p/dcutr",
    ];
    let mut control = raw.control.clone();
    let mut opened = 0;
    for round in 0..3 {
        for protocol in protocols {
            // The connection may have been closed by the node after a
            // protocol violation; the stream control redials.
            let Ok(mut stream) = control.open_stream(node.peer_id(), StreamProtocol::new(protocol)).await
            else {
                continue;
            };
            opened += 1;
            let slice = &garbage[round * 1000..];
            let _ = stream.write_all(slice).await;
            let _ = stream.close().await;
        }
    }
    assert!(opened >= protocols.len(), "most protocols accepted a stream ({opened} opened)");

    // Still alive, for the attacker and for everyone else.
    let status = node.mesh.status().await.unwrap();
    assert!(status.connected_peers >= 1);
    let Sent::Direct(_) = witness.mesh.send_text(node.peer_id(), "still there?").await.unwrap() else {
        panic!("direct")
    };
    let good = envelope(&raw.id, &node.peer_id().to_base58());
    assert_eq!(raw.direct(node.peer_id(), framed(&good.encode())).await, None);
    node.expect_received(2, "both messages after the garbage are delivered", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_gossip_is_refused_counted_and_not_stored() {
    let node =
        TestNode::start(memory_config(Identity::generate().unwrap(), vec![]), "/memory/0".parse().unwrap())
            .await;
    let rejected = |reason: EntryRejection| node.mesh.metrics().state_rejected_by_reason[reason.as_str()];
    let batch = |entries: &[&Entry]| {
        let list: Vec<serde_bytes::ByteBuf> =
            entries.iter().map(|e| serde_bytes::ByteBuf::from(e.encode())).collect();
        let mut out = Vec::new();
        ciborium::into_writer(&list, &mut out).unwrap();
        out
    };

    // Not a list of entries at all.
    let raw = gossiping_raw_peer(&node, STATE_TOPIC).await;
    raw.publish(STATE_TOPIC, b"garbage, not entries".to_vec()).await;
    wait_until(DEADLINE, "garbage counted", || async { rejected(EntryRejection::Malformed) == 1 }).await;

    // A batch with one forged entry among good ones: the forged one is
    // refused, the good ones are kept.
    let raw = gossiping_raw_peer(&node, STATE_TOPIC).await;
    let author = Identity::generate().unwrap();
    let ns = author.peer_id().to_base58();
    let now = Hlc::from_millis(infermesh_core::platform::now_ms());
    let good = Entry::sign(&author, &ns, "good", Some(&json!({"kept": true})), now).unwrap();
    let mut forged = Entry::sign(&author, &ns, "forged", Some(&json!(1)), now).unwrap();
    forged.value = Some("2".into());
    raw.publish(STATE_TOPIC, batch(&[&good, &forged])).await;
    wait_until(DEADLINE, "the forged entry counted", || async {
        rejected(EntryRejection::BadSignature) == 1
    })
    .await;
    let data = node.mesh.state(Some(&ns)).await.unwrap().data;
    assert_eq!(data, json!({"good": {"kept": true}}), "only the good entry is stored");
    // The peer that passed the forged entry on is banned: disconnected.
    wait_until(DEADLINE, "the peer that forwarded a forged entry to be dropped", || async {
        !node.connected_to(&raw.id).await
    })
    .await;

    // The node still takes good gossip from an honest peer.
    let raw = gossiping_raw_peer(&node, STATE_TOPIC).await;
    let later = Entry::sign(&author, &ns, "later", Some(&json!([1, 2])), now + 2).unwrap();
    raw.publish(STATE_TOPIC, batch(&[&later])).await;
    wait_until(DEADLINE, "the good batch is stored", || async {
        node.mesh.state(Some(&ns)).await.unwrap().data["later"] == json!([1, 2])
    })
    .await;
}

/// A peer that sends invalid gossip, on a user topic or the state topic, is
/// banned: disconnected, and refused when it comes back, for the ban's
/// duration; then it is let in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_invalid_gossip_is_banned_for_a_while() {
    let mut config = memory_config(Identity::generate().unwrap(), vec![]);
    config.ban_duration = Duration::from_secs(4);
    let node = TestNode::start(config, "/memory/0".parse().unwrap()).await;
    node.mesh.subscribe("bad-input").await.unwrap();
    for topic in ["bad-input", STATE_TOPIC] {
        let raw = gossiping_raw_peer(&node, topic).await;
        raw.publish(topic, b"garbage".to_vec()).await;
        wait_until(DEADLINE, "the node to drop the peer", || async {
            !node.connected_to(&raw.id).await && !raw.connected_to(node.peer_id()).await
        })
        .await;
        // It comes back at once: refused while banned.
        let ended = || raw.ended.load(std::sync::atomic::Ordering::SeqCst);
        let before = ended();
        raw.send(RawCommand::Dial(node.addr.clone())).await;
        wait_until(DEADLINE, "the dial to be refused", || async { ended() > before }).await;
        assert!(!node.connected_to(&raw.id).await, "{topic}: a banned peer is kept out");
        let status = node.mesh.status().await.unwrap();
        assert_eq!(status.banned_peers, 1, "{topic}");
        // After the ban it is let in again.
        wait_until(DEADLINE, "the ban to end and the peer to be let in", || async {
            raw.send(RawCommand::Dial(node.addr.clone())).await;
            node.connected_to(&raw.id).await
        })
        .await;
    }
    assert_eq!(node.mesh.metrics().peers_banned, 2);
    assert!(node.mesh.prometheus_metrics().contains("infermesh_peers_banned_total 2"));
}
