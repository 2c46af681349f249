//! The wire side of private networks.
//!
//! - `/infermesh/net/1.0.0` (request-response, CBOR): a device asks a
//!   network's owner to let it in with an invite token (and, for a device
//!   of someone else's key, that person's certificate), or to let it
//!   leave.
//! - Presence: on the gossipsub topic `/infermesh/net/<id>`, each device
//!   of a member announces itself every [`PRESENCE_INTERVAL`]: which
//!   person it belongs to and what compute it offers. Gossipsub signs each
//!   message with the device's key; members check that key against the
//!   member records. Nodes outside the network relay it, checking only its
//!   shape.

use std::time::Duration;

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use super::records::{DeviceCert, MAX_TOKEN_BYTES};
use crate::compute::ComputeOffer;

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/net/1.0.0");
/// Request and response size limits for the codec (checked before decoding).
pub(crate) const MAX_REQUEST_BYTES: u64 = 2 * MAX_TOKEN_BYTES as u64;
pub(crate) const MAX_RESPONSE_BYTES: u64 = 4096;

/// The prefix of presence topics.
pub(crate) const PRESENCE_PREFIX: &str = "/infermesh/net/";
/// How often a device announces itself.
pub(crate) const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);
/// A device not heard from for this long is gone.
pub(crate) const PRESENCE_EXPIRY: Duration = Duration::from_secs(7);
/// Most bytes of one presence message.
pub(crate) const MAX_PRESENCE_BYTES: usize = 2048;
/// Most models, and addresses, one device lists.
const MAX_LISTED: usize = 8;

/// The presence topic of a network.
pub(crate) fn presence_topic(network: &str) -> String {
    format!("{PRESENCE_PREFIX}{network}")
}

/// A request of the network protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum NetRequest {
    /// Let me in.
    Join { token: String, cert: Option<DeviceCert> },
    /// I am leaving (the person, if the sender is its own node; otherwise
    /// just this device).
    Leave { network: String },
}

/// A response of the network protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum NetResponse {
    /// In: the person the device now belongs to.
    Joined { network: String, name: String, person: String },
    /// Out.
    Left,
    /// Not done, and why.
    Refused(String),
}

/// One device's announcement on a network's presence topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Presence {
    /// The network.
    #[serde(rename = "n")]
    pub network: String,
    /// The person the device belongs to.
    #[serde(rename = "p")]
    pub person: String,
    /// When it was sent (ms since the epoch).
    #[serde(rename = "t")]
    pub at_ms: u64,
    /// The compute it offers, if any.
    #[serde(rename = "o")]
    pub offer: Option<ComputeOffer>,
    /// Tasks waiting or running there.
    #[serde(rename = "q")]
    pub queue: u32,
    /// Where it can be reached (multiaddrs).
    #[serde(rename = "a", deserialize_with = "crate::protocols::bounded::bounded::<_, _, MAX_LISTED>")]
    pub addrs: Vec<String>,
}

impl Presence {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        ciborium::into_writer(self, &mut out).expect("writing CBOR into a Vec cannot fail");
        out
    }

    /// Reads an announcement from `topic`, checking its size and shape.
    pub(crate) fn decode(topic: &str, data: &[u8]) -> Result<Presence, String> {
        if data.len() > MAX_PRESENCE_BYTES {
            return Err(format!("{} bytes, the most is {MAX_PRESENCE_BYTES}", data.len()));
        }
        let presence: Presence = ciborium::from_reader(data).map_err(|e| e.to_string())?;
        if topic != presence_topic(&presence.network) {
            return Err("announced on another network's topic".into());
        }
        if presence.addrs.len() > MAX_LISTED
            || presence.offer.as_ref().is_some_and(|o| o.models.len() > MAX_LISTED || o.threads == 0)
        {
            return Err("too many models or addresses, or no threads".into());
        }
        Ok(presence)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn presence() -> Presence {
        Presence {
            network: "0123456789abcdef".into(),
            person: "12D3KooW".into(),
            at_ms: 5,
            offer: Some(ComputeOffer {
                threads: 2,
                memory_mb: 512,
                models: vec!["all-MiniLM-L6-v2".into()],
                kind: "native".into(),
            }),
            queue: 1,
            addrs: vec![],
        }
    }

    #[test]
    fn presence_round_trips_on_its_own_topic_only() {
        let topic = presence_topic("0123456789abcdef");
        let bytes = presence().encode();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(Presence::decode(&topic, &bytes).unwrap(), presence());
        assert!(Presence::decode(&presence_topic("fedcba9876543210"), &bytes).is_err());
        assert!(Presence::decode(&topic, b"\xa0").is_err());
        assert!(Presence::decode(&topic, &vec![0u8; MAX_PRESENCE_BYTES + 1]).is_err());
        let mut many = presence();
        many.addrs = vec!["/ip4/127.0.0.1/tcp/1".into(); 9];
        assert!(Presence::decode(&topic, &many.encode()).is_err());
        let mut idle = presence();
        idle.offer.as_mut().unwrap().threads = 0;
        assert!(Presence::decode(&topic, &idle.encode()).is_err());
    }
}
