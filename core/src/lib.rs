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

mod addr;
pub mod compute;
mod config;
pub mod crypto;
mod error;
mod events;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod handle;
mod identity;
pub mod messaging;
mod metrics;
mod net;
pub mod platform;
mod pool;
mod protocols;
pub mod state;
pub mod store;

pub use config::{MeshConfig, Timing, TransportConfig};
pub use error::MeshError;
pub use events::{
    Delivery, InboundMessage, MeshEvent, PeerInfo, Sent, StateView, Status, Via, transport_name,
};
pub use handle::{Mesh, MeshEvents, MeshHandle};
pub use identity::{Identity, IdentityError};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use messaging::{Envelope, MsgType};
pub use metrics::MetricsSnapshot;
pub use net::EventLoop;
pub use pool::InviteOptions;
pub use protocols::credits;
pub use protocols::jobs::JobHandle;
pub use state::WriteMode;
