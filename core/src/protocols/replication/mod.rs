//! State replication: live entries on the state topic, catch-up by
//! reconciliation with each peer, replicas kept for others. [`wire`] is
//! the gossip batch and `/infermesh/state-sync/1.0.0`; [`driver`] the
//! rules. The merge itself is [`crate::state`]'s.

mod driver;
mod flow;
pub(crate) mod wire;

pub(crate) use driver::{Action, Replication, Write, WriteReply};
