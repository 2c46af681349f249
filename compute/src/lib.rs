//! # infermesh-compute
//!
//! The workloads an InferMesh node (or a browser tab, in a Web Worker) runs
//! for its network. The first: sentence embeddings with `all-MiniLM-L6-v2`
//! — its WordPiece tokenizer from `tokenizer.json`, the 6-layer BERT
//! (candle), then sentence-transformers' pooling: the mean over the
//! attention mask, L2-normalised, inputs truncated at 256 tokens. Pure
//! Rust and I/O-free: the caller brings the model files' bytes, which are
//! checked against their SHA-256 ([`model`]) before use. The same code
//! runs natively and in wasm.

mod embed;
pub mod model;

pub use embed::{DIMENSIONS, Embedder, MAX_TOKENS};
pub use model::{MODEL, ModelFile, ModelFiles};

/// Why a workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// A model file is not the one expected (its SHA-256 differs).
    #[error("model file {name} is not the expected one: SHA-256 {got}, expected {expected}")]
    WrongFile {
        /// The file.
        name: &'static str,
        /// Its SHA-256, in hex.
        got: String,
        /// The one expected.
        expected: &'static str,
    },
    /// The model files do not load (damaged, or not this model).
    #[error("cannot load the model: {0}")]
    Load(String),
    /// The computation failed.
    #[error("embedding failed: {0}")]
    Run(String),
}
