"""pycpu: a pure-Python CPU-bound model on the official Python backend API.

The benchmark serves this exact file as pycpu_count{1,2}_python (`backend:
"python"`), pycpu_count{1,2}_rustpy_compat (`backend: "rustpy"`, in-process)
and pycpu_count{1,2}_rustpy_compat_process (`rustpy.isolation: "process"`),
with `instance_group { count: 1 }` and `{ count: 2 }`: what a second instance
buys for Python that holds the GIL (issue 11's first target).

Per text it computes the `embed` workload's answer (rustpy-bench checks it
against its own implementation, crates/rustpy-bench/src/workload/embed.rs),
but runs the pure-Python tokenizer ROUNDS times first: about 10 ms of
interpreter work per request, with the GIL held throughout.
"""
import numpy as np

import triton_python_backend_utils as pb_utils

VOCAB, DIM = 4096, 64
ROUNDS = 1000
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
    for _ in range(ROUNDS - 1):
        tokenize(text)
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
