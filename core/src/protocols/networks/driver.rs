// Over 600 lines: one network's life (create, invite, join, leave, revoke) and the presence of its devices read the same records.
//! Private networks, the rules: creating one, inviting, joining through
//! the owner, leaving, revoking; which devices belong to which person; and
//! who is present and what compute it offers. Membership lives in the
//! owner's namespace of the replicated state (see [`super::records`]),
//! so every member reads the same signed records, and a revocation reaches
//! them as fast as state gossip does. I/O-free: the event loop carries the
//! [`Action`]s and passes the state to read.

use std::collections::{BTreeMap, HashMap, VecDeque};

use libp2p::{Multiaddr, PeerId, gossipsub::MessageAcceptance};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    records::{
        self, DeviceCert, Invite, InviteUse, JOINED_PREFIX, Joined, MAX_DEVICES, MAX_NAME_BYTES,
        MemberRecord, NetworkRecord, Revoked, is_network_id,
    },
    wire::{NetRequest, NetResponse, PRESENCE_EXPIRY, PRESENCE_INTERVAL, Presence, presence_topic},
};
use crate::{
    Identity, MeshError,
    compute::{ComputeOffer, MemberInfo, NetworkInfo},
    platform::Instant,
    protocols::{AskId, Reply},
    state::LocalState,
};

/// Most networks one node is in.
pub(crate) const MAX_NETWORKS: usize = 64;
/// Most devices present per network (announcements beyond are dropped).
const MAX_PRESENT: usize = 1024;
/// Most uses of one invite.
pub(crate) const MAX_INVITE_USES: u32 = 10_000;
/// How far a presence's clock may be from ours.
const PRESENCE_SKEW_MS: u64 = 60_000;
/// How often this node's own list of networks is read again (another
/// device with the same key may have joined one).
const RESCAN: std::time::Duration = std::time::Duration::from_secs(1);

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Write (or delete) a key of this node's own namespace.
    Write { key: String, value: Option<Value> },
    /// Replicate this namespace (a network owner's).
    Want(String),
    /// Join this reserved gossipsub topic.
    JoinTopic(String),
    /// Leave it.
    LeaveTopic(String),
    /// Publish on a reserved topic.
    Publish { topic: String, data: Vec<u8> },
    /// Send a request, dialling `addrs` if not connected.
    Request { peer: PeerId, addrs: Vec<Multiaddr>, ask: AskId, request: NetRequest },
    /// Answer an inbound request.
    Respond { channel: C, response: NetResponse },
    /// Addresses where a device of a network may be reached.
    Addresses { peer: PeerId, addrs: Vec<Multiaddr> },
}

/// A network this node is in.
#[derive(Clone, Debug)]
struct Membership {
    owner: String,
    name: String,
    person: String,
}

/// A device heard on a presence topic.
#[derive(Clone, Debug)]
pub(crate) struct Present {
    pub person: String,
    pub offer: Option<ComputeOffer>,
    pub queue: u32,
    pub at: Instant,
    pub at_ms: u64,
}

/// A device that can take work.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub device: PeerId,
    pub person: String,
    pub offer: ComputeOffer,
    pub queue: u32,
}

enum Pending {
    Join { network: String, owner: String, name: String, reply: Reply<NetworkInfo> },
    Leave { reply: Reply<bool> },
}

/// The driver; see the module documentation.
pub(crate) struct Networks<C> {
    identity: Identity,
    local: PeerId,
    local_text: String,
    nets: BTreeMap<String, Membership>,
    present: BTreeMap<(String, PeerId), Present>,
    pending: HashMap<AskId, Pending>,
    next_ask: u64,
    offer: Option<ComputeOffer>,
    queue: u32,
    next_presence: Instant,
    next_scan: Instant,
    actions: VecDeque<Action<C>>,
    /// Credit records already verified.
    checked: std::cell::RefCell<credits::Checked>,
    /// Each network's ledger, and when it was summed up.
    ledgers: std::cell::RefCell<HashMap<String, (Instant, crate::credits::ledger::Ledger)>>,
    /// Members' namespaces asked for.
    wanted: std::collections::HashSet<String>,
}

