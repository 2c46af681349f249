//! # infermesh-node
//!
//! The native InferMesh node behind the `infermesh` binary: a bootstrap,
//! relay and replica node with an interactive prompt and a loopback HTTP
//! API. The mesh itself lives in `infermesh-core`; this crate is the shell
//! around it (data directory, listeners, CLI, HTTP).

mod api_pool;
pub mod cli;
mod datadir;
pub mod executor;
mod http;
mod node;
mod output;
pub mod pool;
pub mod repl;
mod store_redb;

pub use node::run;
