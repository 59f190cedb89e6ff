"""Streams 8 responses, Y = X ^ i for i in 0..7, all computed into the same
array from ctx.empty: each response must carry its own bytes, not those the
model wrote into the array for the next one."""
import numpy as np


class Model:
    def initialize(self, ctx):
        self.ctx = ctx

    def predict(self, inputs):
        x = inputs["X"]
        y = self.ctx.empty(x.shape, x.dtype)
        for i in range(8):
            np.bitwise_xor(x, np.uint8(i), out=y)
            yield {"Y": y}
