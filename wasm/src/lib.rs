//! # infermesh-wasm
//!
//! The browser binding of InferMesh (npm package `infermesh`): a thin
//! wasm-bindgen layer over `infermesh-core` that converts types and owns no
//! logic.

use wasm_bindgen::prelude::wasm_bindgen;

/// The version of the InferMesh core this package was built from.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Whether `text` is a valid node ID (a libp2p peer ID such as `12D3KooW…`).
#[wasm_bindgen]
pub fn is_node_id(text: &str) -> bool {
    text.parse::<infermesh_core::PeerId>().is_ok()
}
