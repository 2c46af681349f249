//! What a private network is made of, as signed data: the invite token
//! the owner hands out, the certificate by which a person vouches for a
//! device, and the records kept in the owner's namespace of the
//! replicated state (signed entries, so members verify them wherever they
//! got them).
//!
//! Keys in the owner's namespace (all internal, never shown as data):
//! - `_net/<id>` → [`NetworkRecord`]
//! - `_net/<id>/m/<person>` → [`MemberRecord`] (deleted when revoked)
//! - `_net/<id>/r/<person>` → [`Revoked`]
//! - `_net/<id>/i/<nonce>` → [`InviteUse`] (uses taken)
//!
//! and in each member's own namespace `_nets/<id>` → [`Joined`], so every
//! device holding the member's key knows the networks it is in.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use libp2p::{PeerId, identity::PublicKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::Identity;

/// The text every invite token starts with.
pub const INVITE_PREFIX: &str = "imnet1.";
/// The text every device certificate starts with.
pub const DEVICE_PREFIX: &str = "imdev1.";
/// Longest network name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most devices of one person.
pub const MAX_DEVICES: usize = 16;
/// Most addresses carried in an invite.
const MAX_INVITE_ADDRS: usize = 8;
/// Longest token accepted (checked before decoding).
pub const MAX_TOKEN_BYTES: usize = 4096;

const INVITE_CONTEXT: &[u8] = b"infermesh/network/invite/v1\0";
const DEVICE_CONTEXT: &[u8] = b"infermesh/network/device/v1\0";

/// Why a token, certificate or record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a token of this kind, or damaged.
    #[error("not a valid {0}")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("the {0}'s signature does not verify")]
    BadSignature(&'static str),
    /// Past its expiry.
    #[error("the {0} has expired")]
    Expired(&'static str),
}

/// A network's ID: 8 random bytes in hex.
pub fn new_network_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no secure random source: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Whether `id` has the shape of a network ID.
pub fn is_network_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The key of a network's record.
pub(crate) fn network_key(id: &str) -> String {
    format!("_net/{id}")
}

/// The key of a member's record.
pub(crate) fn member_key(id: &str, person: &str) -> String {
    format!("_net/{id}/m/{person}")
}

/// The prefix of a network's member records.
pub(crate) fn members_prefix(id: &str) -> String {
    format!("_net/{id}/m/")
}

/// The key of a revocation.
pub(crate) fn revoked_key(id: &str, person: &str) -> String {
    format!("_net/{id}/r/{person}")
}

/// The key counting the uses of an invite.
pub(crate) fn invite_key(id: &str, nonce: &str) -> String {
    format!("_net/{id}/i/{nonce}")
}

/// The key, in a member's own namespace, of a network it is in.
pub(crate) fn joined_key(id: &str) -> String {
    format!("_nets/{id}")
}

/// The prefix of [`joined_key`]s.
pub(crate) const JOINED_PREFIX: &str = "_nets/";

/// `_net/<id>`: the network, written by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The name people gave it.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
}

/// `_net/<id>/m/<person>`: a member, written by the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The person's key (a node ID).
    pub person: String,
    /// The node IDs of the person's devices: the person's own node ID,
    /// and those it certified.
    pub devices: Vec<String>,
    /// When the person joined (ms since the epoch).
    pub joined_ms: u64,
    /// When the membership ends, if it does.
    pub expires_ms: Option<u64>,
}

impl MemberRecord {
    /// Whether the membership holds at `now_ms`.
    pub fn current(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|end| now_ms < end)
    }
}

/// `_net/<id>/r/<person>`: a revocation, written by the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// When (ms since the epoch); invites issued before it do not let the
    /// person back in.
    pub at_ms: u64,
}

/// `_net/<id>/i/<nonce>`: how often an invite was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteUse {
    /// Uses taken.
    pub used: u32,
}

/// `_nets/<id>` in a member's own namespace: a network it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The owner's node ID.
    pub owner: String,
    /// The person this device belongs to there.
    pub person: String,
    /// The network's name when joined.
    pub name: String,
    /// When (ms since the epoch).
    pub joined_ms: u64,
}

// ---- signatures -------------------------------------------------------------

/// The public key inside an Ed25519 node ID.
pub(crate) fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    (multihash.code() == 0).then(|| PublicKey::try_decode_protobuf(multihash.digest()).ok())?
}

