//! # infermesh-core
//!
//! The platform-agnostic core of InferMesh: identity, the message envelope
//! and its validation, and the [`Mesh`] facade that drives a libp2p swarm
//! (gossipsub, Kademlia, identify, ping, relay, request-response, …) on
//! native targets and in the browser alike.
//!
//! ```no_run
//! # async fn demo() -> Result<(), infermesh_core::MeshError> {
//! use futures::StreamExt;
//! use infermesh_core::{Identity, Mesh, MeshConfig, MeshEvent};
//!
//! let (mesh, mut events, event_loop) = Mesh::build(MeshConfig::server(Identity::generate().unwrap()))?;
//! # let spawn = |_f: infermesh_core::EventLoop| ();
//! spawn(event_loop); // e.g. tokio::spawn(event_loop.run())
//! mesh.listen_on("/ip4/0.0.0.0/tcp/4001".parse().unwrap()).await?;
//! mesh.subscribe("swarm-alpha").await?;
//! while let Some(event) = events.next().await {
//!     if let MeshEvent::Message(m) = event {
//!         println!("{} says {:?}", m.sender, m.envelope.content);
//!     }
//! }
//! # Ok(()) }
//! ```

// Unit tests also run in headless Chromium, not in Node.
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

pub mod crypto;
mod identity;
mod mesh;
pub mod messaging;
mod metrics;
mod net;
pub mod platform;
pub mod state;

pub use identity::{Identity, IdentityError};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use mesh::{
    Delivery, EventLoop, InboundMessage, Mesh, MeshConfig, MeshError, MeshEvent, MeshEvents, MeshHandle,
    PeerInfo, Sent, StateView, Status, Timing, TransportConfig, Via, WriteMode, transport_name,
};
pub use messaging::{Envelope, MsgType};
pub use metrics::MetricsSnapshot;
