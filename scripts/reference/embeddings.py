#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, computed without
any of InferMesh's Rust code: a BERT WordPiece tokenizer written here from
tokenizer.json's vocabulary and the BERT rules it declares, and the 6-layer
BERT forward pass in numpy straight from model.safetensors, then
sentence-transformers' pooling (mean over the tokens, L2-normalised),
inputs truncated at 256 tokens.

    embeddings.py MODEL_DIR < texts.json > out.json

reads a JSON array of texts and writes, for each, its token IDs and its
embedding.
"""

import json
import math
import string
import struct
import sys
import unicodedata

import numpy as np

MAX_TOKENS = 256
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_whitespace(ch):
    return ch in "\t\n\r" or ch.isspace()


def is_punctuation(ch):
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize(text):
    """BERT's normaliser: clean the text, space out CJK characters, strip
    accents, lowercase."""
    cleaned = []
    for ch in text:
        if ord(ch) in (0, 0xFFFD) or is_control(ch):
            continue
        cleaned.append(" " if is_whitespace(ch) else ch)
    spaced = []
    for ch in cleaned:
        if any(lo <= ord(ch) <= hi for lo, hi in CJK):
            spaced.extend([" ", ch, " "])
        else:
            spaced.append(ch)
    text = unicodedata.normalize("NFD", "".join(spaced))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return text.lower()


def pre_tokenize(text):
    """Split on whitespace, and every punctuation character on its own."""
    words, current = [], []
    for ch in text:
        if is_whitespace(ch):
            if current:
                words.append("".join(current))
                current = []
        elif is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def word_piece(word, vocab, unk):
    """Greedy longest-match-first pieces ("##" continues a word)."""
    if len(word) > 100:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = piece
                break
            end -= 1
        if found is None:
            return [unk]
        pieces.append(found)
        start = end
    return pieces


def tokenize(text, vocab):
    tokens = [p for w in pre_tokenize(normalize(text)) for p in word_piece(w, vocab, "[UNK]")]
    tokens = ["[CLS]"] + tokens[: MAX_TOKENS - 2] + ["[SEP]"]
    return [vocab[t] for t in tokens]


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + size])
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start: base + end], dtype="<f4").reshape(info["shape"])
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


erf = np.vectorize(math.erf)


def embed(ids, t, config):
    n = len(ids)
    heads = config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    x = (t["embeddings.word_embeddings.weight"][ids]
         + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def dense(v, name):
            return v @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        q, k, v = (dense(x, "attention.self." + m) for m in ("query", "key", "value"))
        d = q.shape[-1] // heads
        split = lambda m: m.reshape(n, heads, d).transpose(1, 0, 2)  # noqa: E731
        scores = split(q) @ split(k).transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ split(v)).transpose(1, 0, 2).reshape(n, heads * d)
        x = layer_norm(dense(context, "attention.output.dense") + x,
                       t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        inter = dense(x, "intermediate.dense")
        inter = 0.5 * inter * (1.0 + erf(inter / math.sqrt(2.0)))
        x = layer_norm(dense(inter, "output.dense") + x,
                       t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir = sys.argv[1]
    texts = json.load(sys.stdin)
    with open(f"{model_dir}/tokenizer.json", encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    with open(f"{model_dir}/config.json", encoding="utf-8") as f:
        config = json.load(f)
    tensors = load_safetensors(f"{model_dir}/model.safetensors")
    out = []
    for text in texts:
        ids = tokenize(text, vocab)
        out.append({"ids": ids, "embedding": embed(ids, tensors, config).astype(float).tolist()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
