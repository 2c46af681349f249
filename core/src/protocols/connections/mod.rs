//! Connections: dialling, keeping bootstrap and known peers connected
//! (reconnection with backoff and jitter), liveness, relay reservations
//! and finding a node by ID. No wire format of its own: it drives libp2p's
//! transports, identify, ping, Kademlia and relay.

pub(crate) mod backoff;
mod driver;

pub(crate) use driver::{Action, Connections, Identified, Ping};
