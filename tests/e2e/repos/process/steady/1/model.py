"""In-process: answers with the server's pid."""
import os

import numpy as np


class Model:
    def predict(self, inputs):
        x = inputs["X"]
        return {"Y": x * 2, "PID": np.full((x.shape[0], 1), os.getpid(), dtype=np.int64)}
