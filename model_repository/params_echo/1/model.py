"""params_echo: per-request KServe `parameters`.

Clients can attach parameters to a request (tritonclient: `parameters={"scale": 2}`).
They arrive as `requests[i].parameters`, a dict of str/int/float/bool values.

`split_by_parameters = True` tells rustpy never to batch requests whose
parameters differ, so every request in one predict() call shares the same
"scale" and we can read it from the first one.
"""
import json

import numpy as np


class Model:
    split_by_parameters = True

    def predict(self, inputs, requests):
        scale = float(requests[0].parameters.get("scale", 1))
        x = inputs["INPUT"]

        params, ids = [], []
        for req in requests:                   # in batch order
            echo = json.dumps(req.parameters, sort_keys=True)
            params += [echo] * req.batch_size  # one row per input row
            ids += [req.id] * req.batch_size

        return {
            "OUTPUT": (x * scale).astype(np.float32),
            "PARAMS": np.array(params, dtype=object).reshape(-1, 1),
            "REQUEST_ID": np.array(ids, dtype=object).reshape(-1, 1),
        }
