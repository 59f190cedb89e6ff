"""The pb_utils form of `poison_batched`: one execute() for the whole
batch, raising when any request's X is negative."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() for r in requests]
        if any(np.any(x < 0) for x in xs):
            raise ValueError("poison row: X must not be negative (execute of %d requests)" % len(requests))
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]) for x in xs]
