//! The message envelope every InferMesh message travels in, and its wire
//! encoding (CBOR, with field names as map keys so that peers written in
//! other languages can build and read it).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a message is about: one of the nine seed kinds or a custom name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// A thought shared by an agent.
    Thought,
    /// Agents coordinating work.
    AgentCoordination,
    /// Swarm state synchronisation.
    SwarmSync,
    /// A consensus proposal.
    ConsensusProposal,
    /// A vote on a consensus proposal.
    ConsensusVote,
    /// A liveness probe.
    HealthCheck,
    /// A metrics report.
    MetricsUpdate,
    /// A command for the receiver.
    Command,
    /// A response to a command.
    Response,
    /// Any other kind, named by the application.
    Custom(String),
}

/// The longest custom message type name accepted.
pub const MAX_MSG_TYPE_LEN: usize = 64;

/// Why a message type name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid message type {0:?}: use one of Thought, AgentCoordination, SwarmSync, ConsensusProposal, ConsensusVote, HealthCheck, MetricsUpdate, Command, Response, or a custom name of 1-64 characters (letters, digits, '-', '_', '.', ':', '/')"
)]
pub struct InvalidMsgType(pub String);

impl MsgType {
    /// The nine built-in kinds, in their canonical spelling.
    pub const SEED: [&'static str; 9] = [
        "Thought",
        "AgentCoordination",
        "SwarmSync",
        "ConsensusProposal",
        "ConsensusVote",
        "HealthCheck",
        "MetricsUpdate",
        "Command",
        "Response",
    ];

    /// The name as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            MsgType::Thought => "Thought",
            MsgType::AgentCoordination => "AgentCoordination",
            MsgType::SwarmSync => "SwarmSync",
            MsgType::ConsensusProposal => "ConsensusProposal",
            MsgType::ConsensusVote => "ConsensusVote",
            MsgType::HealthCheck => "HealthCheck",
            MsgType::MetricsUpdate => "MetricsUpdate",
            MsgType::Command => "Command",
            MsgType::Response => "Response",
            MsgType::Custom(name) => name,
        }
    }
}

impl FromStr for MsgType {
    type Err = InvalidMsgType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "Thought" => MsgType::Thought,
            "AgentCoordination" => MsgType::AgentCoordination,
            "SwarmSync" => MsgType::SwarmSync,
            "ConsensusProposal" => MsgType::ConsensusProposal,
            "ConsensusVote" => MsgType::ConsensusVote,
            "HealthCheck" => MsgType::HealthCheck,
            "MetricsUpdate" => MsgType::MetricsUpdate,
            "Command" => MsgType::Command,
            "Response" => MsgType::Response,
            custom => {
                let ok = !custom.is_empty()
                    && custom.len() <= MAX_MSG_TYPE_LEN
                    && custom.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
                if !ok {
                    return Err(InvalidMsgType(custom.chars().take(80).collect()));
                }
                MsgType::Custom(custom.to_owned())
            }
        })
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MsgType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MsgType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One message, broadcast or direct.
///
/// `from` and `to` are strings on the wire: `from` is the sender's node ID
/// (checked against the authenticated sender on receipt); `to` is either a
/// node ID (a direct message) or a topic name such as `agent-2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique message ID (32 hex characters when made by InferMesh).
    pub id: String,
    /// What the message is about.
    pub msg_type: MsgType,
    /// The sender's node ID.
    pub from: String,
    /// A node ID for a direct message, or a topic name.
    pub to: String,
    /// 0 (lowest) to 10 (highest): higher is sent first when queues back up.
    pub priority: u8,
    /// Seconds after `timestamp` when the message expires.
    pub ttl: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Application bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Optional human-readable text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The end-to-end encrypted payload and content of a direct message
    /// on the wire (both are then empty); `None` once opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) e2e: Option<Box<super::SealedBody>>,
}

/// The highest priority.
pub const MAX_PRIORITY: u8 = 10;

