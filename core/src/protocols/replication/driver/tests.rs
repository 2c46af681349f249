#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::json;

use super::*;

/// A driver whose answers go back to the asker by the asker's `AskId`.
type Node = Replication<AskId>;

fn settings(quota: usize, factor: usize) -> Settings {
    Settings {
        replicate: quota > 0,
        quota,
        factor,
        sync_interval: Duration::from_secs(30),
        level: Level::L1,
        limits: ReplicaLimits::default(),
    }
}

fn node(seed: u8, quota: usize, factor: usize) -> (Node, PeerId) {
    let identity = Identity::from_seed([seed; 32]);
    let peer = identity.peer_id();
    let (node, skipped) = Node::new(
        identity,
        Vec::new(),
        settings(quota, factor),
        Arc::new(Metrics::new(|_, _| {})),
        Instant::now(),
    );
    assert_eq!(skipped, 0);
    (node, peer)
}

/// What a driver asked for, sorted by kind.
#[derive(Default)]
struct Out {
    requests: Vec<(PeerId, AskId, SyncRequest)>,
    responses: Vec<(AskId, SyncResponse)>,
    gossip: Vec<Vec<u8>>,
    changed: Vec<(String, Option<Value>)>,
    persisted: Vec<(Vec<Entry>, Option<WriteReply>)>,
}

fn drain(node: &mut Node) -> Out {
    let mut out = Out::default();
    while let Some(action) = node.poll_action() {
        match action {
            Action::Request { peer, ask, request } => out.requests.push((peer, ask, request)),
            Action::Respond { channel, response } => out.responses.push((channel, response)),
            Action::Gossip(data) => out.gossip.push(data),
            Action::Changed { key, value, .. } => out.changed.push((key, value)),
            Action::Persist { entries, ack } => out.persisted.push((entries, ack)),
        }
    }
    out
}

/// Carries requests and answers between two drivers until both are
/// quiet; returns the entries each persisted.
fn converse(a: (&mut Node, PeerId), b: (&mut Node, PeerId)) -> (usize, usize) {
    let ((a, pa), (b, pb)) = (a, b);
    let (mut stored_a, mut stored_b) = (0, 0);
    for _ in 0..100 {
        let (out_a, out_b) = (drain(a), drain(b));
        stored_a += out_a.persisted.iter().map(|(e, _)| e.len()).sum::<usize>();
        stored_b += out_b.persisted.iter().map(|(e, _)| e.len()).sum::<usize>();
        if out_a.requests.is_empty()
            && out_a.responses.is_empty()
            && out_b.requests.is_empty()
            && out_b.responses.is_empty()
        {
            return (stored_a, stored_b);
        }
        for (to, ask, request) in out_a.requests {
            assert_eq!(to, pb);
            b.on_request(pa, request, ask, Instant::now());
        }
        for (to, ask, request) in out_b.requests {
            assert_eq!(to, pa);
            a.on_request(pb, request, ask, Instant::now());
        }
        for (ask, response) in out_a.responses {
            b.on_response(ask, response);
        }
        for (ask, response) in out_b.responses {
            a.on_response(ask, response);
        }
    }
    panic!("the two drivers never went quiet");
}

fn write(node: &mut Node, key: &str, value: Value) -> oneshot::Receiver<Result<(), StateError>> {
    write_as(node, None, key, Some(value), false)
}

fn write_as(
    node: &mut Node,
    namespace: Option<String>,
    key: &str,
    value: Option<Value>,
    private: bool,
) -> oneshot::Receiver<Result<(), StateError>> {
    let (reply, rx) = oneshot::channel();
    let write = Write { namespace, key: key.to_owned(), value, mode: WriteMode::Update, private };
    node.write(write, reply, Instant::now());
    rx
}

/// A write whose acknowledgement the test does not wait for.
fn put(node: &mut Node, key: &str, value: Value) {
    drop(write(node, key, value));
}

