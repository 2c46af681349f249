//! The outbox: direct messages within a window per peer, a bounded
//! priority queue behind it, acknowledgements and retries, and publishes
//! waiting for a topic's first subscriber. Its wire is the
//! [direct](super::direct) protocol and gossipsub.

mod driver;

pub(crate) use driver::{Action, Body, Outbound, Outbox, PUBLISH_GRACE, Queued, Sealer, Undelivered};
