"""mlp on the official Python backend API, written the usual way (as in
Triton's examples): one matmul chain and one response per request, in a loop.

The benchmark serves this exact file twice: `backend: "python"` (mlp_python)
and `backend: "rustpy"` (mlp_rustpy_compat, a byte-identical copy).

    OUTPUT = relu(INPUT @ W1 + b1) @ W2 + b2     FP32[512] -> [1024] -> FP32[128]

Weights come from integer formulas (exact in FP32) that rustpy-bench repeats
to check every response (crates/rustpy-bench/src/workload/mlp.rs).
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
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            h = np.maximum(x @ self.w1 + self.b1, 0)
            y = h @ self.w2 + self.b2
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", y)]))
        return responses
