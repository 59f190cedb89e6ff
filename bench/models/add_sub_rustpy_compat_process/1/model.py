"""add_sub on the official Python backend API (TritonPythonModel + pb_utils).

The benchmark serves this exact file twice: with `backend: "python"`
(add_sub_python) and with `backend: "rustpy"` through rustpy's pb_utils
compatibility layer (add_sub_rustpy_compat, a byte-identical copy that
ci/bench checks). It is written the way Triton's own add_sub example is:
one response per request, in a loop.

    OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1   (FP32 [4])
"""
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.dtypes = [
            pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, name)["data_type"])
            for name in ("OUTPUT0", "OUTPUT1")
        ]

    def execute(self, requests):
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out0 = pb_utils.Tensor("OUTPUT0", (in0 + in1).astype(self.dtypes[0]))
            out1 = pb_utils.Tensor("OUTPUT1", (in0 - in1).astype(self.dtypes[1]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1]))
        return responses
