//! Private networks: a group's devices, pooled. An owner creates one and
//! hands out signed invites; members are people (keys) with devices (node
//! IDs their key certified); membership is signed state in the owner's
//! namespace, replicated to every member. [`records`] is that data,
//! [`wire`] the join protocol and presence announcements, [`driver`] the
//! rules.

mod driver;
pub(crate) mod records;
pub(crate) mod wire;

pub(crate) use driver::{Action, Candidate, Networks};
