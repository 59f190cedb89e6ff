"""embed on the official Python backend API: BYTES text in, FP32[64] out,
one request at a time (as in Triton's examples).

The benchmark serves this exact file as embed_python (`backend: "python"`)
and embed_rustpy_compat (`backend: "rustpy"`).

Per text: a pure-Python tokenizer (lower-case, split into ASCII letter/digit
runs, FNV-1a 32-bit hash of each token modulo 4096), then the mean of the
tokens' rows of a [4096, 64] embedding table, L2-normalised. The table comes
from an integer formula that rustpy-bench repeats to check every response
(crates/rustpy-bench/src/workload/embed.rs).
"""
import numpy as np

import triton_python_backend_utils as pb_utils

VOCAB, DIM = 4096, 64
_WORD = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz")


def table():
    v, d = np.arange(VOCAB)[:, None], np.arange(DIM)[None, :]
    return ((v * 131 + d * 71) % 251 - 125).astype(np.float32) / np.float32(256)


def tokenize(text):
    ids, h, in_word = [], 0x811C9DC5, False
    for b in text.lower():
        if b in _WORD:
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
            in_word = True
        elif in_word:
            ids.append(h % VOCAB)
            h, in_word = 0x811C9DC5, False
    if in_word:
        ids.append(h % VOCAB)
    return ids


def embed(table, text):
    ids = tokenize(text)
    v = table[ids].mean(axis=0) if ids else np.zeros(DIM, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-6)


class TritonPythonModel:
    def initialize(self, args):
        self.table = table()

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            out = np.stack([embed(self.table, t) for t in texts.reshape(-1)]).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("EMBEDDING", out)]))
        return responses
