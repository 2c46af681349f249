//! Jobs across a private network: a job of many inputs is cut into
//! chunks, run by the network's workers in parallel and put back in order.
//! [`wire`] is `/infermesh/jobs/2.0.0`, [`scheduler`] where each chunk
//! goes, [`driver`] the rules of both sides (with the credits and spot
//! checks of `driver/credit.rs`).

mod driver;
pub(crate) mod scheduler;
pub(crate) mod wire;

pub use driver::JobHandle;
pub(crate) use driver::{Action, Jobs, Roster, TaskId, check_inputs};
