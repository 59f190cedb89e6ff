"""{{name}}: text embedding (scaffolded by `rustpy init`).

A deterministic hashing embedder that needs only numpy: every word and
character trigram is hashed (with a stable hash, not Python's randomised
`hash`) into one of {{dim}} signed buckets, and the sum is L2-normalised
unless the request parameter `normalize` (request_parameters.json) is false.
Replace `embed` with your real encoder.

Input  TEXT  BYTES [1]     Output EMBEDDING FP32 [{{dim}}]
"""

import hashlib

import numpy as np

DIM = {{dim}}


class Model:
    def initialize(self, ctx):
        self.dim = DIM

    def predict(self, inputs, requests):
        texts = inputs["TEXT"]
        # [B, 1] when batched (max_batch_size > 0), [1] otherwise.
        batched = texts.ndim == 2
        flat = texts.reshape(-1)
        norms = [r.parameters["normalize"] for r in requests for _ in range(r.batch_size if batched else 1)]
        out = np.stack([embed(_to_str(t), self.dim, n) for t, n in zip(flat, norms)]).astype(np.float32)
        return {"EMBEDDING": out if batched else out[0]}


def _to_str(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _tokens(text):
    words = text.lower().split()
    yield from words
    for word in words:
        padded = "<%s>" % word
        for i in range(len(padded) - 2):
            yield padded[i : i + 3]


def embed(text, dim=DIM, normalize=True):
    vec = np.zeros(dim, dtype=np.float64)
    for token in _tokens(text):
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dim
        sign = 1.0 if digest[4] & 1 else -1.0
        vec[bucket] += sign
    norm = np.linalg.norm(vec)
    return vec / norm if normalize and norm > 0 else vec