fn err(text: impl Into<String>) -> MeshError {
    MeshError::Network(text.into())
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("records serialise to JSON")
}

/// A record of `namespace` written by `author` (records written by anyone
/// else, such as a writer on the owner's access list, do not count).
fn record<T: DeserializeOwned>(state: &LocalState, namespace: &str, key: &str, author: &str) -> Option<T> {
    let entry = state.replica().get(namespace, key)?;
    if entry.author_id().ok()?.to_base58() != author {
        return None;
    }
    serde_json::from_str(entry.value.as_deref()?).ok()
}

impl<C> Networks<C> {
    pub(crate) fn new(identity: Identity, now: Instant) -> Self {
        let local = identity.peer_id();
        Self {
            local_text: local.to_base58(),
            local,
            identity,
            nets: BTreeMap::new(),
            present: BTreeMap::new(),
            pending: HashMap::new(),
            next_ask: 0,
            offer: None,
            queue: 0,
            next_presence: now,
            next_scan: now,
            actions: VecDeque::new(),
            checked: Default::default(),
            ledgers: Default::default(),
            wanted: Default::default(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    fn ask(&mut self) -> AskId {
        self.next_ask += 1;
        AskId(self.next_ask)
    }

    fn write<T: Serialize>(&mut self, key: String, value: Option<&T>) {
        self.actions.push_back(Action::Write { key, value: value.map(json) });
    }

    /// Starts: reads the networks this node is in from its own namespace.
    pub(crate) fn start(&mut self, state: &LocalState) {
        self.rescan(state);
    }

    /// Picks up networks joined (or left) by another device with this key.
    fn rescan(&mut self, state: &LocalState) {
        let own = self.local_text.clone();
        let mut found = BTreeMap::new();
        for entry in state.replica().entries_under(&own, JOINED_PREFIX) {
            let id = &entry.key[JOINED_PREFIX.len()..];
            if let Some(joined) = record::<Joined>(state, &own, &entry.key, &own)
                && is_network_id(id)
                && found.len() < MAX_NETWORKS
            {
                found.insert(
                    id.to_owned(),
                    Membership { owner: joined.owner, name: joined.name, person: joined.person },
                );
            }
        }
        let gone: Vec<String> = self.nets.keys().filter(|id| !found.contains_key(*id)).cloned().collect();
        for id in gone {
            self.nets.remove(&id);
            self.present.retain(|(net, _), _| *net != id);
            self.actions.push_back(Action::LeaveTopic(presence_topic(&id)));
        }
        for (id, membership) in found {
            if !self.nets.contains_key(&id) {
                self.enter(id, membership);
            }
        }
    }

    fn enter(&mut self, id: String, membership: Membership) {
        if membership.owner != self.local_text {
            self.actions.push_back(Action::Want(membership.owner.clone()));
        }
        self.actions.push_back(Action::JoinTopic(presence_topic(&id)));
        self.nets.insert(id, membership);
    }

    // ---- what the user asks ---------------------------------------------

    /// The network called `name` (its ID or its name); with `None`, the
    /// only one this node is in.
    pub(crate) fn resolve(&self, name: Option<&str>) -> Result<String, MeshError> {
        match name {
            None => match self.nets.len() {
                1 => Ok(self.nets.keys().next().expect("one").clone()),
                0 => Err(err("this node is in no network: create one or join one with an invite")),
                n => Err(err(format!(
                    "this node is in {n} networks ({}): name one",
                    self.nets.iter().map(|(id, m)| format!("{} {id}", m.name)).collect::<Vec<_>>().join(", ")
                ))),
            },
            Some(name) if self.nets.contains_key(name) => Ok(name.to_owned()),
            Some(name) => {
                let matches: Vec<&String> =
                    self.nets.iter().filter(|(_, m)| m.name == name).map(|(id, _)| id).collect();
                match matches.as_slice() {
                    [id] => Ok((*id).clone()),
                    [] => Err(err(format!("this node is in no network '{name}'"))),
                    _ => Err(err(format!("several networks are called '{name}': give its ID"))),
                }
            }
        }
    }

    /// Whether this node is in `network`.
    pub(crate) fn is_in(&self, network: &str) -> bool {
        self.nets.contains_key(network)
    }

    /// Creates a network owned by this node.
    pub(crate) fn create(&mut self, name: &str, now_ms: u64) -> Result<NetworkInfo, MeshError> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(err(format!("a network's name is 1-{MAX_NAME_BYTES} bytes of text")));
        }
        if self.nets.len() >= MAX_NETWORKS {
            return Err(err(format!("this node is in {MAX_NETWORKS} networks already")));
        }
        let id = records::new_network_id().map_err(err)?;
        let local = self.local_text.clone();
        self.write(
            records::network_key(&id),
            Some(&NetworkRecord { name: name.to_owned(), created_ms: now_ms }),
        );
        let member = MemberRecord {
            person: local.clone(),
            devices: vec![local.clone()],
            joined_ms: now_ms,
            expires_ms: None,
        };
        self.write(records::member_key(&id, &local), Some(&member));
        let joined =
            Joined { owner: local.clone(), name: name.to_owned(), person: local.clone(), joined_ms: now_ms };
        self.write(records::joined_key(&id), Some(&joined));
        let membership = Membership { owner: local.clone(), name: name.to_owned(), person: local.clone() };
        self.enter(id.clone(), membership);
        Ok(NetworkInfo {
            id,
            name: name.to_owned(),
            owner: local.clone(),
            person: local,
            role: "owner".into(),
            status: "active".into(),
            members: 1,
        })
    }

    fn owned(&self, network: &str) -> Result<&Membership, MeshError> {
        let membership =
            self.nets.get(network).ok_or_else(|| err(format!("this node is not in network {network}")))?;
        if membership.owner != self.local_text {
            return Err(err(format!("only the owner ({}) can do that", membership.owner)));
        }
        Ok(membership)
    }

    /// An invite token to `network` (owned by this node).
    pub(crate) fn invite(
        &self,
        network: &str,
        uses: u32,
        valid_ms: u64,
        member_for_ms: Option<u64>,
        addrs: Vec<String>,
        now_ms: u64,
    ) -> Result<String, MeshError> {
        let membership = self.owned(network)?;
        if uses == 0 || uses > MAX_INVITE_USES {
            return Err(err(format!("an invite has 1-{MAX_INVITE_USES} uses")));
        }
        if valid_ms == 0 {
            return Err(err("an invite must be valid for some time"));
        }
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| err(format!("no secure random source: {e}")))?;
        let invite = Invite {
            network: network.to_owned(),
            name: membership.name.clone(),
            owner: self.local_text.clone(),
            addrs: addrs.into_iter().take(8).collect(),
            nonce: hex::encode(nonce),
            uses,
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(valid_ms),
            member_for_ms,
        };
        invite.sign(&self.identity).map_err(err)
    }

