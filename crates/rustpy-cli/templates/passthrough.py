"""{{name}}: passthrough (scaffolded by `rustpy init`).

Returns its input times the request parameter `scale` (declared in
request_parameters.json, default 1.0: unchanged); a starting point and a
smoke test for the serving path.

Input  INPUT0  FP32 [-1]     Output OUTPUT0  FP32 [-1]
"""

import numpy as np


class Model:
    def initialize(self, ctx):
        pass

    def predict(self, inputs, requests):
        x = np.asarray(inputs["INPUT0"], dtype=np.float32)
        # rustpy checked each request's parameters against
        # request_parameters.json and filled in the defaults.
        scales = [r.parameters["scale"] for r in requests]
        if x.ndim == 2:  # batched: [B, N], request i owns batch_size rows
            rows = np.repeat(scales, [r.batch_size for r in requests])
            return {"OUTPUT0": (x * rows[:, np.newaxis]).astype(np.float32)}
        return {"OUTPUT0": (x * scales[0]).astype(np.float32)}