#[test]
fn a_local_write_is_visible_at_once_acknowledged_after_storing_and_gossiped_in_a_batch() {
    let (mut a, pa) = node(1, 0, 0);
    let mut answer = write(&mut a, "name", json!("John"));
    put(&mut a, "age", json!(25));
    assert_eq!(a.get(None, "name"), Some(json!("John")));
    let out = drain(&mut a);
    assert_eq!(out.changed, [("name".to_owned(), Some(json!("John"))), ("age".to_owned(), Some(json!(25)))]);
    assert!(out.gossip.is_empty(), "lingering for more writes");
    let (entries, ack) = out.persisted.into_iter().next().unwrap();
    assert_eq!((entries.len(), entries[0].namespace.as_str()), (1, pa.to_base58().as_str()));
    assert!(answer.try_recv().is_err(), "not acknowledged before it is stored");
    ack.unwrap().send(Ok(())).unwrap();
    assert!(answer.try_recv().unwrap().is_ok());
    assert!(a.flush_due().is_some());
    a.flush();
    let gossip = drain(&mut a).gossip;
    assert_eq!(decode_batch(&gossip[0]).unwrap().len(), 2, "both writes in one gossip message");
    assert_eq!(a.flush_due(), None);
}

#[test]
fn a_private_value_is_stored_sealed_and_read_in_the_clear_here() {
    let (mut a, _) = node(1, 0, 0);
    let _answer = write_as(&mut a, None, "pin", Some(json!(1234)), true);
    let out = drain(&mut a);
    let stored = out.persisted[0].0[0].value.clone().unwrap();
    assert!(!stored.contains("1234"), "ciphertext only: {stored}");
    assert_eq!(out.changed, [("pin".to_owned(), Some(json!(1234)))]);
    assert_eq!(a.view(None, true).data, json!({"pin": 1234}));
    let sealed = a.view(None, false).data;
    assert!(crate::crypto::private::is_sealed(&sealed["pin"]) && !sealed.to_string().contains("1234"));
    // Not in someone else's namespace.
    let other = Some(PeerId::random().to_base58());
    let mut refused = write_as(&mut a, other, "pin", Some(json!(1)), true);
    assert!(matches!(refused.try_recv().unwrap(), Err(StateError::Private(_))));
}

#[test]
fn two_replicas_catch_up_by_reconciling_and_store_what_they_took() {
    let (mut a, pa) = node(1, 10, 0);
    let (mut b, pb) = node(2, 10, 0);
    for i in 0..300 {
        put(&mut a, &format!("a{i}"), json!(i));
    }
    put(&mut b, "b", json!("only b"));
    drain(&mut a);
    drain(&mut b);
    for (node, other) in [(&mut a, pb), (&mut b, pa)] {
        node.on_peer_up(other);
        node.on_subscribed(other);
    }
    let (stored_a, stored_b) = converse((&mut a, pa), (&mut b, pb));
    assert_eq!((stored_a, stored_b), (1, 300));
    let ns_a = pa.to_base58();
    assert_eq!(b.view(Some(ns_a.clone()), true).data.as_object().unwrap().len(), 300);
    assert_eq!(a.get(Some(pb.to_base58()), "b"), Some(json!("only b")));
    assert_eq!(b.view(Some(ns_a), true).replicas, [pa.to_base58()], "b knows a holds a's namespace");
    // Nothing left to do the second time.
    a.on_subscribed(pb);
    assert_eq!(converse((&mut a, pa), (&mut b, pb)), (0, 0));
}

