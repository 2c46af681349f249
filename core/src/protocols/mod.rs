//! One folder per protocol: its rules as an I/O-free driver (events and
//! commands in, [`Action`](outbox::Action)s out, tested without a network)
//! and, where it has one, its wire format. The event loop in
//! [`crate::net`] owns the swarm, routes to the drivers and carries out
//! their actions; see `ARCHITECTURE.md` for how to add a protocol.

pub(crate) mod bounded;
pub(crate) mod connections;
pub mod credits;
pub(crate) mod direct;
pub(crate) mod jobs;
pub(crate) mod networks;
pub(crate) mod outbox;
pub(crate) mod pubsub;
pub(crate) mod replication;
pub(crate) mod sessions;

/// A caller waiting for an answer (a handle's command).
pub(crate) type Reply<T> = tokio::sync::oneshot::Sender<Result<T, crate::MeshError>>;

/// A driver's number for one of its outstanding requests; the event loop
/// maps libp2p's request IDs to it and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AskId(pub u64);
