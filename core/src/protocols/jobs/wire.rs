//! The wire side of jobs: `/infermesh/jobs/2.0.0` (request-response,
//! CBOR). A requester sends a worker one chunk of a job; the worker
//! answers with one embedding per input (packed little-endian `f32`s) and
//! its signed claim for the work (see [`crate::credits`]), or says it is
//! busy, or refuses with a reason. Once the job is settled the requester
//! sends the worker its receipts, countersigned. Both sides check that
//! the other is a device of a current member of the job's network.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::compute::MAX_INPUT_BYTES;

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/jobs/2.0.0");
/// Most inputs in one chunk.
pub(crate) const MAX_CHUNK_INPUTS: usize = 64;
/// Most bytes of input in one chunk.
pub(crate) const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Request and response size limits for the codec (checked before decoding).
pub(crate) const MAX_REQUEST_BYTES: u64 = (MAX_CHUNK_BYTES + MAX_INPUT_BYTES + 64 * 1024) as u64;
pub(crate) const MAX_RESPONSE_BYTES: u64 = (MAX_CHUNK_INPUTS * 4096 * 4 + 4096) as u64;
/// Most floats per embedding a worker may answer with.
pub(crate) const MAX_DIMENSIONS: usize = 4096;
/// Most receipts in one request (each at most 8 KiB: see
/// [`crate::credits::records::MAX_RECORD_BYTES`]).
pub(crate) const MAX_RECEIPTS: usize = 64;

/// One chunk of a job, for a worker to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// The job's ID (16 random bytes).
    pub job: ByteBuf,
    /// The chunk's number within the job.
    pub chunk: u32,
    /// The network it runs in.
    pub network: String,
    /// The person the requester is a device of.
    pub person: String,
    /// What to do: `embed`.
    pub kind: String,
    /// The model.
    pub model: String,
    /// The inputs, in order.
    #[serde(deserialize_with = "crate::protocols::bounded::bounded::<_, _, MAX_CHUNK_INPUTS>")]
    pub inputs: Vec<String>,
    /// Not worth starting after this (ms since the epoch).
    pub deadline_ms: u64,
    /// The requester's VRF key for this job: the worker signs it into its
    /// claim, which binds the requester to the draw of checked chunks.
    pub vrf_key: ByteBuf,
}

/// A request of the jobs protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum JobRequest {
    /// Run this chunk.
    Run(Run),
    /// Receipts for chunks the worker ran (receipt tokens).
    Receipts(
        #[serde(deserialize_with = "crate::protocols::bounded::bounded::<_, _, MAX_RECEIPTS>")] Vec<String>,
    ),
}

/// A response of the jobs protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum JobResponse {
    /// Done: `dims` floats per input, packed; what the worker claims for
    /// it (`credits` at `at_ms`), and its signature over the claim.
    Done { vectors: ByteBuf, dims: u32, tokens: u64, micros: u64, credits: u64, at_ms: u64, claim: ByteBuf },
    /// Too much waiting here already; try another worker.
    Busy { queue: u32 },
    /// Will not run it, and why.
    Refused(String),
    /// Receipts taken: how many were this worker's and valid.
    Stored(u32),
}

/// Packs embeddings as little-endian `f32`s.
pub(crate) fn pack(vectors: &[Vec<f32>]) -> (ByteBuf, u32) {
    let dims = vectors.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(vectors.len() * dims * 4);
    for v in vectors {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    (ByteBuf::from(out), dims as u32)
}

/// Unpacks and checks a worker's answer: `count` embeddings of `dims`
/// finite floats, each of unit length (the model's pooling normalises).
pub(crate) fn unpack(
    bytes: &[u8],
    dims: u32,
    count: usize,
    expected_dims: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let dims = dims as usize;
    if dims != expected_dims || dims == 0 || dims > MAX_DIMENSIONS {
        return Err(format!("{dims} floats per embedding, expected {expected_dims}"));
    }
    if bytes.len() != count * dims * 4 {
        return Err(format!("{} bytes, expected {} embeddings of {dims} floats", bytes.len(), count));
    }
    let mut out = Vec::with_capacity(count);
    for (i, raw) in bytes.chunks_exact(dims * 4).enumerate() {
        let v: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(format!("embedding {i} has a value that is not a finite number"));
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > 1e-3 {
            return Err(format!("embedding {i} has length {norm}, not 1"));
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn unit(dims: usize, hot: usize) -> Vec<f32> {
        let mut v = vec![0.0; dims];
        v[hot] = 1.0;
        v
    }

    #[test]
    fn embeddings_round_trip_and_bad_ones_are_refused() {
        let vectors = vec![unit(4, 0), unit(4, 3)];
        let (bytes, dims) = pack(&vectors);
        assert_eq!(unpack(&bytes, dims, 2, 4).unwrap(), vectors);
        assert!(unpack(&bytes, dims, 3, 4).unwrap_err().contains("expected 3"));
        assert!(unpack(&bytes, dims, 2, 8).is_err());
        assert!(unpack(&bytes[..bytes.len() - 1], dims, 2, 4).is_err());
        let (nan, _) = pack(&[vec![f32::NAN, 0.0, 0.0, 0.0]]);
        assert!(unpack(&nan, 4, 1, 4).unwrap_err().contains("finite"));
        let (long, _) = pack(&[vec![2.0, 0.0, 0.0, 0.0]]);
        assert!(unpack(&long, 4, 1, 4).unwrap_err().contains("length"));
        assert!(unpack(&[], 0, 0, 0).is_err());
    }
}