    /// A certificate that `device` is one of this node's person's devices,
    /// for `network`, valid for `valid_ms`.
    pub(crate) fn certify(
        &self,
        network: &str,
        device: PeerId,
        valid_ms: u64,
        now_ms: u64,
    ) -> Result<String, MeshError> {
        if !is_network_id(network) {
            return Err(err(format!("'{network}' is not a network ID")));
        }
        let cert = DeviceCert::issue(&self.identity, &device, network, now_ms.saturating_add(valid_ms))
            .map_err(err)?;
        Ok(cert.to_token())
    }

    /// Joins the network of `token` by asking its owner.
    pub(crate) fn join(&mut self, token: &str, cert: Option<&str>, now_ms: u64, reply: Reply<NetworkInfo>) {
        let invite = match Invite::verify(token) {
            Ok(invite) => invite,
            Err(e) => return drop(reply.send(Err(err(e.to_string())))),
        };
        if let Err(e) = invite.check_time(now_ms) {
            return drop(reply.send(Err(err(e.to_string()))));
        }
        if invite.owner == self.local_text {
            return drop(reply.send(Err(err("this node owns that network"))));
        }
        if self.nets.contains_key(&invite.network) {
            return drop(reply.send(Err(err(format!("this node is in network {} already", invite.network)))));
        }
        if self.nets.len() >= MAX_NETWORKS {
            return drop(reply.send(Err(err(format!("this node is in {MAX_NETWORKS} networks already")))));
        }
        let cert = match cert.map(DeviceCert::from_token).transpose() {
            Ok(cert) => cert,
            Err(e) => return drop(reply.send(Err(err(e.to_string())))),
        };
        if let Some(cert) = &cert
            && (cert.device != self.local_text || cert.network != invite.network)
        {
            return drop(reply.send(Err(err("that device certificate is for another device or network"))));
        }
        let Ok(owner) = invite.owner.parse::<PeerId>() else {
            return drop(reply.send(Err(err("the invite's owner is not a node ID"))));
        };
        let addrs = invite.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let ask = self.ask();
        let request = NetRequest::Join { token: token.trim().to_owned(), cert };
        self.actions.push_back(Action::Request { peer: owner, addrs, ask, request });
        self.pending.insert(
            ask,
            Pending::Join { network: invite.network, owner: invite.owner, name: invite.name, reply },
        );
    }

