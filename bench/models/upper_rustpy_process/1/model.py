"""BYTES upper-casing on rustpy's batched API: the same per-element work as
upper_python, on one object array [batch, 1] of `bytes` per call."""
import numpy as np


class Model:
    def predict(self, inputs):
        text = inputs["TEXT"]
        upper = np.array([t.upper() for t in text.reshape(-1)], dtype=np.object_).reshape(text.shape)
        return {"UPPER": upper}
