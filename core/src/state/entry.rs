//! Signed entries: one `(namespace, key) → JSON value | tombstone` write,
//! signed by its author, verifiable on its own wherever it travels.

use ed25519_zebra::{Signature, VerificationKeyBytes, batch};
use std::convert::Infallible;

use getrandom::rand_core::{TryCryptoRng, TryRng, utils};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Identity;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value accepted, as JSON text.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest encoded entry accepted from the network (checked before decoding).
pub const MAX_ENTRY_BYTES: usize = MAX_VALUE_BYTES + MAX_KEY_BYTES + 1024;
/// Keys under this prefix hold a namespace's access-control list:
/// `_acl/<node-id>` → `true` lets that node write.
pub const ACL_PREFIX: &str = "_acl/";

/// Keys under this prefix hold the owner's signed KEM public keys:
/// `_kem/<level>` → `{ level, key, signature }` (hex), for end-to-end
/// encryption to the owner while it is offline.
pub const KEM_PREFIX: &str = "_kem/";

/// Keys under this prefix hold the private networks this namespace's owner
/// runs: `_net/<id>`, its members, revocations and invite uses.
pub const NETWORK_PREFIX: &str = "_net/";

/// Keys under this prefix list the networks this namespace's owner is in:
/// `_nets/<id>`.
pub const NETWORKS_JOINED_PREFIX: &str = "_nets/";

/// Keys under this prefix hold the owner's credit records (receipts and
/// check outcomes): `_cr/<network>/...`.
pub const CREDITS_PREFIX: &str = "_cr/";

/// Whether a key is kept by InferMesh itself (access list, KEM keys,
/// networks, credits) rather than by the application: such keys are left
/// out of the data.
pub fn is_internal_key(key: &str) -> bool {
    key.starts_with(ACL_PREFIX)
        || key.starts_with(KEM_PREFIX)
        || key.starts_with(NETWORK_PREFIX)
        || key.starts_with(NETWORKS_JOINED_PREFIX)
        || key.starts_with(CREDITS_PREFIX)
}

/// Domain separation for entry signatures.
const SIGNING_CONTEXT: &[u8] = b"infermesh/state/entry/v1\0";

/// One signed write. A `value` of `None` is a tombstone (a delete).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The namespace: its owner's node ID.
    #[serde(rename = "n")]
    pub namespace: String,
    /// The key, 1–256 bytes of UTF-8.
    #[serde(rename = "k")]
    pub key: String,
    /// The value as JSON text, `None` for a delete.
    #[serde(rename = "v")]
    pub value: Option<String>,
    /// Hybrid-logical-clock timestamp (see [`super::Hlc`]).
    #[serde(rename = "t")]
    pub timestamp: u64,
    /// The writer, as PeerId bytes.
    #[serde(rename = "a", with = "serde_bytes")]
    pub author: Vec<u8>,
    /// Ed25519 signature over [`Entry::signing_bytes`].
    #[serde(rename = "s", with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an entry was refused. Each is counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryRejection {
    /// More bytes than [`MAX_ENTRY_BYTES`].
    Oversize,
    /// Did not decode, or a field is not what it must be.
    Malformed,
    /// The key is empty or longer than [`MAX_KEY_BYTES`].
    KeyTooLong,
    /// The value is longer than [`MAX_VALUE_BYTES`].
    ValueTooLarge,
    /// The value is not valid JSON.
    BadValue,
    /// The signature does not verify against the author's key.
    BadSignature,
    /// The author may not write this namespace.
    Unauthorized,
    /// The timestamp is further in the future than the allowed clock skew.
    FutureTimestamp,
    /// The namespace (or this node's replica) holds as much as it may.
    Full,
}

impl EntryRejection {
    /// Every reason, in declaration order (metrics index by discriminant).
    pub const ALL: [EntryRejection; 9] = [
        EntryRejection::Oversize,
        EntryRejection::Malformed,
        EntryRejection::KeyTooLong,
        EntryRejection::ValueTooLarge,
        EntryRejection::BadValue,
        EntryRejection::BadSignature,
        EntryRejection::Unauthorized,
        EntryRejection::FutureTimestamp,
        EntryRejection::Full,
    ];

    /// The label used in metrics and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryRejection::Oversize => "oversize",
            EntryRejection::Malformed => "malformed",
            EntryRejection::KeyTooLong => "key_too_long",
            EntryRejection::ValueTooLarge => "value_too_large",
            EntryRejection::BadValue => "bad_value",
            EntryRejection::BadSignature => "bad_signature",
            EntryRejection::Unauthorized => "unauthorized",
            EntryRejection::FutureTimestamp => "future_timestamp",
            EntryRejection::Full => "full",
        }
    }
}

