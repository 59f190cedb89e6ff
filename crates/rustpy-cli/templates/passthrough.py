"""{{name}}: passthrough (scaffolded by `rustpy init`).

Returns its input unchanged; a starting point and a smoke test for the
serving path.

Input  INPUT0  FP32 [-1]     Output OUTPUT0  FP32 [-1]
"""

import numpy as np


class Model:
    def initialize(self, ctx):
        pass

    def predict(self, inputs, requests):
        return {"OUTPUT0": np.asarray(inputs["INPUT0"], dtype=np.float32)}
