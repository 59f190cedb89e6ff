"""Mean of a fixed embedding table over each request's tokens, per request."""
import numpy as np
import triton_python_backend_utils as pb_utils

TABLE = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS").as_numpy()
            emb = TABLE[tokens % 1000].mean(axis=1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMB", emb)]))
        return responses