#[test]
fn requests_to_a_peer_are_bounded_and_a_peer_gone_mid_flow_drops_its_queue() {
    let (mut a, _) = node(1, 10, 0);
    let peer = PeerId::random();
    a.on_peer_up(peer);
    for _ in 0..(SYNC_IN_FLIGHT + 5) {
        a.on_subscribed(peer);
    }
    let sent = drain(&mut a).requests;
    assert_eq!(sent.len(), SYNC_IN_FLIGHT, "the rest wait for a slot");
    // A timeout frees a slot for the next one.
    a.on_failure(sent[0].1, "timeout");
    assert_eq!(drain(&mut a).requests.len(), 1);
    // The peer goes: the waiting ones are dropped; late answers are ignored.
    a.on_peer_down(&peer);
    for (_, ask, _) in &sent[1..] {
        a.on_failure(*ask, "connection closed");
    }
    a.on_response(sent[0].1, SyncResponse::Namespaces(Vec::new()));
    assert!(drain(&mut a).requests.is_empty());
}

#[test]
fn malformed_and_oversize_gossip_is_rejected_and_a_wrong_answer_ignored() {
    let (mut a, _) = node(1, 10, 0);
    let (mut b, pb) = node(2, 10, 0);
    let peer = PeerId::random();
    assert_eq!(a.on_gossip(peer, b"\xff\xff"), MessageAcceptance::Reject);
    let too_many: Vec<ByteBuf> = (0..=MAX_GOSSIP_ENTRIES).map(|_| ByteBuf::from(vec![0u8])).collect();
    assert_eq!(a.on_gossip(peer, &encode_batch(&too_many, 0)), MessageAcceptance::Reject);
    assert_eq!(a.on_gossip(peer, &encode_batch(&[ByteBuf::from(vec![1, 2])], 0)), MessageAcceptance::Reject);
    // A forged entry (a value changed after signing) is rejected too.
    put(&mut b, "k", json!(1));
    let mut entry = drain(&mut b).persisted.remove(0).0.remove(0);
    entry.value = Some("2".into());
    assert_eq!(
        a.on_gossip(peer, &encode_batch(&[ByteBuf::from(entry.encode())], 0)),
        MessageAcceptance::Reject
    );
    assert!(a.get(Some(pb.to_base58()), "k").is_none());
    // An answer of the wrong kind changes nothing.
    a.on_peer_up(peer);
    a.on_subscribed(peer);
    let (_, ask, _) = drain(&mut a).requests.remove(0);
    a.on_response(ask, SyncResponse::Pushed { accepted: 1, rejected: 0 });
    assert!(drain(&mut a).requests.is_empty());
}

#[test]
fn gossip_from_a_peer_is_merged_stored_and_accepted() {
    let (mut a, _) = node(1, 10, 0);
    let (mut b, pb) = node(2, 10, 0);
    put(&mut b, "k", json!("v"));
    drain(&mut b);
    b.flush();
    let gossip = drain(&mut b).gossip.remove(0);
    assert_eq!(a.on_gossip(pb, &gossip), MessageAcceptance::Accept);
    let out = drain(&mut a);
    assert_eq!(out.changed, [("k".to_owned(), Some(json!("v")))]);
    assert_eq!(out.persisted[0].0.len(), 1);
    // A node that keeps no replicas for others ignores it.
    let (mut light, _) = node(3, 0, 0);
    assert_eq!(light.on_gossip(pb, &gossip), MessageAcceptance::Ignore);
}

#[test]
fn replicas_are_asked_for_until_enough_peers_hold_the_namespace_within_their_quota() {
    let (mut owner, po) = node(1, 0, 1);
    let (mut full, pf) = node(2, 0, 0);
    let (mut server, ps) = node(3, 5, 0);
    put(&mut owner, "k", json!(1));
    drain(&mut owner);
    let now = Instant::now();
    for peer in [pf, ps] {
        owner.on_peer_up(peer);
        owner.subscribers.insert(peer);
    }
    owner.on_tick(now);
    let asks = drain(&mut owner).requests;
    assert_eq!(asks.len(), 1, "a factor of 1: one peer asked at a time");
    let (asked, ask, request) = asks.into_iter().next().unwrap();
    let refuser = if asked == pf { &mut full } else { &mut server };
    refuser.on_request(po, request, ask, Instant::now());
    let response = drain(refuser).responses.remove(0).1;
    if asked == pf {
        assert!(matches!(&response, SyncResponse::Refused(r) if r.contains("no replicas")));
        owner.on_response(ask, response);
        owner.on_tick(now);
        let (next, ask, request) = drain(&mut owner).requests.remove(0);
        assert_eq!(next, ps, "the other peer is asked next");
        server.on_request(po, request, ask, Instant::now());
        owner.on_response(ask, drain(&mut server).responses.remove(0).1);
    } else {
        owner.on_response(ask, response);
    }
    assert_eq!(owner.view(None, true).replicas, [ps.to_base58()]);
    owner.on_tick(now);
    assert!(drain(&mut owner).requests.is_empty(), "enough holders now");
}

