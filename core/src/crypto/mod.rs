//! End-to-end cryptography: the hybrid post-quantum KEM every end-to-end
//! session starts from.

pub mod kem;

pub use kem::{KemError, KemPublicKey, KemSecret, Level, SharedSecret};
