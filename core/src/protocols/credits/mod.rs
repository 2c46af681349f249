//! Credits and verified results for a network's jobs: the signed records
//! ([`records`]: receipts, check outcomes, terms), the balances and trust
//! scores every member computes from them ([`ledger`]), and the VRF draw
//! of the chunks that are checked ([`vrf`]).

pub mod ledger;
pub mod records;
pub mod vrf;