    /// Leaves `network`: this node stops at once; its owner is asked to
    /// remove it (answers `true` once it did, `false` if it could not be
    /// reached).
    pub(crate) fn leave(&mut self, network: &str, reply: Reply<bool>) {
        let Some(membership) = self.nets.get(network) else {
            return drop(reply.send(Err(err(format!("this node is not in network {network}")))));
        };
        if membership.owner == self.local_text {
            return drop(reply.send(Err(err("the owner cannot leave its own network"))));
        }
        let owner = membership.owner.parse::<PeerId>();
        self.nets.remove(network);
        self.present.retain(|(net, _), _| net != network);
        self.actions.push_back(Action::LeaveTopic(presence_topic(network)));
        self.write::<Joined>(records::joined_key(network), None);
        let Ok(owner) = owner else { return drop(reply.send(Ok(false))) };
        let ask = self.ask();
        let request = NetRequest::Leave { network: network.to_owned() };
        self.actions.push_back(Action::Request { peer: owner, addrs: Vec::new(), ask, request });
        self.pending.insert(ask, Pending::Leave { reply });
    }

    /// Revokes a member (a person: all its devices) or one device, in a
    /// network this node owns. Answers what was revoked.
    pub(crate) fn revoke(
        &mut self,
        network: &str,
        id: &str,
        state: &LocalState,
        now_ms: u64,
    ) -> Result<String, MeshError> {
        self.owned(network)?;
        if id == self.local_text {
            return Err(err("the owner cannot revoke itself"));
        }
        let members = self.member_records(state, network);
        if let Some(member) = members.iter().find(|m| m.person == id) {
            self.write::<MemberRecord>(records::member_key(network, &member.person), None);
            self.write(records::revoked_key(network, &member.person), Some(&Revoked { at_ms: now_ms }));
            return Ok(format!("revoked {id} and its {} device(s)", member.devices.len()));
        }
        if let Some(member) = members.into_iter().find(|m| m.devices.iter().any(|d| d == id)) {
            let mut member = member;
            member.devices.retain(|d| d != id);
            let key = records::member_key(network, &member.person);
            if member.devices.is_empty() {
                self.write::<MemberRecord>(key, None);
            } else {
                self.write(key, Some(&member));
            }
            return Ok(format!("revoked device {id} of {}", member.person));
        }
        Err(err(format!("{id} is not a member or device of network {network}")))
    }