#[test]
fn entries_that_were_not_stored_are_stored_again_from_the_replica() {
    let (mut a, pa) = node(1, 0, 0);
    put(&mut a, "k", json!(1));
    put(&mut a, "k", json!(2));
    drain(&mut a);
    a.on_not_stored(vec![(pa.to_base58(), "k".into()), (pa.to_base58(), "gone".into())]);
    let out = drain(&mut a);
    let entries = &out.persisted[0].0;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].json().unwrap(), Some(json!(2)), "the current winner");
}

#[test]
fn only_owners_ask_for_replicas_and_empty_ones_are_let_go() {
    let (mut server, _) = node(3, 2, 0);
    let now = Instant::now();
    let ask = |server: &mut Node, from: PeerId, ns: String, at: Instant| {
        server.on_request(from, SyncRequest::Replicate { ns }, AskId(1), at);
        drain(server).responses.remove(0).1
    };
    // A peer asking for someone else's namespace.
    let (stranger, victim) = (PeerId::random(), PeerId::random());
    let refused = ask(&mut server, stranger, victim.to_base58(), now);
    assert!(matches!(&refused, SyncResponse::Refused(r) if r.contains("owner")), "{refused:?}");
    // Throwaway keys asking for replicas of nothing: the quota (2) fills…
    let throwaway: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    for peer in &throwaway[..2] {
        assert!(matches!(ask(&mut server, *peer, peer.to_base58(), now), SyncResponse::Replicating));
    }
    let full = ask(&mut server, throwaway[2], throwaway[2].to_base58(), now);
    assert!(matches!(&full, SyncResponse::Refused(r) if r.contains("quota")), "{full:?}");
    // …but not for good: still empty after the grace period, they are let go.
    let later = now + REQUESTED_GRACE + Duration::from_secs(1);
    server.on_tick(later);
    drain(&mut server);
    assert!(matches!(
        ask(&mut server, throwaway[2], throwaway[2].to_base58(), later),
        SyncResponse::Replicating
    ));
}

#[test]
fn holders_are_remembered_only_for_namespaces_held_here_and_boundedly() {
    let (mut a, _) = node(1, 0, 0);
    let (mut b, pb) = node(2, 0, 0);
    put(&mut b, "k", json!(1));
    drain(&mut b);
    // A peer listing thousands of namespaces this node does not hold.
    let theirs: Vec<(String, ByteBuf)> =
        (0..MAX_NAMESPACES).map(|_| (PeerId::random().to_base58(), ByteBuf::from(vec![0; 32]))).collect();
    a.on_peer_up(pb);
    a.start_sync(pb);
    let (_, ask, _) = drain(&mut a).requests.remove(0);
    a.on_response(ask, SyncResponse::Namespaces(theirs));
    assert!(a.holders.is_empty(), "{} namespaces remembered", a.holders.len());
    // Holders of a namespace held here: at most MAX_HOLDERS, connected ones kept.
    let ns = a.local.clone();
    for _ in 0..MAX_HOLDERS + 10 {
        a.holder(&ns, PeerId::random());
    }
    a.holder(&ns, pb);
    assert_eq!(a.holders[&ns].len(), MAX_HOLDERS);
    assert!(a.holders[&ns].contains(&pb), "a connected holder makes room for itself");
}
