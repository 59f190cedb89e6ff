"""string_upper: BYTES tensors.

A BYTES (TYPE_STRING) input is a numpy object array whose elements are `bytes`.
Outputs may hold `bytes` or `str` (str is encoded as UTF-8); here UPPER is
returned as str to show that, and LENGTH counts characters, not bytes.
"""
import numpy as np


class Model:
    def predict(self, inputs):
        texts = inputs["TEXT"]                                   # object [batch, 1]
        decoded = [t.decode("utf-8") for t in texts.reshape(-1)]
        upper = np.array([s.upper() for s in decoded], dtype=object)
        length = np.array([len(s) for s in decoded], dtype=np.int32)
        return {
            "UPPER": upper.reshape(texts.shape),
            "LENGTH": length.reshape(texts.shape),
        }
