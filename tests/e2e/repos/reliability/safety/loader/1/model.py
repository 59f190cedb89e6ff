import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.load_model("loaded")
        self.ready = pb_utils.is_model_ready("loaded")

    def execute(self, requests):
        out = pb_utils.Tensor("OUT", np.array([b"loaded ready: %r" % self.ready], dtype=object))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
