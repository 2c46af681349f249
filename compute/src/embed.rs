//! Sentence embeddings: tokenize, run BERT, pool.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::{ComputeError, model::ModelFiles};

/// Tokens an input keeps, `[CLS]` and `[SEP]` included
/// (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;
/// Floats per embedding.
pub const DIMENSIONS: usize = 384;
/// Sequences run through the model together, at most.
const BATCH: usize = 32;
/// Tokens (padding included) run through the model together, at most.
const BATCH_TOKENS: usize = 4096;
// A batch also ends where padding would pass a fifth of its tokens: work
// on padding is wasted, and smaller batches cost little more per token.

fn run(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Run(e.to_string())
}

/// A loaded model, ready to embed texts. Loading costs ~100 ms and 90 MB;
/// keep one and reuse it.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads the model from its files, after checking each against its
    /// SHA-256.
    pub fn load(files: ModelFiles) -> Result<Self, ComputeError> {
        files.verify()?;
        let load = |e: &dyn std::fmt::Display| ComputeError::Load(e.to_string());
        let config: Config = serde_json::from_slice(&files.config).map_err(|e| load(&e))?;
        let device = Device::Cpu;
        let weights = VarBuilder::from_buffered_safetensors(files.weights, DType::F32, &device)
            .map_err(|e| load(&e))?;
        let model = BertModel::load(weights, &config).map_err(|e| load(&e))?;
        let mut tokenizer = Tokenizer::from_bytes(&files.tokenizer).map_err(|e| load(&e))?;
        // The file asks for padding to 128, which would make the mean run
        // over padding too: each batch pads itself instead, and masks it.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| load(&e))?;
        Ok(Self { model, tokenizer, device })
    }

    /// The token IDs of `text` as the model sees it (`[CLS] … [SEP]`,
    /// truncated at [`MAX_TOKENS`]).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, ComputeError> {
        let encoding = self.tokenizer.encode(text, true).map_err(run)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One embedding (unit length, [`DIMENSIONS`] floats) per text, in order.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, ComputeError> {
        self.embed_counted(texts).map(|(vectors, _)| vectors)
    }

    /// Like [`Embedder::embed`], with the number of tokens the model read
    /// (`[CLS]` and `[SEP]` included).
    pub fn embed_counted<S: AsRef<str>>(&self, texts: &[S]) -> Result<(Vec<Vec<f32>>, u64), ComputeError> {
        let ids: Vec<Vec<u32>> =
            texts.iter().map(|t| self.token_ids(t.as_ref())).collect::<Result<_, _>>()?;
        let tokens = ids.iter().map(|i| i.len() as u64).sum();
        // Similar lengths together, so that little is padding.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            let mut real = ids[order[start]].len();
            while end < order.len() && end - start < BATCH {
                // Sorted: the next is the longest, and all pad to it.
                let (next, padded) = (ids[order[end]].len(), (end + 1 - start) * ids[order[end]].len());
                if padded > BATCH_TOKENS || padded * 4 > (real + next) * 5 {
                    break;
                }
                real += next;
                end += 1;
            }
            let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, embedding) in order[start..end].iter().zip(self.embed_batch(&batch)?) {
                out[i] = embedding;
            }
            start = end;
        }
        Ok((out, tokens))
    }

    /// Runs one padded batch and pools each sequence over its own tokens.
    fn embed_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, ComputeError> {
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut flat_ids = Vec::with_capacity(batch.len() * len);
        let mut flat_mask = Vec::with_capacity(batch.len() * len);
        for ids in batch {
            flat_ids.extend_from_slice(ids);
            flat_ids.resize(flat_ids.len() + len - ids.len(), 0);
            flat_mask.extend(std::iter::repeat_n(1u32, ids.len()));
            flat_mask.resize(flat_mask.len() + len - ids.len(), 0);
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(flat_ids, shape, &self.device).map_err(run)?;
        let mask = Tensor::from_vec(flat_mask, shape, &self.device).map_err(run)?;
        let types = ids.zeros_like().map_err(run)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(run)?;
        // Mean over the real tokens (not the padding), then unit length.
        let mask = mask.to_dtype(DType::F32).and_then(|m| m.unsqueeze(2)).map_err(run)?;
        let sum = hidden.broadcast_mul(&mask).and_then(|h| h.sum(1)).map_err(run)?;
        let mean = sum.broadcast_div(&mask.sum(1).map_err(run)?).map_err(run)?;
        let norm = mean.sqr().and_then(|s| s.sum_keepdim(1)).and_then(|s| s.sqrt()).map_err(run)?;
        mean.broadcast_div(&norm).and_then(|e| e.to_vec2::<f32>()).map_err(run)
    }
}