fn signed(context: &[u8], body: &[u8]) -> Vec<u8> {
    [context, body].concat()
}

fn encode_token<T: Serialize>(prefix: &str, value: &T) -> String {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("writing CBOR into a Vec cannot fail");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn decode_token<T: for<'de> Deserialize<'de>>(
    prefix: &str,
    text: &str,
    what: &'static str,
) -> Result<T, RecordError> {
    let text = text.trim();
    if text.len() > MAX_TOKEN_BYTES {
        return Err(RecordError::Malformed(what));
    }
    let body = text.strip_prefix(prefix).ok_or(RecordError::Malformed(what))?;
    let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| RecordError::Malformed(what))?;
    ciborium::from_reader(bytes.as_slice()).map_err(|_| RecordError::Malformed(what))
}

// ---- invites ----------------------------------------------------------------

/// What an invite says. Signed by the owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The network.
    pub network: String,
    /// Its name.
    pub name: String,
    /// The owner's node ID.
    pub owner: String,
    /// Where the owner may be reached (multiaddrs).
    pub addrs: Vec<String>,
    /// Tells this invite apart (hex): its uses are counted under it.
    pub nonce: String,
    /// How many people may join with it.
    pub uses: u32,
    /// When it was issued (ms since the epoch).
    pub issued_ms: u64,
    /// Until when it can be used.
    pub expires_ms: u64,
    /// How long a membership it grants lasts (`None`: until revoked).
    pub member_for_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct SignedInvite {
    invite: ByteBuf,
    signature: ByteBuf,
}

impl Invite {
    /// The token, signed by the owner's `identity`.
    pub fn sign(&self, identity: &Identity) -> Result<String, String> {
        let mut body = Vec::new();
        ciborium::into_writer(self, &mut body).expect("writing CBOR into a Vec cannot fail");
        let signature = identity
            .keypair()
            .sign(&signed(INVITE_CONTEXT, &body))
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(encode_token(
            INVITE_PREFIX,
            &SignedInvite { invite: ByteBuf::from(body), signature: ByteBuf::from(signature) },
        ))
    }

    /// Reads a token and checks its owner's signature and its shape (not
    /// its expiry: see [`Invite::check_time`]).
    pub fn verify(token: &str) -> Result<Invite, RecordError> {
        const WHAT: &str = "invite token";
        let outer: SignedInvite = decode_token(INVITE_PREFIX, token, WHAT)?;
        let invite: Invite =
            ciborium::from_reader(outer.invite.as_slice()).map_err(|_| RecordError::Malformed(WHAT))?;
        let owner: PeerId = invite.owner.parse().map_err(|_| RecordError::Malformed(WHAT))?;
        if !is_network_id(&invite.network)
            || invite.name.len() > MAX_NAME_BYTES
            || invite.addrs.len() > MAX_INVITE_ADDRS
            || invite.nonce.len() != 32
        {
            return Err(RecordError::Malformed(WHAT));
        }
        let key = public_key(&owner).ok_or(RecordError::Malformed(WHAT))?;
        if !key.verify(&signed(INVITE_CONTEXT, &outer.invite), &outer.signature) {
            return Err(RecordError::BadSignature(WHAT));
        }
        Ok(invite)
    }

    /// Refuses an expired invite.
    pub fn check_time(&self, now_ms: u64) -> Result<(), RecordError> {
        if now_ms >= self.expires_ms {
            return Err(RecordError::Expired("invite"));
        }
        Ok(())
    }
}

// ---- device certificates ----------------------------------------------------

