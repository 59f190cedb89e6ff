import time

import numpy as np


class Model:
    def initialize(self, ctx):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        time.sleep(int(inputs["MS"][0]) / 1000.0)
        return {"CALLS": np.array([self.calls], dtype=np.int64)}
