//! # infermesh-compute-web
//!
//! The compute module a browser tab loads, in a Web Worker, only when it
//! offers compute to its networks: `infermesh-compute`'s embeddings model
//! behind a small wasm-bindgen API. It is a module of its own so that the
//! `infermesh` package, which every page loads, carries none of it.
//! `worker.js` (next to it in the package) drives it.
#![cfg(target_arch = "wasm32")]

use infermesh_compute::{Embedder as Model, MODEL, ModelFiles};
use wasm_bindgen::prelude::*;

/// The model's files and their SHA-256, as `[{ name, sha256, size }]`:
/// what the worker fetches and what [`Embedder::new`] checks.
#[wasm_bindgen(js_name = modelFiles)]
pub fn model_files() -> js_sys::Array {
    MODEL
        .files()
        .iter()
        .map(|f| {
            let o = js_sys::Object::new();
            let set = |k: &str, v: JsValue| js_sys::Reflect::set(&o, &k.into(), &v).map(|_| ());
            let _ = set("name", f.name.into());
            let _ = set("sha256", f.sha256.into());
            let _ = set("size", (f.size as f64).into());
            JsValue::from(o)
        })
        .collect()
}

/// The model's name.
#[wasm_bindgen(js_name = modelName)]
pub fn model_name() -> String {
    MODEL.name.into()
}

/// Embeddings of one task.
#[wasm_bindgen]
pub struct Embedded {
    vectors: Vec<f32>,
    tokens: u64,
}

#[wasm_bindgen]
impl Embedded {
    /// The embeddings, one after another (384 floats each).
    #[wasm_bindgen(getter)]
    pub fn vectors(&self) -> Vec<f32> {
        self.vectors.clone()
    }

    /// Tokens the model read.
    #[wasm_bindgen(getter)]
    pub fn tokens(&self) -> f64 {
        self.tokens as f64
    }
}

/// The loaded model.
#[wasm_bindgen]
pub struct Embedder {
    model: Model,
}

#[wasm_bindgen]
impl Embedder {
    /// Loads the model from its files' bytes, after checking each against
    /// its SHA-256 (the error names a file that does not match).
    #[wasm_bindgen(constructor)]
    pub fn new(weights: Vec<u8>, tokenizer: Vec<u8>, config: Vec<u8>) -> Result<Embedder, JsError> {
        console_error_panic_hook::set_once();
        let model = Model::load(ModelFiles { weights, tokenizer, config })?;
        Ok(Embedder { model })
    }

    /// One unit-length embedding per text, in order, flattened.
    pub fn embed(&self, texts: Vec<String>) -> Result<Embedded, JsError> {
        let (vectors, tokens) = self.model.embed_counted(&texts)?;
        Ok(Embedded { vectors: vectors.into_iter().flatten().collect(), tokens })
    }
}