impl std::fmt::Display for EntryRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused entry: the counted reason and a detail for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct EntryError {
    /// The counted reason.
    pub reason: EntryRejection,
    /// What exactly was wrong.
    pub detail: String,
}

fn reject(reason: EntryRejection, detail: impl Into<String>) -> EntryError {
    EntryError { reason, detail: detail.into() }
}

impl Entry {
    /// Signs a write of `value` (`None` deletes) at `timestamp`.
    pub fn sign(
        identity: &Identity,
        namespace: &str,
        key: &str,
        value: Option<&serde_json::Value>,
        timestamp: u64,
    ) -> Result<Entry, EntryError> {
        let mut entry = Entry {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value: value.map(|v| v.to_string()),
            timestamp,
            author: identity.peer_id().to_bytes(),
            signature: Vec::new(),
        };
        entry.check_shape()?;
        entry.signature = identity
            .keypair()
            .sign(&entry.signing_bytes())
            .map_err(|e| reject(EntryRejection::Malformed, format!("cannot sign: {e}")))?;
        Ok(entry)
    }

    /// The bytes the author signs: every field but the signature, each
    /// length-prefixed, after a domain-separation context.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let value_len = self.value.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(
            SIGNING_CONTEXT.len()
                + 32
                + self.namespace.len()
                + self.key.len()
                + value_len
                + self.author.len(),
        );
        out.extend_from_slice(SIGNING_CONTEXT);
        for part in [self.namespace.as_bytes(), self.key.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        match &self.value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&(self.author.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.author);
        out
    }

    /// The entry's ID: SHA-256 of its signed bytes and signature. Used to
    /// break timestamp ties and to name it during reconciliation.
    pub fn id(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.signing_bytes());
        hasher.update(&self.signature);
        hasher.finalize().into()
    }

    /// The author's node ID, if the bytes are one.
    pub fn author_id(&self) -> Result<PeerId, EntryError> {
        PeerId::from_bytes(&self.author)
            .map_err(|_| reject(EntryRejection::Malformed, "author is not a node ID"))
    }

    /// The value, parsed (`None` for a tombstone).
    pub fn json(&self) -> Result<Option<serde_json::Value>, EntryError> {
        self.value
            .as_deref()
            .map(|v| serde_json::from_str(v).map_err(|e| reject(EntryRejection::BadValue, e.to_string())))
            .transpose()
    }

    /// Whether this is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Encodes for the wire and for storage (CBOR).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.value.as_ref().map_or(0, String::len));
        ciborium::into_writer(self, &mut out).expect("writing CBOR to a Vec cannot fail");
        out
    }

    /// Decodes bytes from a peer or a file: the size is checked first.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(reject(
                EntryRejection::Oversize,
                format!("{} bytes, limit {MAX_ENTRY_BYTES}", bytes.len()),
            ));
        }
        ciborium::from_reader(bytes).map_err(|e| reject(EntryRejection::Malformed, e.to_string()))
    }

    /// Size limits and field shapes, without the signature.
    fn check_shape(&self) -> Result<(), EntryError> {
        self.check_shape_given(false)
    }

    /// [`Entry::check_shape`]; `namespace_checked` skips parsing a
    /// namespace the caller has just seen parse (a batch is usually all
    /// one namespace, and base58 decoding is not free).
    fn check_shape_given(&self, namespace_checked: bool) -> Result<(), EntryError> {
        if self.key.is_empty() || self.key.len() > MAX_KEY_BYTES {
            return Err(reject(
                EntryRejection::KeyTooLong,
                format!("key is {} bytes; it must be 1-{MAX_KEY_BYTES}", self.key.len()),
            ));
        }
        if let Some(v) = &self.value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(reject(
                EntryRejection::ValueTooLarge,
                format!("value is {} bytes of JSON, limit {MAX_VALUE_BYTES}", v.len()),
            ));
        }
        if !namespace_checked && self.namespace.parse::<PeerId>().is_err() {
            return Err(reject(EntryRejection::Malformed, "namespace is not a node ID"));
        }
        self.author_id()?;
        Ok(())
    }

    /// Checks everything an entry can prove by itself: shape, limits, JSON
    /// and signature. Authorisation and time are the replica's business.
    pub fn verify(&self) -> Result<(), EntryError> {
        let item = self.signature_item(false)?;
        item.verify_single().map_err(|_| self.bad_signature())
    }

    /// [`Entry::verify`] for many entries at once, one result per entry.
    /// Signatures are checked together with batch verification (about
    /// twice as fast for entries of one author); if the batch fails, each
    /// is checked alone so that only the bad ones are refused.
    pub fn verify_all<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Result<(), EntryError>> {
        let mut results = Vec::new();
        let mut items = Vec::new();
        let mut namespace_ok: Option<&str> = None;
        for (i, entry) in entries.into_iter().enumerate() {
            match entry.signature_item(namespace_ok == Some(entry.namespace.as_str())) {
                Ok(item) => {
                    namespace_ok = Some(&entry.namespace);
                    items.push((i, entry, item));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // The batch check draws 16 random bytes per signature: all of them
        // in one call to the OS (one JS call in the browser). Without them,
        // each signature is checked alone.
        if items.len() > 1
            && let Some(rng) = BatchRandomness::new(16 * items.len())
        {
            let mut verifier = batch::Verifier::new();
            for (_, _, item) in &items {
                verifier.queue(item.clone());
            }
            if verifier.verify(rng).is_ok() {
                return results;
            }
        }
        for (i, entry, item) in items {
            if item.verify_single().is_err() {
                results[i] = Err(entry.bad_signature());
            }
        }
        results
    }

    /// Every check but the signature itself, and the signature ready to be
    /// verified. Signatures are verified by the ZIP-215 rules
    /// (`ed25519-zebra`): single and batch verification accept exactly the
    /// same signatures, so every replica admits the same entries however
    /// they were batched.
    fn signature_item(&self, namespace_checked: bool) -> Result<batch::Item, EntryError> {
        self.check_shape_given(namespace_checked)?;
        // Validates the JSON without building it.
        serde_json::from_str::<serde::de::IgnoredAny>(self.value.as_deref().unwrap_or("null"))
            .map_err(|e| reject(EntryRejection::BadValue, e.to_string()))?;
        let key = author_key(&self.author_id()?)?;
        let signature = Signature::from_slice(&self.signature)
            .map_err(|_| reject(EntryRejection::BadSignature, "a signature is 64 bytes"))?;
        Ok(batch::Item::from((key, signature, &self.signing_bytes())))
    }

    fn bad_signature(&self) -> EntryError {
        let author = self.author_id().map_or_else(|_| "its author".to_owned(), |a| a.to_base58());
        reject(EntryRejection::BadSignature, format!("not signed by {author}"))
    }
}

/// The Ed25519 public key inside a node ID: the identity multihash of the
/// key's protobuf encoding (`08 01 12 20` then the 32 key bytes).
fn author_key(peer: &PeerId) -> Result<VerificationKeyBytes, EntryError> {
    const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
    let hash = peer.as_ref();
    match hash.digest().split_at_checked(4) {
        Some((prefix, key)) if hash.code() == 0 && prefix == ED25519_PROTOBUF_PREFIX => {
            <[u8; 32]>::try_from(key)
                .map(VerificationKeyBytes::from)
                .map_err(|_| reject(EntryRejection::Malformed, "author's Ed25519 key is not 32 bytes"))
        }
        _ => Err(reject(EntryRejection::Malformed, "author's node ID does not embed an Ed25519 key")),
    }
}

/// Randomness for one batch verification, read from the OS in one call
/// (sized for the batch: 16 bytes per signature).
struct BatchRandomness {
    bytes: Vec<u8>,
    at: usize,
}

impl BatchRandomness {
    fn new(len: usize) -> Option<Self> {
        let mut bytes = vec![0; len];
        getrandom::fill(&mut bytes).ok()?;
        Some(Self { bytes, at: 0 })
    }
}

impl TryRng for BatchRandomness {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        utils::next_word_via_fill(self)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        utils::next_word_via_fill(self)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        if self.at + dest.len() > self.bytes.len() {
            // More than the batch was sized for: stretch the secret bytes
            // already read (SHA-256 in counter mode) rather than fail.
            let key = Sha256::digest(&self.bytes);
            let blocks = dest.len().div_ceil(32).max(2) as u64;
            self.bytes = (0..blocks)
                .flat_map(|i| Sha256::new().chain_update(key).chain_update(i.to_be_bytes()).finalize())
                .collect();
            self.at = 0;
        }
        dest.copy_from_slice(&self.bytes[self.at..self.at + dest.len()]);
        self.at += dest.len();
        Ok(())
    }
}

impl TryCryptoRng for BatchRandomness {}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn owner() -> Identity {
        Identity::from_seed([7; 32])
    }

    #[test]
    fn signed_entries_verify_and_round_trip_with_their_json_type() {
        let id = owner();
        let ns = id.peer_id().to_base58();
        for value in
            [json!("John"), json!(25), json!(true), json!(null), json!({"theme": "dark"}), json!([1, "a"])]
        {
            let e = Entry::sign(&id, &ns, "k", Some(&value), 42 << 16).unwrap();
            e.verify().unwrap();
            let back = Entry::decode(&e.encode()).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.json().unwrap(), Some(value));
        }
        let tomb = Entry::sign(&id, &ns, "k", None, 43 << 16).unwrap();
        tomb.verify().unwrap();
        assert!(tomb.is_tombstone());
    }

    #[test]
    fn each_bad_entry_is_refused_with_its_reason() {
        let id = owner();
        let ns = id.peer_id().to_base58();
        let good = Entry::sign(&id, &ns, "k", Some(&json!(1)), 1 << 16).unwrap();

        let mut forged = good.clone();
        forged.value = Some("2".into());
        assert_eq!(forged.verify().unwrap_err().reason, EntryRejection::BadSignature);

        let mut stolen = good.clone();
        stolen.author = Identity::from_seed([8; 32]).peer_id().to_bytes();
        assert_eq!(stolen.verify().unwrap_err().reason, EntryRejection::BadSignature);

        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            Entry::sign(&id, &ns, &long_key, Some(&json!(1)), 1).unwrap_err().reason,
            EntryRejection::KeyTooLong
        );
        let big = json!("x".repeat(MAX_VALUE_BYTES));
        assert_eq!(
            Entry::sign(&id, &ns, "k", Some(&big), 1).unwrap_err().reason,
            EntryRejection::ValueTooLarge
        );

        let mut not_json = good.clone();
        not_json.value = Some("{nope".into());
        assert_eq!(not_json.verify().unwrap_err().reason, EntryRejection::BadValue);

        assert_eq!(Entry::decode(&[0xff, 0x00, 0x13]).unwrap_err().reason, EntryRejection::Malformed);
        assert_eq!(
            Entry::decode(&vec![0; MAX_ENTRY_BYTES + 1]).unwrap_err().reason,
            EntryRejection::Oversize
        );

        let mut bad_ns = good;
        bad_ns.namespace = "not-a-node".into();
        assert_eq!(bad_ns.verify().unwrap_err().reason, EntryRejection::Malformed);
    }

    #[test]
    fn batch_verification_refuses_exactly_the_bad_entries() {
        let id = owner();
        let ns = id.peer_id().to_base58();
        let mut entries: Vec<Entry> = (0..20)
            .map(|i| Entry::sign(&id, &ns, &format!("k{i}"), Some(&json!(i)), 1 << 16).unwrap())
            .collect();
        assert!(Entry::verify_all(&entries).iter().all(Result::is_ok));
        entries[3].value = Some("99".into());
        entries[11].signature[0] ^= 1;
        entries[15].signature.truncate(10);
        let results = Entry::verify_all(&entries);
        for (i, result) in results.iter().enumerate() {
            match i {
                3 | 11 | 15 => assert_eq!(result.as_ref().unwrap_err().reason, EntryRejection::BadSignature),
                _ => assert!(result.is_ok(), "entry {i}: {result:?}"),
            }
            assert_eq!(result.is_ok(), entries[i].verify().is_ok(), "single and batch agree on {i}");
        }
    }

    #[test]
    fn ids_differ_per_entry_and_are_stable() {
        let id = owner();
        let ns = id.peer_id().to_base58();
        let a = Entry::sign(&id, &ns, "k", Some(&json!(1)), 1).unwrap();
        let b = Entry::sign(&id, &ns, "k", Some(&json!(2)), 1).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), Entry::decode(&a.encode()).unwrap().id());
    }

    #[test]
    fn batch_randomness_is_read_once_and_stretches_past_its_size() {
        use getrandom::rand_core::Rng as _;
        let mut rng = BatchRandomness::new(32).unwrap();
        let mut draws = Vec::new();
        for _ in 0..6 {
            let mut block = [0u8; 16];
            rng.fill_bytes(&mut block);
            draws.push(block);
        }
        assert!(draws.iter().all(|d| d != &[0; 16]));
        for (i, a) in draws.iter().enumerate() {
            assert!(draws[i + 1..].iter().all(|b| b != a), "draws repeat");
        }
    }
}
