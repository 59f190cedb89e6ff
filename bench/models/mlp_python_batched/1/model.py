"""mlp on the official Python backend, hand-batched: the inputs of all the
requests Triton hands to one execute() are concatenated in user code, run
through one matmul chain, and the rows split back into one response per
request. The best the official backend can do for this model.

    OUTPUT = relu(INPUT @ W1 + b1) @ W2 + b2     FP32[512] -> [1024] -> FP32[128]
"""
import numpy as np

import triton_python_backend_utils as pb_utils


def weights():
    i, j = np.arange(512)[:, None], np.arange(1024)[None, :]
    w1 = ((i * 37 + j * 11) % 61 - 30).astype(np.float32) / np.float32(1024)
    b1 = (np.arange(1024) % 7 - 3).astype(np.float32) / np.float32(64)
    j, k = np.arange(1024)[:, None], np.arange(128)[None, :]
    w2 = ((j * 13 + k * 29) % 53 - 26).astype(np.float32) / np.float32(1024)
    b2 = (np.arange(128) % 5 - 2).astype(np.float32) / np.float32(32)
    return w1, b1, w2, b2


class TritonPythonModel:
    def initialize(self, args):
        self.w1, self.b1, self.w2, self.b2 = weights()

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        x = np.concatenate(xs) if len(xs) > 1 else xs[0]
        h = np.maximum(x @ self.w1 + self.b1, 0)
        y = h @ self.w2 + self.b2
        responses, row = [], 0
        for part in xs:
            n = part.shape[0]
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT", y[row:row + n])]))
            row += n
        return responses
