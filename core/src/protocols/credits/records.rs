//! The signed records of credits: what a worker claims it did for a chunk
//! ([`Work`], signed by the worker), the receipt that makes it count
//! ([`Receipt`], countersigned by the requester), the outcome of a spot
//! check ([`CheckOutcome`], signed by the requester, with the workers'
//! signed claims inside) and the network's terms ([`Terms`], written by
//! the owner).
//!
//! Keys in the replicated state:
//! - owner's namespace: `_net/<id>/terms` → [`Terms`];
//! - requester's and worker's namespaces:
//!   `_cr/<id>/r/<job>/<chunk>/<worker device>` → receipt token;
//! - requester's namespace: `_cr/<id>/c/<job>/<chunk>` → check token.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use super::vrf::{self, Draw};
use crate::{
    Identity,
    protocols::networks::records::{is_network_id, public_key},
};

/// The text every receipt starts with.
pub const RECEIPT_PREFIX: &str = "imrcpt1.";
/// The text every check outcome starts with.
pub const CHECK_PREFIX: &str = "imchk1.";
/// Longest receipt or check token accepted (checked before decoding).
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// Most answers in one check: the first worker, the checker, a referee.
pub const MAX_ANSWERS: usize = 3;
/// Most tokens a chunk may claim per input (the model reads 256).
pub const MAX_TOKENS_PER_INPUT: u64 = 256;

const CLAIM_CONTEXT: &[u8] = b"infermesh/credits/claim/v1\0";
const RECEIPT_CONTEXT: &[u8] = b"infermesh/credits/receipt/v1\0";
const CHECK_CONTEXT: &[u8] = b"infermesh/credits/check/v1\0";

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// Not a record of this kind, or damaged.
    #[error("not a valid {0}")]
    Malformed(&'static str),
    /// A signature does not verify.
    #[error("the {0}'s signature does not verify")]
    BadSignature(&'static str),
    /// For another network.
    #[error("the {0} is for another network")]
    OtherNetwork(&'static str),
    /// A device signed that is not one of the person's.
    #[error("{device} is not a device of {person} in this network")]
    NotMember {
        /// The person named.
        person: String,
        /// The device that signed.
        device: String,
    },
    /// The VRF draw does not hold.
    #[error("the check's draw does not hold: {0}")]
    BadDraw(String),
}

/// The owner's terms for a network's credits: `_net/<id>/terms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// Credits each person starts with.
    pub grant: u64,
    /// Credits per input token processed.
    pub price_per_token: u64,
    /// The share of chunks checked again by another worker (0 to 1).
    pub check_rate: f64,
}

impl Default for Terms {
    fn default() -> Self {
        Terms { grant: 1_000_000, price_per_token: 1, check_rate: 0.1 }
    }
}

impl Terms {
    /// Refuses terms out of range.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.check_rate) {
            return Err(format!("check rate {} is not between 0 and 1", self.check_rate));
        }
        if self.price_per_token > 1_000_000 {
            return Err(format!("price {} per token is above 1,000,000", self.price_per_token));
        }
        Ok(())
    }
}

/// The key of a network's terms.
pub fn terms_key(network: &str) -> String {
    format!("_net/{network}/terms")
}

/// The key of a receipt.
pub fn receipt_key(work: &Work) -> String {
    format!("_cr/{}/r/{}/{}/{}", work.network, hex::encode(&work.job), work.chunk, work.worker_device)
}

/// The key of a check outcome.
pub fn check_key(check: &CheckOutcome) -> String {
    format!("_cr/{}/c/{}/{}", check.network, hex::encode(&check.job), check.chunk)
}

/// The prefix of a network's credit records.
pub fn credits_prefix(network: &str) -> String {
    format!("_cr/{network}/")
}

/// The SHA-256 of a chunk's result as sent (packed vectors).
pub fn result_hash(packed: &[u8]) -> [u8; 32] {
    Sha256::digest(packed).into()
}

/// What a worker did for one chunk of a job, as it claims it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The network.
    pub network: String,
    /// The job's ID (16 bytes).
    pub job: ByteBuf,
    /// The chunk's number.
    pub chunk: u32,
    /// The person who asked, and the device it asked from.
    pub requester: String,
    /// The requester's device.
    pub requester_device: String,
    /// The requester's VRF key for this job (see [`vrf`]).
    pub vrf_key: ByteBuf,
    /// The person who worked, and the device that did.
    pub worker: String,
    /// The worker's device.
    pub worker_device: String,
    /// Inputs in the chunk.
    pub inputs: u32,
    /// Tokens the model read.
    pub tokens: u64,
    /// What the chunk costs the requester and earns the worker: `tokens`
    /// at the network's price when the job ran.
    pub credits: u64,
    /// The SHA-256 of the answer (packed vectors).
    pub result: ByteBuf,
    /// When the worker answered (ms since the epoch).
    pub at_ms: u64,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("writing CBOR into a Vec cannot fail");
    bytes
}