/// A person vouching that a node is one of its devices, for one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCert {
    /// The person's node ID.
    pub person: String,
    /// The device's node ID.
    pub device: String,
    /// The network.
    pub network: String,
    /// Until when it holds.
    pub expires_ms: u64,
    /// The person's signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl DeviceCert {
    fn body(&self) -> Vec<u8> {
        let mut body = signed(DEVICE_CONTEXT, &[]);
        for field in [&self.person, &self.device, &self.network] {
            body.extend_from_slice(&(field.len() as u32).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        body.extend_from_slice(&self.expires_ms.to_be_bytes());
        body
    }

    /// `person` certifies `device` for `network` until `expires_ms`.
    pub fn issue(person: &Identity, device: &PeerId, network: &str, expires_ms: u64) -> Result<Self, String> {
        let mut cert = DeviceCert {
            person: person.peer_id().to_base58(),
            device: device.to_base58(),
            network: network.to_owned(),
            expires_ms,
            signature: Vec::new(),
        };
        cert.signature = person.keypair().sign(&cert.body()).map_err(|e| format!("cannot sign: {e}"))?;
        Ok(cert)
    }

    /// The certificate as text to hand to the device.
    pub fn to_token(&self) -> String {
        encode_token(DEVICE_PREFIX, self)
    }

    /// Reads a certificate and checks the person's signature.
    pub fn from_token(token: &str) -> Result<Self, RecordError> {
        let cert: DeviceCert = decode_token(DEVICE_PREFIX, token, "device certificate")?;
        cert.verify()?;
        Ok(cert)
    }

    /// Checks the person's signature and the IDs' shape.
    pub fn verify(&self) -> Result<(), RecordError> {
        const WHAT: &str = "device certificate";
        let person: PeerId = self.person.parse().map_err(|_| RecordError::Malformed(WHAT))?;
        self.device.parse::<PeerId>().map_err(|_| RecordError::Malformed(WHAT))?;
        if !is_network_id(&self.network) {
            return Err(RecordError::Malformed(WHAT));
        }
        let key = public_key(&person).ok_or(RecordError::Malformed(WHAT))?;
        if !key.verify(&self.body(), &self.signature) {
            return Err(RecordError::BadSignature(WHAT));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn invite(owner: &Identity) -> Invite {
        Invite {
            network: "0123456789abcdef".into(),
            name: "lab".into(),
            owner: owner.peer_id().to_base58(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            nonce: "ab".repeat(16),
            uses: 2,
            issued_ms: 1_000,
            expires_ms: 5_000,
            member_for_ms: None,
        }
    }

    #[test]
    fn invite_round_trips_and_checks_its_owner() {
        let owner = Identity::from_seed([1; 32]);
        let token = invite(&owner).sign(&owner).unwrap();
        assert!(token.starts_with(INVITE_PREFIX));
        let read = Invite::verify(&format!("  {token}\n")).unwrap();
        assert_eq!(read, invite(&owner));
        assert!(read.check_time(4_999).is_ok());
        assert_eq!(read.check_time(5_000), Err(RecordError::Expired("invite")));

        // Signed by someone else than the owner it names.
        let forged = invite(&owner).sign(&Identity::from_seed([2; 32])).unwrap();
        assert_eq!(Invite::verify(&forged), Err(RecordError::BadSignature("invite token")));
        // Damaged anywhere, or not a token at all.
        let mut bytes = token.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        assert!(Invite::verify(&String::from_utf8(bytes).unwrap()).is_err());
        assert!(matches!(Invite::verify("imnet1.!!!"), Err(RecordError::Malformed(_))));
        assert!(matches!(Invite::verify("hello"), Err(RecordError::Malformed(_))));
        assert!(matches!(Invite::verify(&"imnet1.A".repeat(1000)), Err(RecordError::Malformed(_))));
        // A bad network ID, even well signed.
        let mut bad = invite(&owner);
        bad.network = "../x".into();
        assert!(matches!(Invite::verify(&bad.sign(&owner).unwrap()), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn device_certificate_checks_the_person() {
        let person = Identity::from_seed([3; 32]);
        let device = Identity::from_seed([4; 32]).peer_id();
        let cert = DeviceCert::issue(&person, &device, "0123456789abcdef", 9).unwrap();
        let read = DeviceCert::from_token(&cert.to_token()).unwrap();
        assert_eq!(read, cert);
        let mut other = cert.clone();
        other.device = Identity::from_seed([5; 32]).peer_id().to_base58();
        assert_eq!(other.verify(), Err(RecordError::BadSignature("device certificate")));
        let mut later = cert.clone();
        later.expires_ms += 1;
        assert!(later.verify().is_err());
        assert!(DeviceCert::from_token("imdev1.AAAA").is_err());
    }

    #[test]
    fn network_ids() {
        let id = new_network_id().unwrap();
        assert!(is_network_id(&id));
        assert!(!is_network_id("0123456789ABCDEF"));
        assert!(!is_network_id("0123"));
        assert_eq!(member_key(&id, "p"), format!("_net/{id}/m/p"));
        assert!(member_key(&id, "p").starts_with(&members_prefix(&id)));
    }
}
