"""Doubles X. A request whose X holds a negative number is poison: the
whole call raises, as a model failing on one bad input among a batch does
(`always_fails` raises for every call)."""
import numpy as np

ALWAYS = False


class Model:
    def predict(self, inputs):
        x = inputs["X"]
        if ALWAYS or np.any(x < 0):
            raise ValueError("poison row: X must not be negative (call of %d rows)" % x.shape[0])
        return {"Y": x * 2}
