//! Messaging: the envelope (with its sealed body as plain data), its
//! validation, the outbound priority queue and the mailbox for offline
//! peers. Everything here is pure and I/O-free.

mod envelope;
mod mailbox;
mod queue;
mod sealed;
mod validate;

pub use envelope::{Envelope, InvalidMsgType, MAX_MSG_TYPE_LEN, MAX_PRIORITY, MsgType, new_message_id};
pub use mailbox::{Held, Mailbox, MailboxError, MailboxLimits};
pub use queue::{PriorityQueue, QueueFull};
pub use sealed::{Handshake, Sealed, SealedBody};
pub use validate::{Limits, RejectReason, Rejection, Validator};
