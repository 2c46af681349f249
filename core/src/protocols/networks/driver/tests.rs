#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use tokio::sync::oneshot;

use super::*;
use crate::state::WriteMode;

const T0: u64 = 1_700_000_000_000;

/// A node: its driver (answers go back by a number) and its state.
struct Node {
    net: Networks<u32>,
    state: LocalState,
    id: PeerId,
}

fn node(seed: u8) -> Node {
    let identity = Identity::from_seed([seed; 32]);
    let (state, _) = LocalState::open(identity.clone(), Vec::new());
    let mut net = Networks::new(identity.clone(), Instant::now());
    net.start(&state);
    Node { net, state, id: identity.peer_id() }
}

impl Node {
    /// Applies the driver's writes to its state; returns the other actions.
    fn pump(&mut self) -> Vec<Action<u32>> {
        let mut rest = Vec::new();
        while let Some(action) = self.net.poll_action() {
            match action {
                Action::Write { key, value } => {
                    let ns = self.state.own_namespace();
                    let mode = if value.is_some() { WriteMode::Update } else { WriteMode::Delete };
                    if value.is_some() || self.state.get(&ns, &key).is_some() {
                        self.state.write(&ns, &key, value.as_ref(), mode, T0).unwrap();
                    }
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// Takes every entry `from` holds (what state replication does).
    fn sync_from(&mut self, from: &Node) {
        let entries: Vec<_> = from
            .state
            .replica()
            .namespaces()
            .flat_map(|ns| from.state.replica().entries(ns).cloned().collect::<Vec<_>>())
            .collect();
        self.state.ingest_all(entries, T0);
    }
}

/// `member` joins `owner`'s network with `token` (and `cert`): the
/// request goes to the owner, its answer back.
fn join(
    owner: &mut Node,
    member: &mut Node,
    token: &str,
    cert: Option<&str>,
) -> Result<NetworkInfo, MeshError> {
    let (reply, mut answer) = oneshot::channel();
    member.net.join(token, cert, T0, reply);
    let request = match member.pump().pop() {
        Some(Action::Request { peer, ask, request, .. }) => {
            assert_eq!(peer, owner.id);
            (ask, request)
        }
        Some(other) => panic!("{other:?}"),
        None => return answer.try_recv().unwrap(),
    };
    owner.net.on_request(member.id, request.1, 7, &owner.state, T0);
    let response = match owner.pump().pop() {
        Some(Action::Respond { channel: 7, response }) => response,
        other => panic!("{other:?}"),
    };
    member.net.on_response(request.0, response, T0);
    member.pump();
    member.sync_from(owner);
    answer.try_recv().unwrap()
}

fn created(owner: &mut Node) -> String {
    let info = owner.net.create("lab", T0).unwrap();
    let actions = owner.pump();
    assert!(actions.iter().any(|a| matches!(a, Action::JoinTopic(t) if *t == presence_topic(&info.id))));
    info.id
}

#[test]
fn a_member_joins_with_an_invite_and_every_member_agrees_on_it() {
    let (mut owner, mut alice, mut bob) = (node(1), node(2), node(3));
    let id = created(&mut owner);
    let token = owner.net.invite(&id, 2, 60_000, None, vec!["/ip4/127.0.0.1/tcp/1".into()], T0).unwrap();
    let info = join(&mut owner, &mut alice, &token, None).unwrap();
    assert_eq!((info.id.as_str(), info.role.as_str()), (id.as_str(), "member"));
    assert_eq!(alice.net.list(&alice.state, T0)[0].status, "active");
    // Bob hears of Alice through the owner's records only.
    join(&mut owner, &mut bob, &token, None).unwrap();
    alice.sync_from(&owner);
    let alice_text = alice.id.to_base58();
    for n in [&owner, &alice, &bob] {
        assert!(n.net.authorize(&n.state, &id, &alice.id, &alice_text, T0).is_ok());
        let members = n.net.members(&n.state, &id, T0).unwrap();
        assert_eq!(members.len(), 3, "{members:?}");
        assert_eq!(members.iter().filter(|m| m.owner).count(), 1);
    }
    // Used twice: a third person is refused.
    let mut carol = node(4);
    let refused = join(&mut owner, &mut carol, &token, None).unwrap_err().to_string();
    assert!(refused.contains("used 2 time(s)"), "{refused}");
    // A member who joins again is no new use and no error.
    let (reply, _) = oneshot::channel();
    alice.net.join(&token, None, T0, reply);
    assert!(alice.pump().is_empty(), "already in: nothing sent");
}

#[test]
fn bad_invites_and_certificates_are_refused_with_reasons() {
    let (mut owner, mut alice) = (node(1), node(2));
    let id = created(&mut owner);
    let expired = owner.net.invite(&id, 1, 1, None, vec![], T0 - 10).unwrap();
    assert!(join(&mut owner, &mut alice, &expired, None).unwrap_err().to_string().contains("expired"));
    assert!(join(&mut owner, &mut alice, "imnet1.garbage", None).is_err());
    // An invite signed by a node that is not the owner it names.
    let mut forged = Invite::verify(&owner.net.invite(&id, 1, 60_000, None, vec![], T0).unwrap()).unwrap();
    forged.uses = 100;
    let forged = forged.sign(&Identity::from_seed([9; 32])).unwrap();
    assert!(join(&mut owner, &mut alice, &forged, None).unwrap_err().to_string().contains("signature"));
    // A certificate for another device.
    let token = owner.net.invite(&id, 1, 60_000, None, vec![], T0).unwrap();
    let someone = node(5);
    let cert = someone.net.certify(&id, node(6).id, 60_000, T0).unwrap();
    assert!(
        join(&mut owner, &mut alice, &token, Some(&cert)).unwrap_err().to_string().contains("another device")
    );
    // Only the owner invites and revokes.
    join(&mut owner, &mut alice, &token, None).unwrap();
    assert!(alice.net.invite(&id, 1, 60_000, None, vec![], T0).is_err());
    assert!(alice.net.revoke(&id, &owner.id.to_base58(), &alice.state, T0).is_err());
    // Names.
    assert!(owner.net.create("", T0).is_err());
    assert!(owner.net.create(&"x".repeat(65), T0).is_err());
}

#[test]
fn a_person_certifies_a_device_with_another_key() {
    let (mut owner, mut alice, mut laptop) = (node(1), node(2), node(3));
    let id = created(&mut owner);
    let token = owner.net.invite(&id, 1, 60_000, None, vec![], T0).unwrap();
    join(&mut owner, &mut alice, &token, None).unwrap();
    let cert = alice.net.certify(&id, laptop.id, 60_000, T0).unwrap();
    let info = join(&mut owner, &mut laptop, &token, Some(&cert)).unwrap();
    assert_eq!(info.person, alice.id.to_base58(), "the laptop is Alice's");
    let members = owner.net.members(&owner.state, &id, T0).unwrap();
    let alice_record = members.iter().find(|m| m.person == alice.id.to_base58()).unwrap();
    assert_eq!(alice_record.devices, [alice.id.to_base58(), laptop.id.to_base58()]);
    assert!(owner.net.authorize(&owner.state, &id, &laptop.id, &alice.id.to_base58(), T0).is_ok());
    // The laptop is not a person of its own.
    assert!(owner.net.authorize(&owner.state, &id, &laptop.id, &laptop.id.to_base58(), T0).is_err());
    // Revoking the device leaves Alice in.
    owner.net.revoke(&id, &laptop.id.to_base58(), &owner.state, T0).unwrap();
    owner.pump();
    assert!(owner.net.authorize(&owner.state, &id, &laptop.id, &alice.id.to_base58(), T0).is_err());
    assert!(owner.net.authorize(&owner.state, &id, &alice.id, &alice.id.to_base58(), T0).is_ok());
}

#[test]
fn revoked_and_expired_members_are_refused_everywhere() {
    let (mut owner, mut alice, mut bob) = (node(1), node(2), node(3));
    let id = created(&mut owner);
    let token = owner.net.invite(&id, 5, 60_000, None, vec![], T0).unwrap();
    join(&mut owner, &mut alice, &token, None).unwrap();
    join(&mut owner, &mut bob, &token, None).unwrap();
    let alice_text = alice.id.to_base58();
    owner.net.revoke(&id, &alice_text, &owner.state, T0).unwrap();
    owner.pump();
    bob.sync_from(&owner);
    alice.sync_from(&owner);
    for n in [&owner, &bob] {
        let refused = n.net.authorize(&n.state, &id, &alice.id, &alice_text, T0).unwrap_err();
        assert!(refused.contains("not a member"), "{refused}");
    }
    assert_eq!(alice.net.list(&alice.state, T0)[0].status, "revoked");
    // The old invite does not let her back; a new one does.
    assert!(join(&mut owner, &mut node(2), &token, None).unwrap_err().to_string().contains("revoked"));
    let fresh = owner.net.invite(&id, 1, 60_000, None, vec![], T0 + 1).unwrap();
    join(&mut owner, &mut node(2), &fresh, None).unwrap();
    assert!(owner.net.authorize(&owner.state, &id, &alice.id, &alice_text, T0).is_ok());

    // A membership for a limited time ends by itself.
    let short = owner.net.invite(&id, 1, 60_000, Some(1_000), vec![], T0).unwrap();
    let mut carol = node(4);
    join(&mut owner, &mut carol, &short, None).unwrap();
    let carol_text = carol.id.to_base58();
    assert!(owner.net.authorize(&owner.state, &id, &carol.id, &carol_text, T0 + 999).is_ok());
    assert!(
        owner
            .net
            .authorize(&owner.state, &id, &carol.id, &carol_text, T0 + 1_000)
            .unwrap_err()
            .contains("expired")
    );
}

#[test]
fn records_written_by_anyone_but_the_owner_do_not_count() {
    let (mut owner, mut alice) = (node(1), node(2));
    let id = created(&mut owner);
    let token = owner.net.invite(&id, 1, 60_000, None, vec![], T0).unwrap();
    join(&mut owner, &mut alice, &token, None).unwrap();
    // The owner lets Mallory write its namespace (an access list entry);
    // Mallory writes herself a member record: refused by the state, and
    // it would not count as a membership anyway.
    let mallory = Identity::from_seed([8; 32]);
    let owner_ns = owner.id.to_base58();
    owner.state.update(&format!("_acl/{}", mallory.peer_id()), &serde_json::json!(true), T0).unwrap();
    alice.sync_from(&owner);
    let record = MemberRecord {
        person: mallory.peer_id().to_base58(),
        devices: vec![mallory.peer_id().to_base58()],
        joined_ms: T0,
        expires_ms: None,
    };
    let key = records::member_key(&id, &record.person);
    let entry = crate::state::Entry::sign(&mallory, &owner_ns, &key, Some(&json(&record)), T0 + 5).unwrap();
    let stored = alice.state.ingest(entry, T0);
    assert_eq!(
        stored.unwrap_err().reason,
        crate::state::EntryRejection::Unauthorized,
        "internal keys are the owner's"
    );
    assert!(alice.state.get(&owner_ns, &key).is_none());
    let refused = alice.net.authorize(&alice.state, &id, &mallory.peer_id(), &record.person, T0);
    assert!(refused.is_err(), "but it is not a membership");
}

fn offer() -> ComputeOffer {
    ComputeOffer {
        threads: 2,
        memory_mb: 256,
        models: vec!["all-MiniLM-L6-v2".into()],
        kind: "native".into(),
    }
}

#[test]
fn members_announce_themselves_and_disappear_when_silent() {
    let (mut owner, mut alice) = (node(1), node(2));
    let id = created(&mut owner);
    let token = owner.net.invite(&id, 1, 60_000, None, vec![], T0).unwrap();
    join(&mut owner, &mut alice, &token, None).unwrap();
    let now = Instant::now();
    alice.net.set_offer(Some(offer()), now);
    alice.net.on_tick(&alice.state, || vec!["/ip4/127.0.0.1/tcp/9".into()], now, T0);
    let (topic, data) = alice
        .pump()
        .into_iter()
        .find_map(|a| match a {
            Action::Publish { topic, data } => Some((topic, data)),
            _ => None,
        })
        .expect("a presence announcement");
    let topic_ok = owner.net.on_presence(Some(alice.id), &topic, &data, &owner.state, now, T0);
    assert_eq!(topic_ok, MessageAcceptance::Accept);
    assert!(owner.pump().iter().any(|a| matches!(a, Action::Addresses { peer, .. } if *peer == alice.id)));
    let workers = owner.net.candidates(&owner.state, &id, "all-MiniLM-L6-v2", now, T0);
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].device, alice.id);
    assert!(owner.net.candidates(&owner.state, &id, "other-model", now, T0).is_empty());
    // The same announcement again (a replay) changes nothing.
    assert_eq!(
        owner.net.on_presence(Some(alice.id), &topic, &data, &owner.state, now, T0),
        MessageAcceptance::Ignore
    );
    // Signed by a non-member: not kept, not penalised (views may lag).
    let stranger = node(7);
    assert_eq!(
        owner.net.on_presence(Some(stranger.id), &topic, &data, &owner.state, now, T0),
        MessageAcceptance::Ignore
    );
    // Garbage is penalised.
    assert_eq!(
        owner.net.on_presence(Some(alice.id), &topic, b"\x00", &owner.state, now, T0),
        MessageAcceptance::Reject
    );
    // A node outside the network relays it unread.
    let mut outsider = node(9);
    assert_eq!(
        outsider.net.on_presence(Some(alice.id), &topic, &data, &outsider.state, now, T0),
        MessageAcceptance::Accept
    );
    assert!(outsider.pump().is_empty());
    // Silent for longer than the expiry: gone.
    let later = now + PRESENCE_EXPIRY + std::time::Duration::from_millis(1);
    owner.net.on_tick(&owner.state, Vec::new, later, T0 + 8_000);
    assert!(owner.net.candidates(&owner.state, &id, "all-MiniLM-L6-v2", later, T0 + 8_000).is_empty());
}

#[test]
fn another_device_with_the_same_key_picks_up_the_networks() {
    let mut owner = node(1);
    let id = created(&mut owner);
    // The same key elsewhere: its state arrives, and with it the network.
    let mut twin = node(1);
    twin.sync_from(&owner);
    twin.net.on_tick(&twin.state, Vec::new, Instant::now() + RESCAN, T0);
    assert!(twin.net.is_in(&id));
    assert_eq!(twin.net.resolve(Some("lab")).unwrap(), id);
    assert_eq!(twin.net.resolve(None).unwrap(), id);
    assert!(twin.net.resolve(Some("nope")).is_err());
}
