//! What a [`crate::MeshHandle`] asks of the event loop: one [`Command`]
//! per call, each carrying the channel its answer goes back on.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

pub(crate) use crate::protocols::outbox::Outbound;
use crate::{
    Delivery, MeshError, PeerInfo, StateView, Status,
    compute::{ComputeOffer, CreditsInfo, Executor, JobInfo, MemberInfo, ModelSpec, NetworkInfo, WorkerInfo},
    credits::records::Terms,
    protocols::{Reply, jobs::JobHandle},
    state::{StateError, WriteMode},
};

/// Requests from handles to the event loop; each carries its reply channel.
pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, MeshError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    Join {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<bool, MeshError>>,
    },
    Unsubscribe {
        topic: String,
        reply: oneshot::Sender<bool>,
    },
    TopicPeers {
        topic: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Publish {
        topic: String,
        outbound: Outbound,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    SendDirect {
        peer: PeerId,
        outbound: Outbound,
        reply: oneshot::Sender<Result<Delivery, MeshError>>,
    },
    StateWrite {
        namespace: Option<String>,
        key: String,
        value: Option<serde_json::Value>,
        mode: WriteMode,
        private: bool,
        reply: oneshot::Sender<Result<(), StateError>>,
    },
    StateGet {
        namespace: Option<String>,
        key: String,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    StateView {
        namespace: Option<String>,
        /// Open this node's own private values (else they stay sealed).
        reveal: bool,
        reply: oneshot::Sender<StateView>,
    },
    HeldMail {
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Networks, workers and jobs.
    Pool(PoolCommand),
}

/// The pooled-compute commands (served by `event_loop::pool`).
pub(crate) enum PoolCommand {
    NetworkCreate {
        name: String,
        reply: Reply<NetworkInfo>,
    },
    NetworkInvite {
        network: Option<String>,
        uses: u32,
        valid_ms: u64,
        member_for_ms: Option<u64>,
        reply: Reply<String>,
    },
    NetworkCertify {
        network: Option<String>,
        device: PeerId,
        valid_ms: u64,
        reply: Reply<String>,
    },
    NetworkJoin {
        token: String,
        cert: Option<String>,
        reply: Reply<NetworkInfo>,
    },
    NetworkLeave {
        network: Option<String>,
        reply: Reply<bool>,
    },
    NetworkRevoke {
        network: Option<String>,
        id: String,
        reply: Reply<String>,
    },
    NetworkMembers {
        network: Option<String>,
        reply: Reply<Vec<MemberInfo>>,
    },
    Networks {
        reply: oneshot::Sender<Vec<NetworkInfo>>,
    },
    Workers {
        network: Option<String>,
        reply: Reply<Vec<WorkerInfo>>,
    },
    Credits {
        network: Option<String>,
        reply: Reply<CreditsInfo>,
    },
    SetTerms {
        network: Option<String>,
        terms: Terms,
        reply: Reply<CreditsInfo>,
    },
    Embed {
        network: Option<String>,
        model: ModelSpec,
        inputs: Vec<String>,
        reply: Reply<JobHandle>,
    },
    Jobs {
        reply: oneshot::Sender<Vec<JobInfo>>,
    },
    /// Offer compute with this executor (`None`: stop offering).
    Compute {
        executor: Option<Box<dyn Executor>>,
        reply: oneshot::Sender<Option<ComputeOffer>>,
    },
}
