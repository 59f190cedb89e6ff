import numpy as np


class Model:
    def predict(self, inputs, requests):
        x = inputs["X"]
        rows = np.concatenate([np.full((r.batch_size, 1), r.batch_size, dtype=np.int32)
                               for r in requests])
        return {"Y": x * 2, "ROWS": rows}
