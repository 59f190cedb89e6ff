import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        identity = "identity" + args["model_name"][len("bls_init_fails"):]
        pb_utils.InferenceRequest(model_name=identity,
                                  inputs=[pb_utils.Tensor("IN", np.array([1.0], np.float32))],
                                  requested_output_names=["OUT"]).exec()

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")])
                for r in requests]