    fn member_records(&self, state: &LocalState, network: &str) -> Vec<MemberRecord> {
        let Some(membership) = self.nets.get(network) else { return Vec::new() };
        let prefix = records::members_prefix(network);
        state
            .replica()
            .entries_under(&membership.owner, &prefix)
            .filter_map(|e| record::<MemberRecord>(state, &membership.owner, &e.key, &membership.owner))
            .filter(|m| m.devices.len() <= MAX_DEVICES)
            .collect()
    }

    /// The members of `network`, as this node knows them.
    pub(crate) fn members(
        &self,
        state: &LocalState,
        network: &str,
        now_ms: u64,
    ) -> Result<Vec<MemberInfo>, MeshError> {
        let membership =
            self.nets.get(network).ok_or_else(|| err(format!("this node is not in network {network}")))?;
        Ok(self
            .member_records(state, network)
            .into_iter()
            .filter(|m| m.current(now_ms))
            .map(|m| MemberInfo {
                owner: m.person == membership.owner,
                person: m.person,
                devices: m.devices,
                joined_ms: m.joined_ms,
                expires_ms: m.expires_ms,
            })
            .collect())
    }

    /// The networks this node is in.
    pub(crate) fn list(&self, state: &LocalState, now_ms: u64) -> Vec<NetworkInfo> {
        self.nets
            .iter()
            .map(|(id, m)| {
                let status = self.status(state, id, m, now_ms);
                let members = self.member_records(state, id).iter().filter(|r| r.current(now_ms)).count();
                NetworkInfo {
                    id: id.clone(),
                    name: m.name.clone(),
                    owner: m.owner.clone(),
                    person: m.person.clone(),
                    role: if m.owner == self.local_text { "owner" } else { "member" }.into(),
                    status: status.into(),
                    members,
                }
            })
            .collect()
    }

