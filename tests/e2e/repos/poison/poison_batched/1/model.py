"""Doubles X. A request whose X holds a negative number is poison: the
whole call raises, as a model failing on one bad input among a batch does.
With the configuration parameter `always_fail` (always_fails), every call
raises; with `crash_on_poison` (poison_crash, process-isolated) a poison
call ends the worker process instead of raising. poison_control, poison_process and always_fails run this file too
(tests/e2e/test_poison_requests.py copies it into them)."""
import os

import numpy as np


class Model:
    def initialize(self, ctx):
        parameters = ctx.config.get("parameters", {})
        self.always = "always_fail" in parameters
        self.crash = "crash_on_poison" in parameters

    def predict(self, inputs):
        x = inputs["X"]
        if self.crash and np.any(x < 0):
            os._exit(3)
        if self.always or np.any(x < 0):
            raise ValueError("poison row: X must not be negative (call of %d rows)" % x.shape[0])
        return {"Y": x * 2}
