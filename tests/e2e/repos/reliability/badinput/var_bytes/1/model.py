import numpy as np


class Model:
    def predict(self, inputs):
        s = inputs["S"]
        flat = s.reshape(-1)
        return {
            "N": np.array([flat.size], dtype=np.int64),
            "TOTAL": np.array([sum(len(e) for e in flat)], dtype=np.int64),
            "ECHO": s,
        }
