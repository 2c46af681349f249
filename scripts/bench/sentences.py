"""Deterministic benchmark sentences: N lines of 4 to 40 words (a few long
ones), English with some non-English words. Usage: sentences.py N OUT"""

import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
words = ("the a mesh of peers runs jobs for its members while browsers and nodes share their "
         "compute over private networks with signed invites and every result is checked before "
         "it counts; embeddings map sentences to vectors so similar meanings land close together "
         "café über naïve 网络 計算 🚀 quickly slowly carefully today tomorrow").split()
rng = random.Random(42)
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        length = rng.choice([4, 6, 8, 10, 12, 16, 20, 24, 32, 40])
        f.write(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".\n")
