//! End-to-end sessions: sealing and opening direct messages with the
//! hybrid post-quantum KEM, finding a recipient's key, and the mailbox for
//! offline peers. [`wire`] is `/infermesh/e2e/1.0.0`; [`driver`] its rules.

mod deposits;
mod driver;
pub(crate) mod holder;
pub(crate) mod keys;
pub(crate) mod wire;

pub(crate) use driver::{Action, HeldAck, Sessions};
