//! Conversions between JavaScript values and the core's types.

use std::fmt::Display;

use infermesh_core::{Envelope, InboundMessage, MsgType, Sent, Via};
use js_sys::Uint8Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

/// A JavaScript `Error` with this message.
pub(crate) fn js_error(message: impl Display) -> JsValue {
    js_sys::Error::new(&message.to_string()).into()
}

/// Serialises to plain JavaScript objects (not `Map`s), `null` for `None`.
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_error)
}

/// Options of `initialize`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct InitOptions {
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
    pub max_peers: Option<usize>,
    pub quantum_resistant: Option<bool>,
    pub mlkem_security_level: Option<u8>,
    pub min_security_level: Option<u8>,
    pub private_key: Option<String>,
    pub replication_factor: Option<usize>,
}

/// Options of method `what`: `undefined`, `null` or an object with only
/// the `known` fields.
pub(crate) fn options<T: serde::de::DeserializeOwned + Default>(
    what: &str,
    value: JsValue,
    known: &[&str],
) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    if !value.is_object() {
        return Err(js_error(format!("invalid {what}() options: expected an object")));
    }
    for key in js_sys::Object::keys(value.unchecked_ref()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !known.contains(&key.as_str()) {
            return Err(js_error(format!(
                "invalid {what}() options: unknown option `{key}`, expected one of {}",
                known.join(", ")
            )));
        }
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("invalid {what}() options: {e}")))
}

pub(crate) fn init_options(value: JsValue) -> Result<InitOptions, JsValue> {
    // serde-wasm-bindgen reads only the fields it knows, so a misspelt
    // option would pass silently: `options` refuses it.
    const KNOWN: [&str; 7] = [
        "bootstrap_peers",
        "max_peers",
        "quantum_resistant",
        "mlkem_security_level",
        "min_security_level",
        "private_key",
        "replication_factor",
    ];
    options("initialize", value, &KNOWN)
}

/// A message as JavaScript sees it (`create_neural_message`, `send_message`).
#[derive(Serialize, Deserialize)]
pub(crate) struct JsMessage {
    #[serde(default)]
    pub id: Option<String>,
    pub msg_type: String,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(default)]
    pub timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

pub(crate) fn msg_type(name: &str) -> Result<MsgType, JsValue> {
    name.parse::<MsgType>().map_err(js_error)
}

/// A new message object (what `create_neural_message` returns).
pub(crate) fn new_message(
    msg_type_name: &str,
    from: &str,
    to: &str,
    priority: u8,
    ttl: u32,
) -> Result<JsValue, JsValue> {
    let kind = msg_type(msg_type_name)?;
    let env = Envelope::new(kind, to, priority, ttl);
    let message = JsMessage {
        id: Some(env.id),
        msg_type: env.msg_type.to_string(),
        from: Some(from.to_owned()),
        to: env.to,
        priority: Some(priority),
        ttl: Some(ttl),
        timestamp: Some(infermesh_core::platform::now_ms() as f64),
        content: None,
    };
    to_js(&message)
}

/// Builds the envelope for `send_message(message, payload)`.
pub(crate) fn envelope(message: JsValue, payload: Vec<u8>) -> Result<Envelope, JsValue> {
    if !message.is_object() {
        return Err(js_error("message must be an object, e.g. from create_neural_message()"));
    }
    let m: JsMessage =
        serde_wasm_bindgen::from_value(message).map_err(|e| js_error(format!("invalid message: {e}")))?;
    let mut env = Envelope::new(msg_type(&m.msg_type)?, m.to, m.priority.unwrap_or(5), m.ttl.unwrap_or(60));
    if let Some(id) = m.id {
        env.id = id;
    }
    env.from = m.from.unwrap_or_default();
    env.timestamp = m.timestamp.map(|t| t.max(0.0) as u64).unwrap_or(0);
    env.payload = payload;
    env.content = m.content;
    Ok(env)
}

/// The bytes of a payload argument: a `Uint8Array`; `undefined` or `null`
/// mean no payload.
pub(crate) fn payload(value: &JsValue) -> Result<Vec<u8>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(Vec::new());
    }
    match value.dyn_ref::<Uint8Array>() {
        Some(bytes) => Ok(bytes.to_vec()),
        None => Err(js_error(format!(
            "payload must be a Uint8Array, got {}",
            value.js_typeof().as_string().unwrap_or_else(|| "something else".into())
        ))),
    }
}

