//! Direct messages: `/infermesh/direct/2.0.0`, one long-lived stream per
//! connection and direction carrying pipelined, acknowledged envelopes.
//! [`wire`] is the frame format, [`behaviour`] the libp2p behaviour that
//! moves frames (with a `handler` per connection); the rules of sending (window, queues, sealing, retries)
//! are the [outbox](super::outbox)'s.

pub(crate) mod behaviour;
mod handler;
pub(crate) mod wire;

pub(crate) use behaviour::{Behaviour, Event, Failure, RequestId};
pub(crate) use wire::{Ack, DirectRequest};
