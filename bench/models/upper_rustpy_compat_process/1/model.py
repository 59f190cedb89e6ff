"""BYTES upper-casing on the official Python backend API.

Served as upper_python (`backend: "python"`) and, byte-identical, as
upper_rustpy_compat (`backend: "rustpy"`, pb_utils compatibility layer).
TEXT is an object array of `bytes`; UPPER is each element upper-cased.
"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([t.upper() for t in text.reshape(-1)], dtype=np.object_).reshape(text.shape)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("UPPER", upper)]))
        return responses
