//! Messaging: the envelope, its validation and the outbound priority queue.
//! Everything here is pure and I/O-free.

mod envelope;
mod queue;
mod validate;

pub use envelope::{Envelope, InvalidMsgType, MAX_MSG_TYPE_LEN, MAX_PRIORITY, MsgType, new_message_id};
pub use queue::{PriorityQueue, QueueFull};
pub use validate::{Limits, RejectReason, Rejection, Validator};
