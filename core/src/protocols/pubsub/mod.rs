//! Broadcast on topics: which topics this node is in (for its user, or as
//! a gossip hub for peers) and what it delivers of them. Its wire is
//! libp2p gossipsub, signed and validated before forwarding.

mod driver;

pub(crate) use driver::{Action, Pubsub, Verdict};
