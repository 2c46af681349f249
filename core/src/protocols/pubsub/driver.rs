//! Topics: the ones this node's user subscribed to (their messages are
//! validated and delivered), and, on a gossip hub (native nodes), the ones
//! it joins only to relay between peers that know nothing but it (browser
//! pages). I/O-free: gossipsub's side is the event loop's, through
//! [`Action`]s.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
};

use libp2p::PeerId;

use crate::{
    InboundMessage, MeshError, Via,
    messaging::{Limits, RejectReason, Rejection, Validator},
    metrics::{Metrics, Route},
    protocols::replication::wire::STATE_TOPIC,
};

const RESERVED: &str = "topics under /infermesh/ are reserved for the mesh itself";

/// Whether `topic` is InferMesh's own.
pub(crate) fn is_reserved(topic: &str) -> bool {
    topic.starts_with(RESERVED_PREFIX)
}

/// Longest topic name.
pub(crate) const MAX_TOPIC_LEN: usize = 256;
/// Topics under this prefix are InferMesh's own (network presence); users
/// may not subscribe or publish to them.
pub(crate) const RESERVED_PREFIX: &str = "/infermesh/";

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action {
    /// Subscribe in gossipsub (with our topic scoring).
    Join(String),
    /// Unsubscribe in gossipsub.
    Leave(String),
}

/// What to tell gossipsub about a message, and what to deliver.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Valid: forward it; deliver it if the user subscribed.
    Accept(Option<Box<InboundMessage>>),
    /// Not forwarded, the sender not penalised (expired, duplicate).
    Ignore(Rejection),
    /// Invalid: not forwarded, the sender penalised.
    Reject(Rejection),
}

/// The driver; see the module documentation.
pub(crate) struct Pubsub {
    /// Topics the user subscribed to.
    user: BTreeSet<String>,
    /// Topics joined only to relay for peers.
    hub: BTreeSet<String>,
    /// Reserved topics other drivers joined for this node (network presence).
    internal: BTreeSet<String>,
    /// Join every topic a peer subscribes to (up to `max_hub`).
    gossip_hub: bool,
    max_hub: usize,
    validator: Validator,
    metrics: Arc<Metrics>,
    actions: VecDeque<Action>,
}

impl Pubsub {
    /// A node that relays up to `max_hub` topics for peers if `gossip_hub`.
    pub(crate) fn new(gossip_hub: bool, max_hub: usize, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            user: BTreeSet::new(),
            hub: BTreeSet::new(),
            internal: BTreeSet::new(),
            gossip_hub,
            max_hub,
            validator: Validator::new(limits),
            metrics,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Topics the user subscribed to, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.user.iter().cloned().collect()
    }

    /// Topics relayed for peers, sorted.
    pub(crate) fn hub_topics(&self) -> Vec<String> {
        self.hub.iter().cloned().collect()
    }

    /// Whether `topic` may be published on by the user.
    pub(crate) fn check_publish(&self, topic: &str) -> Result<(), MeshError> {
        if is_reserved(topic) {
            return Err(MeshError::Publish { topic: topic.to_owned(), reason: RESERVED.into() });
        }
        Ok(())
    }

