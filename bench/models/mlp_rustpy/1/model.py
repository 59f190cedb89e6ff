"""mlp on rustpy's batched API: one predict() per dynamic batch, on a
[batch, 512] array.

    OUTPUT = relu(INPUT @ W1 + b1) @ W2 + b2     FP32[512] -> [1024] -> FP32[128]
"""
import numpy as np


def weights():
    i, j = np.arange(512)[:, None], np.arange(1024)[None, :]
    w1 = ((i * 37 + j * 11) % 61 - 30).astype(np.float32) / np.float32(1024)
    b1 = (np.arange(1024) % 7 - 3).astype(np.float32) / np.float32(64)
    j, k = np.arange(1024)[:, None], np.arange(128)[None, :]
    w2 = ((j * 13 + k * 29) % 53 - 26).astype(np.float32) / np.float32(1024)
    b2 = (np.arange(128) % 5 - 2).astype(np.float32) / np.float32(32)
    return w1, b1, w2, b2


class Model:
    def initialize(self, ctx):
        self.w1, self.b1, self.w2, self.b2 = weights()

    def predict(self, inputs):
        h = np.maximum(inputs["INPUT"] @ self.w1 + self.b1, 0)
        return {"OUTPUT": h @ self.w2 + self.b2}
