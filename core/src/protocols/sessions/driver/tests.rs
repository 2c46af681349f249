#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use tokio::sync::oneshot;

use super::*;
use crate::{
    Delivery,
    messaging::MsgType,
    protocols::{Reply, outbox::Outbound},
    state::Entry,
};

/// A driver whose answers go back to the asker by the asker's `AskId`.
type Node = Sessions<AskId>;

fn settings(mailbox: bool) -> Settings {
    Settings {
        quantum_resistant: true,
        level: Level::L1,
        min_level: None,
        rekey: Rekey::default(),
        mailbox,
        mailbox_limits: MailboxLimits::default(),
        parked: 2,
        limits: Limits::default(),
    }
}

fn node(seed: u8, mailbox: bool) -> (Node, Identity) {
    let identity = Identity::from_seed([seed; 32]);
    let mut node = Node::new(identity.clone(), settings(mailbox), Arc::new(Metrics::new(|_, _| {})));
    node.start(Vec::new(), platform::now_ms());
    drain(&mut node);
    (node, identity)
}

fn drain(node: &mut Node) -> Vec<Action<AskId>> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

fn empty_state() -> LocalState {
    LocalState::open(Identity::from_seed([99; 32]), Vec::new()).0
}

fn envelope(from: &Identity, to: &PeerId, text: &str) -> Envelope {
    let mut env = Envelope::new(MsgType::Thought, to.to_base58(), 5, 60).with_content(text);
    env.from = from.peer_id().to_base58();
    env.timestamp = platform::now_ms();
    env
}

fn to_seal(env: Envelope) -> (Queued, oneshot::Receiver<Result<Delivery, MeshError>>) {
    let (reply, rx): (Reply<Delivery>, _) = oneshot::channel();
    let outbound = Outbound {
        id: env.id.clone(),
        priority: 5,
        expires_at_ms: env.expires_at_ms(),
        body: Body::ToSeal(Box::new(env)),
    };
    (Queued { outbound, reply }, rx)
}

/// The requests among `actions`: (to, ask, request).
fn requests(actions: Vec<Action<AskId>>) -> Vec<(PeerId, AskId, E2eRequest)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { peer, ask, request, .. } => Some((peer, ask, request)),
            _ => None,
        })
        .collect()
}

fn response(actions: Vec<Action<AskId>>) -> E2eResponse {
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::Respond { response, .. } => Some(response),
            _ => None,
        })
        .expect("an answer")
}

#[test]
fn a_send_waits_for_the_recipients_key_which_is_asked_of_it_then_of_peers() {
    let (mut a, ia) = node(1, false);
    let (mut b, ib) = node(2, false);
    let (pb, other) = (ib.peer_id(), PeerId::random());
    a.on_peer_up(other);
    let (queued, _rx) = to_seal(envelope(&ia, &pb, "hi"));
    assert!(a.ready(pb, queued, &empty_state()).is_none(), "parked");
    let (q2, _rx2) = to_seal(envelope(&ia, &pb, "again"));
    assert!(a.ready(pb, q2, &empty_state()).is_none());
    let (q3, mut full) = to_seal(envelope(&ia, &pb, "too many"));
    assert!(a.ready(pb, q3, &empty_state()).is_none());
    assert!(matches!(full.try_recv().unwrap(), Err(MeshError::QueueFull(_))));
    let asks = requests(drain(&mut a));
    assert_eq!(asks.len(), 1, "asked once, of the recipient itself");
    let (to, ask, request) = asks.into_iter().next().unwrap();
    assert_eq!(to, pb);
    // The recipient is unreachable: the connected peer is asked next.
    a.on_failure(ask, "unreachable".into(), Instant::now());
    let (to, ask, _) = requests(drain(&mut a)).remove(0);
    assert_eq!(to, other);
    // Whoever answers, the key's signature decides: b's own answer is good.
    b.on_request(ia.peer_id(), request, AskId(0), &empty_state(), 10);
    let answer = response(drain(&mut b));
    a.on_response(ask, answer, Instant::now());
    let sends: Vec<PeerId> = drain(&mut a)
        .into_iter()
        .filter_map(|a| if let Action::Send { peer, .. } = a { Some(peer) } else { None })
        .collect();
    assert_eq!(sends, [pb, pb], "both parked sends go");
}

#[test]
fn no_key_anywhere_fails_the_parked_sends_clearly() {
    let (mut a, ia) = node(1, false);
    let pb = Identity::from_seed([2; 32]).peer_id();
    let (queued, mut rx) = to_seal(envelope(&ia, &pb, "hi"));
    a.ready(pb, queued, &empty_state());
    let (_, ask, _) = requests(drain(&mut a)).remove(0);
    // A forged key (signed by someone else) is no key.
    let forged = SignedKemKey::new(&Identity::from_seed([3; 32]), Level::L1);
    a.on_response(ask, E2eResponse::KemKey(Some(forged)), Instant::now());
    let error = rx.try_recv().unwrap().unwrap_err().to_string();
    assert!(error.contains("key is unknown"), "{error}");
}

