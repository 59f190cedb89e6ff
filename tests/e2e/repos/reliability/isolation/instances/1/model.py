import time

import numpy as np


class Model:
    def initialize(self, ctx):
        self.instance = ctx.instance_name
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        time.sleep(int(inputs["SLEEP_MS"][0]) / 1000.0)
        return {
            "OBJ": np.array([id(self)], dtype=np.int64),
            "INSTANCE": np.array([self.instance.encode()], dtype=object),
            "CALLS": np.array([self.calls], dtype=np.int64),
        }
