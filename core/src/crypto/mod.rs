//! End-to-end cryptography: the hybrid post-quantum KEM, and the sessions
//! built on it (signed KEM keys, handshake, directional keys, AEAD with a
//! replay window, rotation).

pub mod e2e;
pub mod kem;
pub mod private;
pub mod session;

pub use e2e::{E2e, MAX_SEAL_OVERHEAD, OpenError, Opened, SealError, Sealing};
pub use kem::{KemError, KemPublicKey, KemSecret, Level, SharedSecret};
pub use session::{Rekey, Role, Session, SessionError, SignedKemKey};