#[test]
fn a_key_published_in_the_replicated_state_is_used_without_asking() {
    let (mut a, ia) = node(1, false);
    let ib = Identity::from_seed([2; 32]);
    let ns = ib.peer_id().to_base58();
    let published = keys::to_json(&SignedKemKey::new(&ib, Level::L1));
    let entry = Entry::sign(&ib, &ns, &keys::kem_state_key(Level::L1), Some(&published), 1 << 16).unwrap();
    let (state, _) = LocalState::open(Identity::from_seed([9; 32]), vec![entry]);
    let (queued, _rx) = to_seal(envelope(&ia, &ib.peer_id(), "hi"));
    assert!(a.ready(ib.peer_id(), queued, &state).is_some());
    assert!(requests(drain(&mut a)).is_empty());
}

#[test]
fn sealed_direct_messages_open_once_and_replays_are_refused() {
    let (mut a, ia) = node(1, false);
    let (mut b, ib) = node(2, false);
    let (pa, pb) = (ia.peer_id(), ib.peer_id());
    a.e2e.learn_key(pb, SignedKemKey::new(&ib, Level::L1)).unwrap();
    let (frame, session) = a.seal(&pb, &envelope(&ia, &pb, "secret")).unwrap();
    assert!(!String::from_utf8_lossy(&frame).contains("secret"));
    // With the application's stream full it is refused, and nothing of the
    // session is used up: the same frame opens once there is room.
    assert_eq!(b.accept_direct(&pa, &frame, 0).unwrap_err().reason, RejectReason::QueueFull);
    let message = b.accept_direct(&pa, &frame, 10).unwrap();
    assert_eq!((message.envelope.content.as_deref(), message.e2e), (Some("secret"), Some(Level::L1)));
    assert_eq!(b.accept_direct(&pa, &frame, 10).unwrap_err().reason, RejectReason::Duplicate);
    a.confirm(&pb, session);
    // Garbage, a message for someone else, an oversize announcement: refused.
    assert_eq!(b.accept_direct(&pa, b"\x00garbage", 10).unwrap_err().reason, RejectReason::Malformed);
    let (c_frame, _) = a.seal(&pb, &envelope(&ia, &PeerId::random(), "x")).unwrap();
    assert_eq!(b.accept_direct(&pa, &c_frame, 10).unwrap_err().reason, RejectReason::Misaddressed);
    assert_eq!(b.oversize(&pa, 1 << 30).reason, RejectReason::Oversize);
    // The recipient lost its session (a restart): it says so.
    let (mut b2, _) = node(2, false);
    let (frame, _) = a.seal(&pb, &envelope(&ia, &pb, "after")).unwrap();
    assert_eq!(b2.accept_direct(&pa, &frame, 10).unwrap_err().reason, RejectReason::NoSession);
}

