import numpy as np


class Model:
    def predict(self, inputs, requests):
        x = inputs["X"]
        scale = inputs.get("SCALE")
        y = x if scale is None else x * scale
        return {"Y": y, "NREQ": np.full((x.shape[0], 1), len(requests), np.int32)}
