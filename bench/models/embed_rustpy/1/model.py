"""embed on rustpy's batched API: one predict() per dynamic batch; the
tokenizer still runs per text in Python, the table lookups and reductions
run once per batch in numpy.

Same function as embed_python (see there): BYTES TEXT -> FP32[64] EMBEDDING.
"""
import numpy as np

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


class Model:
    def initialize(self, ctx):
        self.table = table()

    def predict(self, inputs):
        texts = inputs["TEXT"].reshape(-1)
        token_lists = [tokenize(t) for t in texts]
        counts = np.array([len(t) for t in token_lists])
        flat = np.fromiter((i for t in token_lists for i in t), dtype=np.int64, count=int(counts.sum()))
        out = np.zeros((len(texts), DIM), np.float32)
        nonempty = counts > 0
        if nonempty.any():
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[nonempty]
            sums = np.add.reduceat(self.table[flat], starts, axis=0)
            out[nonempty] = sums / counts[nonempty, None]
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
        return {"EMBEDDING": (out / norms).reshape(inputs["TEXT"].shape[:-1] + (DIM,)).astype(np.float32)}