fn peer(text: &str, what: &'static str) -> Result<PeerId, CreditError> {
    text.parse().map_err(|_| CreditError::Malformed(what))
}

fn verify_by(device: &str, message: &[u8], signature: &[u8], what: &'static str) -> Result<(), CreditError> {
    let key = public_key(&peer(device, what)?).ok_or(CreditError::Malformed(what))?;
    if key.verify(message, signature) { Ok(()) } else { Err(CreditError::BadSignature(what)) }
}

fn sign(identity: &Identity, message: &[u8]) -> Result<Vec<u8>, String> {
    identity.keypair().sign(message).map_err(|e| format!("cannot sign: {e}"))
}

impl Work {
    fn message(&self, context: &[u8]) -> Vec<u8> {
        [context, &cbor(self)].concat()
    }

    /// Checks the shape of every field.
    pub fn check_shape(&self, what: &'static str) -> Result<(), CreditError> {
        for device in [&self.requester, &self.requester_device, &self.worker, &self.worker_device] {
            peer(device, what)?;
        }
        if !is_network_id(&self.network)
            || self.job.len() != 16
            || self.vrf_key.len() != 32
            || self.result.len() != 32
            || self.inputs == 0
            || self.tokens > u64::from(self.inputs) * MAX_TOKENS_PER_INPUT
        {
            return Err(CreditError::Malformed(what));
        }
        Ok(())
    }

    /// The worker's signature over this claim.
    pub fn claim(&self, worker: &Identity) -> Result<Vec<u8>, String> {
        sign(worker, &self.message(CLAIM_CONTEXT))
    }

    /// Checks the worker device's signature over this claim.
    pub fn verify_claim(&self, signature: &[u8]) -> Result<(), CreditError> {
        const WHAT: &str = "claim";
        self.check_shape(WHAT)?;
        verify_by(&self.worker_device, &self.message(CLAIM_CONTEXT), signature, WHAT)
    }
}

/// A chunk's receipt: the worker's claim, countersigned by the requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What was done.
    pub work: Work,
    /// The worker's signature over the claim.
    pub worker_sig: ByteBuf,
    /// The requester's signature over the claim and the worker's signature.
    pub requester_sig: ByteBuf,
}

fn encode_token<T: Serialize>(prefix: &str, value: &T) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(cbor(value)))
}

fn decode_token<T: for<'de> Deserialize<'de>>(
    prefix: &str,
    text: &str,
    what: &'static str,
) -> Result<T, CreditError> {
    if text.len() > MAX_RECORD_BYTES {
        return Err(CreditError::Malformed(what));
    }
    let body = text.strip_prefix(prefix).ok_or(CreditError::Malformed(what))?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| CreditError::Malformed(what))?;
    ciborium::from_reader(bytes.as_slice()).map_err(|_| CreditError::Malformed(what))
}

impl Receipt {
    fn message(work: &Work, worker_sig: &[u8]) -> Vec<u8> {
        let mut m = work.message(RECEIPT_CONTEXT);
        m.extend_from_slice(worker_sig);
        m
    }

    /// The requester countersigns a claim it checked.
    pub fn countersign(work: Work, worker_sig: Vec<u8>, requester: &Identity) -> Result<Receipt, String> {
        let requester_sig = sign(requester, &Self::message(&work, &worker_sig))?;
        Ok(Receipt {
            work,
            worker_sig: ByteBuf::from(worker_sig),
            requester_sig: ByteBuf::from(requester_sig),
        })
    }

    /// Checks both signatures and the shape (not who the devices belong
    /// to: see [`super::ledger::Ledger`]).
    pub fn verify(&self) -> Result<(), CreditError> {
        const WHAT: &str = "receipt";
        self.work.verify_claim(&self.worker_sig).map_err(|e| match e {
            CreditError::BadSignature(_) => CreditError::BadSignature(WHAT),
            CreditError::Malformed(_) => CreditError::Malformed(WHAT),
            other => other,
        })?;
        verify_by(
            &self.work.requester_device,
            &Self::message(&self.work, &self.worker_sig),
            &self.requester_sig,
            WHAT,
        )
    }

    /// As text, for the state.
    pub fn to_token(&self) -> String {
        encode_token(RECEIPT_PREFIX, self)
    }

