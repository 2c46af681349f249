//! Key-owned replicated state, the I/O-free part: signed entries, the
//! hybrid logical clock, the replica that merges entries (last writer wins
//! on `(timestamp, author, id)`) and checks who may write, and range-based
//! set reconciliation of a namespace between two replicas.

mod entry;
mod hlc;
mod local;
pub mod reconcile;
mod replica;

pub use entry::{
    ACL_PREFIX, Entry, EntryError, EntryRejection, KEM_PREFIX, MAX_ENTRY_BYTES, MAX_KEY_BYTES,
    MAX_VALUE_BYTES, is_internal_key,
};
pub use hlc::Hlc;
pub use local::{Ingested, LocalState, StateError, StoreError, WriteMode};
pub use replica::{Applied, MAX_CLOCK_SKEW_MS, Outcome, Replica, ReplicaLimits, wins};

/// Parses CLI input the way the prompt does: JSON when it parses (number,
/// boolean, object, array, null, or a quoted string), otherwise the text
/// itself as a string.
pub fn parse_cli_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    #[test]
    fn cli_values_keep_their_json_type() {
        assert_eq!(parse_cli_value("John"), json!("John"));
        assert_eq!(parse_cli_value("25"), json!(25));
        assert_eq!(parse_cli_value("true"), json!(true));
        assert_eq!(parse_cli_value("null"), json!(null));
        assert_eq!(
            parse_cli_value(r#"{"theme":"dark","fontSize":14}"#),
            json!({"theme": "dark", "fontSize": 14})
        );
        assert_eq!(parse_cli_value(r#"["a", 1]"#), json!(["a", 1]));
        assert_eq!(parse_cli_value("hello world"), json!("hello world"));
        assert_eq!(parse_cli_value("{not json"), json!("{not json"));
    }
}
