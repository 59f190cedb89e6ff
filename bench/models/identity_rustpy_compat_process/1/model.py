"""Large-tensor identity on the official Python backend API.

Served as identity_python (`backend: "python"`) and, byte-identical, as
identity_rustpy_compat (`backend: "rustpy"`, pb_utils compatibility layer).
OUTPUT0 = INPUT0 (UINT8 [-1]); the cost measured is moving the bytes.
"""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
