//! [`MeshError`], the error of every mesh operation. A leaf module.

use libp2p::{Multiaddr, PeerId};

use crate::messaging::Rejection;

/// Errors of mesh operations; the messages are meant for people.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A state write was refused or could not be stored.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    /// The event loop has stopped.
    #[error("the mesh node has shut down")]
    Closed,
    /// Building the transports failed.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// Building a protocol failed.
    #[error("protocol setup failed: {0}")]
    Setup(String),
    /// A listen address could not be used.
    #[error("could not listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("could not connect to {target}: {reason}")]
    Dial {
        /// The address or node ID dialled.
        target: String,
        /// Why.
        reason: String,
    },
    /// A peer could not be found in the DHT or on the local network.
    #[error("node {0} was not found (no address known via the DHT, mDNS or bootstrap peers)")]
    PeerNotFound(PeerId),
    /// The envelope failed the checks a receiver would apply.
    #[error("invalid message: {0}")]
    InvalidMessage(Rejection),
    /// Nobody is subscribed to the topic yet.
    #[error("no peers are subscribed to topic '{0}' yet")]
    NoSubscribers(String),
    /// Publishing failed for another reason.
    #[error("publishing to '{topic}' failed: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Subscribing failed.
    #[error("subscribing to '{topic}' failed: {reason}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Too many messages are waiting for this peer.
    #[error("send queue to {0} is full")]
    QueueFull(PeerId),
    /// The direct message did not reach the peer.
    #[error("direct message to {peer} failed: {reason}")]
    Delivery {
        /// The recipient.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A private network operation failed.
    #[error("{0}")]
    Network(String),
    /// A job could not run or did not finish.
    #[error("{0}")]
    Job(String),
    /// What was asked for is not valid (an unknown model, a bad input).
    #[error("{0}")]
    BadRequest(String),
    /// The peer received the message and refused it.
    #[error("{peer} rejected the message: {reason}")]
    RejectedByPeer {
        /// The recipient.
        peer: PeerId,
        /// The reason label it gave.
        reason: String,
    },
}

impl MeshError {
    /// Whether the caller's input was at fault (as opposed to the mesh).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, MeshError::BadRequest(_) | MeshError::InvalidMessage(_))
    }
}

impl From<crate::platform::PlatformError> for MeshError {
    fn from(e: crate::platform::PlatformError) -> Self {
        MeshError::Transport(e.to_string())
    }
}
