"""Mean of a fixed embedding table over each request's tokens, one call per batch."""
import numpy as np

TABLE = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)


class Model:
    def predict(self, inputs):
        tokens, offsets = inputs["TOKENS"], inputs["OFFSETS"]
        emb = TABLE[tokens % 1000]
        sums = np.add.reduceat(emb, offsets[:-1], axis=0)
        return {"EMB": sums / np.diff(offsets)[:, None].astype(np.float32)}
