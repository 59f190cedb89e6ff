import numpy as np


class Model:
    def predict(self, inputs, requests):
        x = inputs["IN"]
        mode = requests[0].parameters.get("mode", "ok")
        if mode == "ok":
            return {"OUT": x}
        if mode == "wrong_name":      # OUT is missing, WRONG_NAME is not in the config
            return {"WRONG_NAME": x}
        if mode == "wrong_dtype":     # int64 where the config says TYPE_FP32
            return {"OUT": x.astype(np.int64)}
        if mode == "wrong_dim":       # twice as many rows as the batch has
            return {"OUT": np.concatenate([x, x])}
        if mode == "not_array":       # not an ndarray at all
            return {"OUT": "definitely not a tensor"}
        if mode == "not_dict":        # predict must return a dict
            return [x]
        raise KeyError(f"unknown mode {mode!r}")
