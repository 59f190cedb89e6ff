"""no_batch: a model without a batch dimension (max_batch_size: 0).

predict() sees exactly one request's tensors, with their own shapes:
INPUT float32 [n] -> SUM float64 [1] (computed in float64), SORTED float32 [n].
"""
import numpy as np


class Model:
    def predict(self, inputs):
        x = inputs["INPUT"]
        return {
            "SUM": np.array([x.sum(dtype=np.float64)]),
            "SORTED": np.sort(x),
        }
