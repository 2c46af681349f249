//! Which chunks of a job are checked, drawn with a verifiable random
//! function (schnorrkel's VRF on Ristretto25519).
//!
//! A requester's VRF key is derived from its device's identity, and the
//! key goes in every chunk it sends: each worker signs it into its claim,
//! so the requester is bound to it before it sees a single result. The
//! draw is the VRF over (network, job): one output per job, fixed by the
//! key and the job's ID, that anyone holding the proof can verify. Chunk
//! `c` is checked when a number derived from the output and `c` falls
//! below the check rate. A worker never sees the proof before it answers,
//! so it cannot tell a checked chunk from another.

use rand_core06::{CryptoRng, Error as RngError, RngCore};
use schnorrkel::{
    ExpansionMode, MiniSecretKey, PublicKey,
    context::attach_rng,
    signing_context,
    vrf::{VRFPreOut, VRFProof},
};
use sha2::{Digest, Sha256};

use crate::Identity;

const CONTEXT: &[u8] = b"infermesh/credits/vrf/v1";
const KEY_CONTEXT: &[u8] = b"infermesh/credits/vrf-key/v1\0";
const CHECK_CONTEXT: &[u8] = b"infermesh/credits/checks/v1";

/// The VRF output and proof for one job, with the key that made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draw {
    /// The requester's VRF public key.
    pub key: [u8; 32],
    /// The VRF pre-output.
    pub output: [u8; 32],
    /// The proof that `output` is the VRF of the job under `key`.
    pub proof: [u8; 64],
}

/// The operating system's randomness, for the proof's nonce.
struct OsRng;

impl RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // Without randomness the nonce is still derived from the secret
        // key and the transcript (merlin's witness), so a failure here
        // leaves the proof sound; it is not expected to happen.
        let _ = getrandom::fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RngError> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for OsRng {}

fn keypair(identity: &Identity) -> schnorrkel::Keypair {
    let mut hash = Sha256::new();
    hash.update(KEY_CONTEXT);
    hash.update(identity.seed());
    let seed: [u8; 32] = hash.finalize().into();
    MiniSecretKey::from_bytes(&seed)
        .expect("32 bytes are a mini secret key")
        .expand_to_keypair(ExpansionMode::Uniform)
}

/// This device's VRF public key.
pub fn public_key(identity: &Identity) -> [u8; 32] {
    keypair(identity).public.to_bytes()
}

fn message(network: &str, job: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(network.len() + job.len() + 8);
    m.extend_from_slice(&(network.len() as u32).to_be_bytes());
    m.extend_from_slice(network.as_bytes());
    m.extend_from_slice(job);
    m
}

/// The draw for `job` of `network`, made with this device's key.
pub fn draw(identity: &Identity, network: &str, job: &[u8]) -> Draw {
    let keypair = keypair(identity);
    // The proof's nonce comes from the "extra" transcript, which
    // `vrf_verify` takes as the bare `VRF` one: the randomness attached
    // to it does not change what it commits to.
    let extra = attach_rng(merlin::Transcript::new(b"VRF"), OsRng);
    let (io, proof, _) =
        keypair.vrf_sign_extra(signing_context(CONTEXT).bytes(&message(network, job)), extra);
    Draw { key: keypair.public.to_bytes(), output: io.to_preout().to_bytes(), proof: proof.to_bytes() }
}

/// Checks that `draw` is the VRF of `job` of `network` under its key.
pub fn verify(draw: &Draw, network: &str, job: &[u8]) -> Result<(), String> {
    let key = PublicKey::from_bytes(&draw.key).map_err(|_| "not a VRF public key".to_owned())?;
    let output = VRFPreOut::from_bytes(&draw.output).map_err(|_| "not a VRF output".to_owned())?;
    let proof = VRFProof::from_bytes(&draw.proof).map_err(|_| "not a VRF proof".to_owned())?;
    key.vrf_verify(signing_context(CONTEXT).bytes(&message(network, job)), &output, &proof)
        .map(|_| ())
        .map_err(|_| "the VRF proof does not verify".to_owned())
}

/// Chunk `chunk`'s number in [0, 1), from a draw's output (verify the
/// draw first when it is someone else's).
pub fn chunk_value(draw: &Draw, chunk: u32) -> f64 {
    let mut hash = Sha256::new();
    hash.update(CHECK_CONTEXT);
    hash.update(draw.key);
    hash.update(draw.output);
    hash.update(chunk.to_be_bytes());
    let digest = hash.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 53 bits: every value is an exact f64.
    (u64::from_be_bytes(top) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether chunk `chunk` is checked at `rate` (0 to 1).
pub fn is_checked(draw: &Draw, chunk: u32, rate: f64) -> bool {
    chunk_value(draw, chunk) < rate
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const NET: &str = "0123456789abcdef";

    #[test]
    fn a_draw_verifies_and_is_fixed_by_the_key_and_the_job() {
        let id = Identity::from_seed([5; 32]);
        let a = draw(&id, NET, &[1; 16]);
        verify(&a, NET, &[1; 16]).unwrap();
        assert_eq!(a.key, public_key(&id));
        // Another proof (fresh nonce), the same output: the requester
        // cannot draw again for the same job.
        let b = draw(&id, NET, &[1; 16]);
        assert_eq!(a.output, b.output);
        verify(&b, NET, &[1; 16]).unwrap();
        // Another job, another network, another key: another output.
        assert_ne!(draw(&id, NET, &[2; 16]).output, a.output);
        assert_ne!(draw(&id, "fedcba9876543210", &[1; 16]).output, a.output);
        assert_ne!(draw(&Identity::from_seed([6; 32]), NET, &[1; 16]).output, a.output);
    }

    #[test]
    fn a_draw_for_another_job_or_a_changed_output_is_refused() {
        let id = Identity::from_seed([5; 32]);
        let a = draw(&id, NET, &[1; 16]);
        assert!(verify(&a, NET, &[2; 16]).is_err());
        assert!(verify(&a, "fedcba9876543210", &[1; 16]).is_err());
        let mut forged = a.clone();
        forged.output = draw(&id, NET, &[3; 16]).output;
        assert!(verify(&forged, NET, &[1; 16]).is_err());
        let mut other_key = a.clone();
        other_key.key = public_key(&Identity::from_seed([6; 32]));
        assert!(verify(&other_key, NET, &[1; 16]).is_err());
        let mut garbage = a;
        garbage.proof = [0xff; 64];
        assert!(verify(&garbage, NET, &[1; 16]).is_err());
    }

    #[test]
    fn the_check_rate_is_the_share_of_chunks_checked() {
        let id = Identity::from_seed([7; 32]);
        let mut checked = 0;
        let mut total = 0;
        for job in 0..50u8 {
            let d = draw(&id, NET, &[job; 16]);
            for chunk in 0..40 {
                total += 1;
                checked += usize::from(is_checked(&d, chunk, 0.1));
                assert!(is_checked(&d, chunk, 1.0));
                assert!(!is_checked(&d, chunk, 0.0));
            }
        }
        // 2,000 draws at 10%: 200 expected, 3.5 standard deviations either side.
        assert!((150..=250).contains(&checked), "{checked} of {total} checked");
    }
}