/// Alice leaves a message for Bob with holder Hal; Bob connects later.
#[test]
fn mail_is_held_sealed_stored_before_it_is_acknowledged_and_delivered_when_the_recipient_connects() {
    let (mut alice, ia) = node(1, false);
    let (mut bob, ib) = node(2, false);
    let (mut hal, ih) = node(3, true);
    let (pa, pb, ph) = (ia.peer_id(), ib.peer_id(), ih.peer_id());
    alice.e2e.learn_key(pb, SignedKemKey::new(&ib, Level::L1)).unwrap();
    let (reply, mut delivered) = oneshot::channel();
    let plain = Box::new(envelope(&ia, &pb, "while you were away"));
    let undelivered = Undelivered {
        peer: pb,
        id: plain.id.clone(),
        started: Instant::now(),
        plain,
        reply,
        error: "timeout".into(),
    };
    alice.deposit(undelivered, vec![pb, ph]);
    let [(to, ask, request)] = &requests(drain(&mut alice))[..] else {
        panic!("one holder (not the recipient)")
    };
    assert_eq!(*to, ph);
    // Hal stores it before it says held.
    hal.on_request(pa, request.clone(), *ask, &empty_state(), 10);
    let mut actions = drain(&mut hal);
    let Some(Action::StoreMail { changes, held: Some(ack) }) = actions.pop() else { panic!("stored first") };
    let [MailChange::Hold(recipient, held)] = &changes[..] else { panic!() };
    assert_eq!(*recipient, pb);
    assert!(!String::from_utf8_lossy(&held.frame).contains("while you were away"), "ciphertext only");
    assert_eq!(hal.held_frames().len(), 1);
    hal.on_mail_stored(vec![ack], Ok(()));
    let answer = response(drain(&mut hal));
    assert!(matches!(answer, E2eResponse::Held));
    alice.on_response(*ask, answer, Instant::now());
    assert_eq!(delivered.try_recv().unwrap().unwrap().held_by, Some(ph));

    // Bob connects; his event stream has no room at first.
    hal.on_peer_up(pb);
    let (_, ask, request) = requests(drain(&mut hal)).remove(0);
    bob.on_request(ph, request.clone(), ask, &empty_state(), 0);
    let taken = response(drain(&mut bob));
    assert!(matches!(&taken, E2eResponse::Taken { accepted: 0, later, .. } if *later == [0]));
    hal.on_response(ask, taken, Instant::now());
    assert_eq!(hal.held_frames().len(), 1, "kept for later");
    hal.on_tick(Instant::now() + std::time::Duration::from_secs(1));
    let (_, ask, request) = requests(drain(&mut hal)).remove(0);
    let replay = request.clone();
    bob.on_request(ph, request, ask, &empty_state(), 10);
    let (delivered, answered): (Vec<_>, Vec<_>) =
        drain(&mut bob).into_iter().partition(|a| matches!(a, Action::Deliver(_)));
    // Bob keeps a receipt in his mail store until the message expires…
    let receipts: Vec<(PeerId, Held)> = answered
        .iter()
        .filter_map(|a| match a {
            Action::StoreMail { changes, held: None } => Some(changes.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|c| match c {
            MailChange::Hold(recipient, held) => Some((recipient, held)),
            _ => None,
        })
        .collect();
    assert_eq!(receipts.len(), 1);
    assert!(receipts[0].0 == pb && receipts[0].1.author == pa && receipts[0].1.frame.is_empty());
    // …so that after a restart, the same message delivered again (by a
    // holder that kept it) is refused as a duplicate.
    let mut restarted = Node::new(ib.clone(), settings(false), Arc::new(Metrics::new(|_, _| {})));
    restarted.start(receipts.clone(), platform::now_ms());
    drain(&mut restarted);
    restarted.on_request(ph, replay.clone(), AskId(99), &empty_state(), 10);
    let again = drain(&mut restarted);
    assert!(
        !again.iter().any(|a| matches!(a, Action::Deliver(_))),
        "a replay after a restart is not delivered"
    );
    assert!(matches!(response(again), E2eResponse::Taken { accepted: 0, rejected: 1, .. }));
    // Without the receipt (today's in-memory guard only) it would have been.
    let mut forgetful = Node::new(ib.clone(), settings(false), Arc::new(Metrics::new(|_, _| {})));
    forgetful.start(Vec::new(), platform::now_ms());
    drain(&mut forgetful);
    forgetful.on_request(ph, replay, AskId(98), &empty_state(), 10);
    assert!(drain(&mut forgetful).iter().any(|a| matches!(a, Action::Deliver(_))));
    let taken = response(answered);
    let Some(Action::Deliver(message)) = delivered.into_iter().next() else { panic!("delivered") };
    assert_eq!(
        (message.envelope.content.as_deref(), message.via),
        (Some("while you were away"), Via::Mailbox(ph))
    );
    hal.on_response(ask, taken, Instant::now());
    let forgotten = drain(&mut hal);
    assert!(
        matches!(&forgotten[..], [Action::StoreMail { changes, held: None }] if matches!(changes[..], [MailChange::Drop(..)]))
    );
    assert!(hal.held_frames().is_empty());
}

#[test]
fn bad_deposits_are_refused_and_a_store_failure_refuses_too() {
    let (mut hal, _) = node(3, true);
    let ia = Identity::from_seed([1; 32]);
    let pa = ia.peer_id();
    let deposit = |frame: Vec<u8>| E2eRequest::Deposit { frame: ByteBuf::from(frame) };
    let refused = |hal: &mut Node, request| {
        hal.on_request(pa, request, AskId(1), &empty_state(), 10);
        match response(drain(hal)) {
            E2eResponse::Refused(reason) => reason,
            other => panic!("{other:?}"),
        }
    };
    assert!(refused(&mut hal, deposit(b"\xffjunk".to_vec())).contains("malformed"));
    let plain = envelope(&ia, &PeerId::random(), "not sealed").encode();
    assert!(refused(&mut hal, deposit(plain)).contains("sealed"));
    let by_other = envelope(&Identity::from_seed([7; 32]), &PeerId::random(), "x").encode();
    assert!(refused(&mut hal, deposit(by_other)).contains("author"));
    let (mut no_mailbox, _) = node(4, false);
    assert!(refused(&mut no_mailbox, deposit(Vec::new())).contains("no mailbox"));

    // A good deposit whose storing fails is refused and forgotten.
    let (mut alice, _) = node(1, false);
    let ib = Identity::from_seed([2; 32]);
    alice.e2e.learn_key(ib.peer_id(), SignedKemKey::new(&ib, Level::L1)).unwrap();
    let sealed = alice.e2e.sealed_once(&ib.peer_id(), &envelope(&ia, &ib.peer_id(), "m")).unwrap();
    hal.on_request(pa, deposit(sealed.encode()), AskId(2), &empty_state(), 10);
    let Some(Action::StoreMail { held: Some(ack), .. }) = drain(&mut hal).pop() else { panic!() };
    hal.on_mail_stored(vec![ack], Err("disk full".into()));
    assert!(matches!(response(drain(&mut hal)), E2eResponse::Refused(_)));
    assert!(hal.held_frames().is_empty());
}

#[test]
fn no_holder_or_all_refusing_fails_the_send_and_mail_lost_in_flight_is_kept() {
    let (mut alice, ia) = node(1, false);
    let ib = Identity::from_seed([2; 32]);
    alice.e2e.learn_key(ib.peer_id(), SignedKemKey::new(&ib, Level::L1)).unwrap();
    let undelivered = || {
        let (reply, rx) = oneshot::channel();
        let plain = Box::new(envelope(&ia, &ib.peer_id(), "m"));
        (
            Undelivered {
                peer: ib.peer_id(),
                id: plain.id.clone(),
                started: Instant::now(),
                plain,
                reply,
                error: "timeout".into(),
            },
            rx,
        )
    };
    let (u, mut rx) = undelivered();
    alice.deposit(u, Vec::new());
    assert!(rx.try_recv().unwrap().unwrap_err().to_string().contains("timeout"));
    let (u, mut rx) = undelivered();
    let holders = vec![PeerId::random(), PeerId::random()];
    alice.deposit(u, holders);
    let asks = requests(drain(&mut alice));
    alice.on_response(asks[0].1, E2eResponse::Refused("full".into()), Instant::now());
    assert!(rx.try_recv().is_err(), "one holder still to answer");
    alice.on_failure(asks[1].1, "timeout".into(), Instant::now());
    let error = rx.try_recv().unwrap().unwrap_err().to_string();
    assert!(error.contains("no node would hold") && error.contains("full"), "{error}");

    // A holder whose delivery fails (the recipient went) keeps the mail.
    let (mut hal, _) = node(3, true);
    let sealed = alice.e2e.sealed_once(&ib.peer_id(), &envelope(&ia, &ib.peer_id(), "m")).unwrap();
    hal.on_request(
        ia.peer_id(),
        E2eRequest::Deposit { frame: ByteBuf::from(sealed.encode()) },
        AskId(0),
        &empty_state(),
        1,
    );
    let Some(Action::StoreMail { held: Some(ack), .. }) = drain(&mut hal).pop() else { panic!() };
    hal.on_mail_stored(vec![ack], Ok(()));
    drain(&mut hal);
    hal.on_peer_up(ib.peer_id());
    let (_, ask, _) = requests(drain(&mut hal)).remove(0);
    hal.on_failure(ask, "connection closed".into(), Instant::now());
    assert_eq!(hal.held_frames().len(), 1);
}

#[test]
fn a_node_with_a_minimum_level_refuses_weaker_and_plaintext_direct_messages() {
    let (mut a, ia) = node(1, false);
    let ib = Identity::from_seed([2; 32]);
    let pb = ib.peer_id();
    let mut strict = settings(false);
    strict.min_level = Some(Level::L3);
    let mut b = Node::new(ib.clone(), strict, Arc::new(Metrics::new(|_, _| {})));
    b.start(Vec::new(), platform::now_ms());
    drain(&mut b);
    let pa = ia.peer_id();
    // A level-1 session.
    a.e2e.learn_key(pb, SignedKemKey::new(&ib, Level::L1)).unwrap();
    let (frame, _) = a.seal(&pb, &envelope(&ia, &pb, "weak")).unwrap();
    let refused = b.accept_direct(&pa, &frame, 10).unwrap_err();
    assert_eq!(refused.reason, RejectReason::TooWeak, "{refused}");
    // Plaintext.
    let plain = envelope(&ia, &pb, "clear").encode();
    assert_eq!(b.accept_direct(&pa, &plain, 10).unwrap_err().reason, RejectReason::TooWeak);
    // Level 3 and above pass.
    let (mut c, ic) = node(3, false);
    c.e2e = E2e::new(ic.clone(), Level::L5);
    c.e2e.learn_key(pb, SignedKemKey::new(&ib, Level::L5)).unwrap();
    let (frame, _) = c.seal(&pb, &envelope(&ic, &pb, "strong")).unwrap();
    assert_eq!(b.accept_direct(&ic.peer_id(), &frame, 10).unwrap().e2e, Some(Level::L5));
}