    /// The user subscribes: messages on `topic` are delivered from now on.
    /// `false` if already subscribed.
    pub(crate) fn subscribe(&mut self, topic: String) -> Result<bool, MeshError> {
        if is_reserved(&topic) {
            return Err(MeshError::Subscribe { topic, reason: RESERVED.into() });
        }
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            return Err(MeshError::Subscribe {
                topic,
                reason: format!("topic names are 1-{MAX_TOPIC_LEN} bytes"),
            });
        }
        if self.user.contains(&topic) {
            return Ok(false);
        }
        if !self.hub.remove(&topic) {
            self.actions.push_back(Action::Join(topic.clone()));
        }
        self.user.insert(topic);
        Ok(true)
    }

    /// The user unsubscribes; `peers_on_it` says whether peers still use
    /// the topic (a hub keeps relaying it then). `false` if not subscribed.
    pub(crate) fn unsubscribe(&mut self, topic: &str, peers_on_it: bool) -> bool {
        if !self.user.remove(topic) {
            return false;
        }
        if self.gossip_hub && peers_on_it {
            self.hub.insert(topic.to_owned());
        } else {
            self.actions.push_back(Action::Leave(topic.to_owned()));
        }
        true
    }

    /// Another driver joins a reserved topic for this node.
    pub(crate) fn join_internal(&mut self, topic: &str) {
        if self.internal.insert(topic.to_owned()) && !self.hub.remove(topic) {
            self.actions.push_back(Action::Join(topic.to_owned()));
        }
    }

    /// Another driver leaves a reserved topic it joined; a hub keeps
    /// relaying it while peers use it.
    pub(crate) fn leave_internal(&mut self, topic: &str, peers_on_it: bool) {
        if !self.internal.remove(topic) {
            return;
        }
        if self.gossip_hub && peers_on_it && self.hub.len() < self.max_hub {
            self.hub.insert(topic.to_owned());
        } else {
            self.actions.push_back(Action::Leave(topic.to_owned()));
        }
    }

    /// A peer subscribed to `topic`: a hub joins it too, while it has room
    /// (network presence included, which it relays without reading).
    pub(crate) fn on_peer_subscribed(&mut self, topic: &str) {
        if !self.gossip_hub
            || topic == STATE_TOPIC
            || self.user.contains(topic)
            || self.hub.contains(topic)
            || self.internal.contains(topic)
        {
            return;
        }
        if self.hub.len() < self.max_hub {
            tracing::debug!(%topic, "joining topic as a hub");
            self.hub.insert(topic.to_owned());
            self.actions.push_back(Action::Join(topic.to_owned()));
        }
    }

    /// Leaves the hub topics no peer uses any more.
    pub(crate) fn leave_unused(&mut self, peers_on: impl Fn(&str) -> bool) {
        let unused: Vec<String> = self.hub.iter().filter(|t| !peers_on(t)).cloned().collect();
        for topic in unused {
            self.hub.remove(&topic);
            self.actions.push_back(Action::Leave(topic));
        }
    }

    /// A gossip message on `topic` signed by `source` (`None` if unsigned):
    /// validated before it may be forwarded, delivered if the user
    /// subscribed (hub topics are relayed, not delivered).
    pub(crate) fn on_message(
        &mut self,
        source: Option<PeerId>,
        topic: &str,
        data: &[u8],
        now_ms: u64,
    ) -> Verdict {
        let Some(sender) = source else {
            return Verdict::Reject(Rejection::new(RejectReason::Schema, "unsigned gossip message"));
        };
        match self.validator.accept(data, &sender, topic, now_ms) {
            Ok(envelope) => {
                self.metrics.message_in(Route::Gossip);
                let deliver = self.user.contains(topic).then(|| {
                    Box::new(InboundMessage {
                        envelope,
                        sender,
                        via: Via::Topic(topic.to_owned()),
                        e2e: None,
                    })
                });
                Verdict::Accept(deliver)
            }
            Err(rejection) if rejection.reason.is_peer_fault() => Verdict::Reject(rejection),
            Err(rejection) => Verdict::Ignore(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::{
        Identity,
        messaging::{Envelope, MsgType},
    };

    fn pubsub(hub: bool) -> Pubsub {
        Pubsub::new(hub, 2, Limits::default(), Arc::new(Metrics::new(|_, _| {})))
    }

    fn actions(p: &mut Pubsub) -> Vec<String> {
        std::iter::from_fn(|| p.poll_action())
            .map(|a| match a {
                Action::Join(t) => format!("join {t}"),
                Action::Leave(t) => format!("leave {t}"),
            })
            .collect()
    }

    #[test]
    fn a_hub_relays_peers_topics_up_to_its_limit_and_leaves_unused_ones() {
        let mut p = pubsub(true);
        p.on_peer_subscribed("a");
        p.on_peer_subscribed("b");
        p.on_peer_subscribed("c");
        p.on_peer_subscribed(STATE_TOPIC);
        assert_eq!(actions(&mut p), ["join a", "join b"], "two hub topics at most");
        // The user subscribes to a hub topic: no second join; unsubscribes
        // while peers use it: it stays a hub topic.
        assert!(p.subscribe("a".into()).unwrap());
        assert!(!p.subscribe("a".into()).unwrap());
        assert!(actions(&mut p).is_empty());
        assert!(p.unsubscribe("a", true));
        assert!(!p.unsubscribe("a", true));
        assert_eq!(p.hub_topics(), ["a", "b"]);
        p.leave_unused(|t| t == "b");
        assert_eq!(actions(&mut p), ["leave a"]);
        // A light node joins only what its user asks for.
        let mut light = pubsub(false);
        light.on_peer_subscribed("a");
        light.subscribe("x".into()).unwrap();
        assert!(light.unsubscribe("x", true));
        assert_eq!(actions(&mut light), ["join x", "leave x"]);
    }

    #[test]
    fn bad_topics_are_refused() {
        let mut p = pubsub(true);
        assert!(p.subscribe(String::new()).is_err());
        assert!(p.subscribe("t".repeat(MAX_TOPIC_LEN + 1)).is_err());
        assert!(p.subscribe("/infermesh/net/x".into()).unwrap_err().to_string().contains("reserved"));
        assert!(p.check_publish(STATE_TOPIC).is_err() && p.check_publish("ok").is_ok());
    }

    #[test]
    fn internal_topics_are_kept_apart_from_hub_topics() {
        let mut p = pubsub(true);
        p.on_peer_subscribed("/infermesh/net/a");
        assert_eq!(actions(&mut p), ["join /infermesh/net/a"]);
        // Joined for this node: no second join, and not left as unused.
        p.join_internal("/infermesh/net/a");
        p.join_internal("/infermesh/net/b");
        assert_eq!(actions(&mut p), ["join /infermesh/net/b"]);
        p.leave_unused(|_| false);
        assert!(actions(&mut p).is_empty());
        p.on_peer_subscribed("/infermesh/net/b");
        assert!(actions(&mut p).is_empty());
        // Left while peers use it: relayed as a hub topic; otherwise left.
        p.leave_internal("/infermesh/net/a", true);
        p.leave_internal("/infermesh/net/b", false);
        assert_eq!(actions(&mut p), ["leave /infermesh/net/b"]);
        assert_eq!(p.hub_topics(), ["/infermesh/net/a"]);
    }

    #[test]
    fn messages_are_validated_then_delivered_only_on_user_topics() {
        let mut p = pubsub(true);
        p.subscribe("mine".into()).unwrap();
        let sender = Identity::from_seed([2; 32]).peer_id();
        let now = 1_700_000_000_000;
        let message = |topic: &str| {
            let mut env = Envelope::new(MsgType::Thought, topic, 5, 60);
            env.from = sender.to_base58();
            env.timestamp = now;
            env.encode()
        };
        let Verdict::Accept(Some(m)) = p.on_message(Some(sender), "mine", &message("mine"), now) else {
            panic!()
        };
        assert_eq!((m.sender, m.via), (sender, Via::Topic("mine".into())));
        assert!(matches!(p.on_message(Some(sender), "hub", &message("hub"), now), Verdict::Accept(None)));
        // The same message again: ignored; garbage or unsigned: rejected.
        assert!(matches!(p.on_message(Some(sender), "hub", &message("hub"), now), Verdict::Accept(None)));
        let again = message("mine");
        p.on_message(Some(sender), "mine", &again, now);
        assert!(
            matches!(p.on_message(Some(sender), "mine", &again, now), Verdict::Ignore(r) if r.reason == RejectReason::Duplicate)
        );
        assert!(matches!(p.on_message(Some(sender), "mine", b"\xff", now), Verdict::Reject(_)));
        assert!(matches!(p.on_message(None, "mine", &message("mine"), now), Verdict::Reject(_)));
    }
}