impl Envelope {
    /// A new envelope with a fresh random ID, no sender yet (the mesh fills
    /// `from` and `timestamp` when it sends), an empty payload.
    pub fn new(msg_type: MsgType, to: impl Into<String>, priority: u8, ttl: u32) -> Self {
        Self {
            id: new_message_id(),
            msg_type,
            from: String::new(),
            to: to.into(),
            priority,
            ttl,
            timestamp: 0,
            payload: Vec::new(),
            content: None,
            e2e: None,
        }
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the text content.
    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// Milliseconds since the epoch at which the message expires.
    pub fn expires_at_ms(&self) -> u64 {
        self.timestamp.saturating_add(u64::from(self.ttl) * 1000)
    }

    /// Whether the payload and content are end-to-end encrypted (as the
    /// envelope travels; opened envelopes say no).
    pub fn is_sealed(&self) -> bool {
        self.e2e.is_some()
    }

    /// Bytes of [`Envelope::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        ciborium::into_writer(self, &mut count).expect("counting bytes cannot fail");
        count.0
    }

    /// Encodes the envelope for the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_bound());
        ciborium::into_writer(self, &mut out).expect("writing CBOR into a Vec cannot fail");
        out
    }

    /// At least [`Envelope::encoded_len`], without encoding: room to
    /// encode into without growing (and copying) the buffer.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        let sealed = self.e2e.as_ref().map_or(0, |body| body.encoded_len_bound());
        let text = self.id.len()
            + self.msg_type.as_str().len()
            + self.from.len()
            + self.to.len()
            + self.content.as_ref().map_or(0, String::len);
        // Field names, integers and CBOR headers: under 160 bytes.
        self.payload.len() + text + sealed + 160
    }

    /// Decodes an envelope from wire bytes (no semantic checks: see
    /// [`crate::messaging::Validator`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(bytes).map_err(|e| e.to_string())
    }
}

/// A fresh message ID: 32 hex characters, unique across processes.
///
/// 64 random bits chosen once per process, then a 64-bit counter: unique
/// without a system call per message. IDs need not be secret (duplicates
/// are detected per sender, so nobody can collide with another node's IDs).
pub fn new_message_id() -> String {
    use std::sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    };
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without a random source, fall back to the clock: still unique
        // per process, less so across processes.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = crate::platform::now_ms().to_be_bytes();
        }
        u64::from_be_bytes(bytes)
    });
    format!("{prefix:016x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn msg_type_names_round_trip() {
        for name in MsgType::SEED {
            let t: MsgType = name.parse().unwrap();
            assert!(!matches!(t, MsgType::Custom(_)), "{name} should be a seed type");
            assert_eq!(t.as_str(), name);
        }
        assert_eq!("agent.plan/v2".parse::<MsgType>().unwrap(), MsgType::Custom("agent.plan/v2".into()));
        assert!("".parse::<MsgType>().is_err());
        assert!("has space".parse::<MsgType>().is_err());
        assert!("x".repeat(65).parse::<MsgType>().is_err());
    }

    #[test]
    fn envelope_cbor_round_trip() {
        let mut env = Envelope::new(MsgType::Thought, "agent-2", 5, 60)
            .with_payload(vec![1, 2, 3, 4])
            .with_content("hello");
        env.from = "12D3KooWabc".into();
        env.timestamp = 1_700_000_000_000;
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        assert!(bytes.len() <= env.encoded_len_bound());
        assert_eq!(env.id.len(), 32);
        assert_ne!(env.id, Envelope::new(MsgType::Thought, "x", 0, 1).id);
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_message_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn custom_type_survives_the_wire() {
        let env = Envelope::new(MsgType::Custom("job.offer".into()), "swarm-alpha", 0, 1);
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back.msg_type, MsgType::Custom("job.offer".into()));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(b"\xff\x00garbage").is_err());
        assert!(Envelope::decode(&[0xa1, 0x62, b'i', b'd']).is_err());
    }
}