    fn status(&self, state: &LocalState, id: &str, m: &Membership, now_ms: u64) -> &'static str {
        match record::<MemberRecord>(state, &m.owner, &records::member_key(id, &m.person), &m.owner) {
            Some(r) if !r.devices.contains(&self.local_text) => "revoked",
            Some(r) if !r.current(now_ms) => "expired",
            Some(_) => "active",
            None if record::<Revoked>(state, &m.owner, &records::revoked_key(id, &m.person), &m.owner)
                .is_some() =>
            {
                "revoked"
            }
            None => "pending",
        }
    }

    /// Whether `device`, a device of `person`, is a current member of
    /// `network` (and this node is too).
    pub(crate) fn authorize(
        &self,
        state: &LocalState,
        network: &str,
        device: &PeerId,
        person: &str,
        now_ms: u64,
    ) -> Result<(), String> {
        let membership =
            self.nets.get(network).ok_or_else(|| format!("this node is not in network {network}"))?;
        if self.status(state, network, membership, now_ms) != "active" {
            return Err(format!("this node is not an active member of network {network}"));
        }
        let member = record::<MemberRecord>(
            state,
            &membership.owner,
            &records::member_key(network, person),
            &membership.owner,
        )
        .ok_or_else(|| format!("{person} is not a member of network {network}"))?;
        if !member.current(now_ms) {
            return Err(format!("{person}'s membership of network {network} has expired"));
        }
        if !member.devices.iter().any(|d| *d == device.to_base58()) {
            return Err(format!("{device} is not a device of {person} in network {network}"));
        }
        Ok(())
    }

    /// The person this node is a device of, in `network`.
    pub(crate) fn person(&self, network: &str) -> Option<&str> {
        self.nets.get(network).map(|m| m.person.as_str())
    }

    // ---- compute on offer -------------------------------------------------

    /// What this node offers its networks (`None`: nothing).
    pub(crate) fn set_offer(&mut self, offer: Option<ComputeOffer>, now: Instant) {
        self.offer = offer;
        // Tell the networks at once.
        self.next_presence = now;
    }

    /// Tasks waiting or running here.
    pub(crate) fn set_queue(&mut self, queue: u32) {
        self.queue = queue;
    }

    /// Devices that offer `model` to `network`, this node included, heard
    /// from recently and still members.
    pub(crate) fn candidates(
        &self,
        state: &LocalState,
        network: &str,
        model: &str,
        now: Instant,
        now_ms: u64,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let (Some(offer), Some(m)) = (&self.offer, self.nets.get(network))
            && offer.models.iter().any(|x| x == model)
            && self.authorize(state, network, &self.local, &m.person, now_ms).is_ok()
        {
            out.push(Candidate {
                device: self.local,
                person: m.person.clone(),
                offer: offer.clone(),
                queue: self.queue,
            });
        }
        for ((_, device), seen) in self.present.iter().filter(|((net, _), _)| net == network) {
            let Some(offer) = &seen.offer else { continue };
            if now.saturating_duration_since(seen.at) > PRESENCE_EXPIRY
                || !offer.models.iter().any(|x| x == model)
                || self.authorize(state, network, device, &seen.person, now_ms).is_err()
            {
                continue;
            }
            out.push(Candidate {
                device: *device,
                person: seen.person.clone(),
                offer: offer.clone(),
                queue: seen.queue,
            });
        }
        out
    }

    /// Devices present in `network` (or in every network).
    pub(crate) fn present(&self, network: Option<&str>) -> impl Iterator<Item = (&str, &PeerId, &Present)> {
        self.present
            .iter()
            .filter(move |((net, _), _)| network.is_none_or(|n| n == net))
            .map(|((net, device), p)| (net.as_str(), device, p))
    }

    /// This node's own offer and queue.
    pub(crate) fn own_offer(&self) -> Option<(&ComputeOffer, u32)> {
        self.offer.as_ref().map(|o| (o, self.queue))
    }

    /// Networks this node is in, with the person it is there.
    pub(crate) fn memberships(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nets.iter().map(|(id, m)| (id.as_str(), m.person.as_str()))
    }

    // ---- what arrives -------------------------------------------------------

    /// An announcement on a presence topic, signed by `source`. Kept if the
    /// sender is a device of a member; relayed if it is well formed.
    pub(crate) fn on_presence(
        &mut self,
        source: Option<PeerId>,
        topic: &str,
        data: &[u8],
        state: &LocalState,
        now: Instant,
        now_ms: u64,
    ) -> MessageAcceptance {
        let Some(device) = source else { return MessageAcceptance::Reject };
        let presence = match Presence::decode(topic, data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%device, "bad presence: {e}");
                return MessageAcceptance::Reject;
            }
        };
        if !self.nets.contains_key(&presence.network) {
            // Relayed for others, unread.
            return MessageAcceptance::Accept;
        }
        if presence.at_ms.abs_diff(now_ms) > PRESENCE_SKEW_MS {
            return MessageAcceptance::Ignore;
        }
        if let Err(e) = self.authorize(state, &presence.network, &device, &presence.person, now_ms) {
            tracing::debug!(%device, "presence refused: {e}");
            return MessageAcceptance::Ignore;
        }
        let key = (presence.network.clone(), device);
        let known = self.present.get(&key);
        if known.is_some_and(|k| k.at_ms >= presence.at_ms) {
            return MessageAcceptance::Ignore;
        }
        if known.is_none()
            && self.present.keys().filter(|(net, _)| *net == presence.network).count() >= MAX_PRESENT
        {
            return MessageAcceptance::Ignore;
        }
        let addrs: Vec<Multiaddr> = presence.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        if !addrs.is_empty() && known.is_none() {
            self.actions.push_back(Action::Addresses { peer: device, addrs });
        }
        self.present.insert(
            key,
            Present {
                person: presence.person,
                offer: presence.offer,
                queue: presence.queue,
                at: now,
                at_ms: presence.at_ms,
            },
        );
        MessageAcceptance::Accept
    }

    /// A device stopped answering: it is not present until it announces
    /// itself again.
    pub(crate) fn on_unreachable(&mut self, device: &PeerId) {
        self.present.retain(|(_, d), _| d != device);
    }

    /// Time passes: announce this node, forget the silent, read this
    /// node's networks again.
    pub(crate) fn on_tick(
        &mut self,
        state: &LocalState,
        addrs: impl FnOnce() -> Vec<String>,
        now: Instant,
        now_ms: u64,
    ) {
        if now >= self.next_scan {
            self.next_scan = now + RESCAN;
            self.rescan(state);
            self.want_members(state);
        }
        self.present.retain(|_, p| now.saturating_duration_since(p.at) <= PRESENCE_EXPIRY);
        if now < self.next_presence || self.nets.is_empty() {
            return;
        }
        self.next_presence = now + PRESENCE_INTERVAL;
        let addrs = addrs();
        for (id, m) in &self.nets {
            let presence = Presence {
                network: id.clone(),
                person: m.person.clone(),
                at_ms: now_ms,
                offer: self.offer.clone(),
                queue: self.queue,
                addrs: addrs.iter().take(8).cloned().collect(),
            };
            self.actions.push_back(Action::Publish { topic: presence_topic(id), data: presence.encode() });
        }
    }

    /// A request from `peer`: only an owner serves them.
    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        request: NetRequest,
        channel: C,
        state: &LocalState,
        now_ms: u64,
    ) {
        let response = match request {
            NetRequest::Join { token, cert } => self.admit(peer, &token, cert, state, now_ms),
            NetRequest::Leave { network } => self.let_go(peer, &network, state),
        };
        if let NetResponse::Refused(reason) = &response {
            tracing::info!(%peer, "network request refused: {reason}");
        }
        self.actions.push_back(Action::Respond { channel, response });
    }

    fn admit(
        &mut self,
        peer: PeerId,
        token: &str,
        cert: Option<DeviceCert>,
        state: &LocalState,
        now_ms: u64,
    ) -> NetResponse {
        let refuse = |reason: String| NetResponse::Refused(reason);
        let invite = match Invite::verify(token) {
            Ok(invite) => invite,
            Err(e) => return refuse(e.to_string()),
        };
        if invite.owner != self.local_text || self.owned(&invite.network).is_err() {
            return refuse("this node does not own that network".into());
        }
        if let Err(e) = invite.check_time(now_ms) {
            return refuse(e.to_string());
        }
        let device = peer.to_base58();
        let person = match cert {
            None => device.clone(),
            Some(cert) => {
                if let Err(e) = cert.verify() {
                    return refuse(e.to_string());
                }
                if cert.device != device || cert.network != invite.network {
                    return refuse("the device certificate is for another device or network".into());
                }
                if now_ms >= cert.expires_ms {
                    return refuse("the device certificate has expired".into());
                }
                cert.person
            }
        };
        let network = invite.network.as_str();
        let local = self.local_text.clone();
        if let Some(revoked) =
            record::<Revoked>(state, &local, &records::revoked_key(network, &person), &local)
            && revoked.at_ms >= invite.issued_ms
        {
            return refuse(format!(
                "{person} was revoked from this network; it needs an invite issued since"
            ));
        }
        let key = records::member_key(network, &person);
        let member = match record::<MemberRecord>(state, &local, &key, &local) {
            Some(mut member) => {
                if !member.devices.contains(&device) {
                    if member.devices.len() >= MAX_DEVICES {
                        return refuse(format!("{person} has {MAX_DEVICES} devices already"));
                    }
                    member.devices.push(device.clone());
                }
                member
            }
            None => {
                let uses_key = records::invite_key(network, &invite.nonce);
                let used = record::<InviteUse>(state, &local, &uses_key, &local).map_or(0, |u| u.used);
                if used >= invite.uses {
                    return refuse(format!("this invite has been used {used} time(s), all it allows"));
                }
                self.write(uses_key, Some(&InviteUse { used: used + 1 }));
                MemberRecord {
                    person: person.clone(),
                    devices: vec![device.clone()],
                    joined_ms: now_ms,
                    expires_ms: invite.member_for_ms.map(|d| now_ms.saturating_add(d)),
                }
            }
        };
        self.write(key, Some(&member));
        self.write::<Revoked>(records::revoked_key(network, &person), None);
        tracing::info!(%device, %person, network, "joined the network");
        NetResponse::Joined { network: network.to_owned(), name: invite.name, person }
    }

    fn let_go(&mut self, peer: PeerId, network: &str, state: &LocalState) -> NetResponse {
        if self.owned(network).is_err() {
            return NetResponse::Refused("this node does not own that network".into());
        }
        let device = peer.to_base58();
        let Some(mut member) =
            self.member_records(state, network).into_iter().find(|m| m.devices.contains(&device))
        else {
            return NetResponse::Left;
        };
        let key = records::member_key(network, &member.person);
        if member.person == device {
            self.write::<MemberRecord>(key, None);
        } else {
            member.devices.retain(|d| *d != device);
            self.write(key, Some(&member));
        }
        NetResponse::Left
    }

    /// The answer to one of this node's requests.
    pub(crate) fn on_response(&mut self, ask: AskId, response: NetResponse, now_ms: u64) {
        match (self.pending.remove(&ask), response) {
            (
                Some(Pending::Join { network, owner, name, reply }),
                NetResponse::Joined { network: joined, name: new_name, person },
            ) => {
                if joined != network {
                    let _ = reply.send(Err(err("the owner answered for another network")));
                    return;
                }
                let name = if new_name.is_empty() { name } else { new_name };
                let record = Joined {
                    owner: owner.clone(),
                    name: name.clone(),
                    person: person.clone(),
                    joined_ms: now_ms,
                };
                self.write(records::joined_key(&network), Some(&record));
                self.enter(
                    network.clone(),
                    Membership { owner: owner.clone(), name: name.clone(), person: person.clone() },
                );
                let _ = reply.send(Ok(NetworkInfo {
                    id: network,
                    name,
                    owner,
                    person,
                    role: "member".into(),
                    status: "pending".into(),
                    members: 0,
                }));
            }
            (Some(Pending::Join { reply, .. }), NetResponse::Refused(reason)) => {
                let _ = reply.send(Err(err(format!("the owner refused: {reason}"))));
            }
            (Some(Pending::Leave { reply }), NetResponse::Left) => {
                let _ = reply.send(Ok(true));
            }
            (Some(Pending::Leave { reply }), NetResponse::Refused(reason)) => {
                tracing::info!("the owner did not remove this node: {reason}");
                let _ = reply.send(Ok(false));
            }
            (Some(Pending::Join { reply, .. }), other) => {
                let _ = reply.send(Err(err(format!("unexpected answer from the owner: {other:?}"))));
            }
            (Some(Pending::Leave { reply }), _) => {
                let _ = reply.send(Ok(false));
            }
            (None, _) => {}
        }
    }

    /// One of this node's requests failed.
    pub(crate) fn on_failure(&mut self, ask: AskId, error: &str) {
        match self.pending.remove(&ask) {
            Some(Pending::Join { reply, owner, .. }) => {
                let _ = reply.send(Err(err(format!("cannot reach the network's owner {owner}: {error}"))));
            }
            Some(Pending::Leave { reply }) => {
                let _ = reply.send(Ok(false));
            }
            None => {}
        }
    }
}

mod credits;
#[cfg(test)]
mod tests;
