"""ragged on the official Python backend: execute() loops over the requests,
one table lookup and mean per request.

INT32 TOKENS [1, n] -> FP32 EMB [1, 16]: the mean of the tokens' rows of a
1024x16 table built from an integer formula (exact in FP32), the same as
crates/rustpy-bench/src/workload/ragged.rs computes for checking.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

VOCAB, DIM = 1024, 16


def table():
    v, d = np.arange(VOCAB)[:, None], np.arange(DIM)[None, :]
    return ((v * 131 + d * 71) % 251 - 125).astype(np.float32) / np.float32(256)


class TritonPythonModel:
    def initialize(self, args):
        self.table = table()

    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
            emb = self.table[tokens % VOCAB].mean(axis=1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMB", emb)]))
        return responses