    /// Reads a receipt and checks its signatures.
    pub fn from_token(text: &str) -> Result<Receipt, CreditError> {
        let receipt: Receipt = decode_token(RECEIPT_PREFIX, text, "receipt")?;
        receipt.verify()?;
        Ok(receipt)
    }
}

/// One worker's answer to a checked chunk: its signed claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The claim.
    pub work: Work,
    /// The worker's signature.
    pub worker_sig: ByteBuf,
}

/// The outcome of a spot check, signed by the job's requester.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// The network.
    pub network: String,
    /// The job.
    pub job: ByteBuf,
    /// The chunk.
    pub chunk: u32,
    /// The requester's device.
    pub requester_device: String,
    /// The job's VRF output and proof (the key is in every claim).
    pub vrf_output: ByteBuf,
    /// The proof.
    pub vrf_proof: ByteBuf,
    /// The rate the chunk was drawn at (at least the network's).
    pub rate: f64,
    /// The answers compared: two that agreed, or two that did not and
    /// the referee's.
    pub answers: Vec<Answer>,
    /// The device whose answer lost, if one did.
    pub rejected: Option<String>,
    /// The requester device's signature.
    pub signature: ByteBuf,
}

impl CheckOutcome {
    fn message(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = ByteBuf::new();
        [CHECK_CONTEXT, &cbor(&unsigned)].concat()
    }

    /// Signs it with the requester's device identity.
    pub fn sign(mut self, requester: &Identity) -> Result<CheckOutcome, String> {
        self.signature = ByteBuf::new();
        self.signature = ByteBuf::from(sign(requester, &self.message())?);
        Ok(self)
    }

    /// The job's draw, as the outcome carries it.
    pub fn draw(&self) -> Option<Draw> {
        let key = self.answers.first()?.work.vrf_key.as_slice().try_into().ok()?;
        Some(Draw {
            key,
            output: self.vrf_output.as_slice().try_into().ok()?,
            proof: self.vrf_proof.as_slice().try_into().ok()?,
        })
    }

    /// Checks everything that can be checked without the vectors: the
    /// requester's signature, every worker's claim, that the claims are
    /// for this chunk by distinct devices under one VRF key, that the
    /// draw is the VRF of the job under that key and selects this chunk
    /// at `rate`, which is at least `min_rate`.
    pub fn verify(&self, min_rate: f64) -> Result<(), CreditError> {
        const WHAT: &str = "check outcome";
        if !(2..=MAX_ANSWERS).contains(&self.answers.len())
            || self.rejected.is_some() != (self.answers.len() == 3)
            || !(0.0..=1.0).contains(&self.rate)
            || !is_network_id(&self.network)
        {
            return Err(CreditError::Malformed(WHAT));
        }
        verify_by(&self.requester_device, &self.message(), &self.signature, WHAT)?;
        let first = &self.answers[0].work;
        for (i, answer) in self.answers.iter().enumerate() {
            let w = &answer.work;
            w.verify_claim(&answer.worker_sig)?;
            if w.network != self.network
                || w.job != self.job
                || w.chunk != self.chunk
                || w.requester_device != self.requester_device
                || w.requester != first.requester
                || w.vrf_key != first.vrf_key
                || w.inputs != first.inputs
                || self.answers[..i].iter().any(|a| a.work.worker_device == w.worker_device)
            {
                return Err(CreditError::Malformed(WHAT));
            }
        }
        if let Some(rejected) = &self.rejected
            && !self.answers.iter().any(|a| &a.work.worker_device == rejected)
        {
            return Err(CreditError::Malformed(WHAT));
        }
        let draw = self.draw().ok_or(CreditError::Malformed(WHAT))?;
        vrf::verify(&draw, &self.network, &self.job).map_err(CreditError::BadDraw)?;
        if self.rate < min_rate {
            return Err(CreditError::BadDraw(format!("rate {} below the network's {min_rate}", self.rate)));
        }
        if !vrf::is_checked(&draw, self.chunk, self.rate) {
            return Err(CreditError::BadDraw(format!(
                "chunk {} is not drawn at rate {}",
                self.chunk, self.rate
            )));
        }
        Ok(())
    }

    /// As text, for the state.
    pub fn to_token(&self) -> String {
        encode_token(CHECK_PREFIX, self)
    }

    /// Reads an outcome and checks it (see [`CheckOutcome::verify`]).
    pub fn from_token(text: &str, min_rate: f64) -> Result<CheckOutcome, CreditError> {
        let check: CheckOutcome = decode_token(CHECK_PREFIX, text, "check outcome")?;
        check.verify(min_rate)?;
        Ok(check)
    }
}
