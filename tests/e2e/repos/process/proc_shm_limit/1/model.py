import os

import numpy as np


class Model:
    def predict(self, inputs):
        x = inputs["X"]
        return {"SUM": np.array([x.sum(dtype=np.float64)]),
                "PID": np.array([os.getpid()], np.int64)}
