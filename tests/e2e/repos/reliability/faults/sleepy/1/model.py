import os
import time

import numpy as np


class Model:
    def initialize(self, ctx):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        markers = os.environ.get("RUSTPY_TEST_MARKERS")
        if markers:  # lets a test wait until a request is really in predict
            with open(os.path.join(markers, "sleepy.log"), "a") as f:
                f.write("start %d %d\n" % (self.calls, int(inputs["MS"][0])))
        time.sleep(int(inputs["MS"][0]) / 1000.0)
        return {"CALLS": np.array([self.calls], dtype=np.int64)}
