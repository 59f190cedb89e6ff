"""Doubles X. A request whose X holds a negative number is poison: the
whole call raises, as a model failing on one bad input among a batch does.
With the configuration parameter `always_fail` (always_fails), every call
raises. poison_control, poison_process and always_fails run this file too
(tests/e2e/test_poison_requests.py copies it into them)."""
import numpy as np


class Model:
    def initialize(self, ctx):
        self.always = "always_fail" in ctx.config.get("parameters", {})

    def predict(self, inputs):
        x = inputs["X"]
        if self.always or np.any(x < 0):
            raise ValueError("poison row: X must not be negative (call of %d rows)" % x.shape[0])
        return {"Y": x * 2}