/// An inbound message as handed to the message handler.
#[derive(Serialize)]
struct JsInbound<'a> {
    id: &'a str,
    msg_type: &'a str,
    from: &'a str,
    to: &'a str,
    priority: u8,
    ttl: u32,
    timestamp: u64,
    content: Option<&'a str>,
    /// The node that created (signed or sent) it, verified.
    sender: String,
    /// The topic it was published on; `null` for a direct message.
    topic: Option<&'a str>,
    /// End-to-end encrypted (hybrid post-quantum KEM), not just by the
    /// transport.
    encrypted: bool,
    /// The KEM level (1, 3 or 5) when encrypted.
    kem_level: Option<u8>,
    /// The node that held it while this one was offline, if any.
    held_by: Option<String>,
}

/// `(message, payload)` for the message handler.
pub(crate) fn inbound(m: &InboundMessage) -> Result<(JsValue, JsValue), JsValue> {
    let e = &m.envelope;
    let message = to_js(&JsInbound {
        id: &e.id,
        msg_type: e.msg_type.as_str(),
        from: &e.from,
        to: &e.to,
        priority: e.priority,
        ttl: e.ttl,
        timestamp: e.timestamp,
        content: e.content.as_deref(),
        sender: m.sender.to_base58(),
        topic: match &m.via {
            Via::Topic(topic) => Some(topic),
            Via::Direct | Via::Mailbox(_) => None,
        },
        encrypted: m.e2e.is_some(),
        kem_level: m.e2e.map(|level| level.number()),
        held_by: match &m.via {
            Via::Mailbox(holder) => Some(holder.to_base58()),
            _ => None,
        },
    })?;
    Ok((message, Uint8Array::from(e.payload.as_slice()).into()))
}

/// The `{ namespace }` option of the state calls: a node ID, or absent.
pub(crate) fn namespace_option(options: &JsValue) -> Result<Option<String>, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() {
        return Err(js_error("options must be an object like { namespace }"));
    }
    let namespace =
        js_sys::Reflect::get(options, &JsValue::from_str("namespace")).unwrap_or(JsValue::UNDEFINED);
    if namespace.is_undefined() || namespace.is_null() {
        return Ok(None);
    }
    let Some(text) = namespace.as_string() else {
        return Err(js_error("namespace must be a node ID string"));
    };
    if text.parse::<infermesh_core::PeerId>().is_err() {
        return Err(js_error(format!("namespace '{text}' is not a node ID (they look like 12D3KooW…)")));
    }
    Ok(Some(text))
}

/// The `{ private }` option of `set`: `true` seals the value.
pub(crate) fn private_option(options: &JsValue) -> Result<bool, JsValue> {
    if !options.is_object() {
        return Ok(false);
    }
    let private = js_sys::Reflect::get(options, &JsValue::from_str("private")).unwrap_or(JsValue::UNDEFINED);
    if private.is_undefined() || private.is_null() {
        return Ok(false);
    }
    private.as_bool().ok_or_else(|| js_error("private must be true or false"))
}

/// A JS value as JSON (objects, arrays, strings, numbers, booleans, null).
pub(crate) fn json_value(value: JsValue) -> Result<serde_json::Value, JsValue> {
    if value.is_undefined() {
        return Err(js_error("value is undefined; use delete() to remove a key"));
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("value is not JSON-compatible: {e}")))
}

/// What `send_message`, `publish` and `send_direct` resolve with.
pub(crate) fn sent(sent: Sent) -> Result<JsValue, JsValue> {
    #[derive(Serialize)]
    struct Outcome {
        id: String,
        /// Acknowledged by the recipient.
        delivered: bool,
        rtt_ms: Option<f64>,
        topic: Option<String>,
        /// End-to-end encrypted.
        encrypted: bool,
        /// The recipient was offline: this node holds it for them.
        held_by: Option<String>,
    }
    let outcome = match sent {
        Sent::Direct(d) => Outcome {
            id: d.id,
            delivered: d.held_by.is_none(),
            rtt_ms: Some(d.rtt.as_secs_f64() * 1000.0),
            topic: None,
            encrypted: d.encrypted,
            held_by: d.held_by.map(|p| p.to_base58()),
        },
        Sent::Broadcast { id, topic } => Outcome {
            id,
            delivered: false,
            rtt_ms: None,
            topic: Some(topic),
            encrypted: false,
            held_by: None,
        },
    };
    to_js(&outcome)
}
