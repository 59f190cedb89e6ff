"""Mean of a fixed embedding table over each row's tokens (equal lengths per call)."""
import numpy as np

TABLE = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)


class Model:
    def predict(self, inputs):
        return {"EMB": TABLE[inputs["TOKENS"] % 1000].mean(axis=1)}
