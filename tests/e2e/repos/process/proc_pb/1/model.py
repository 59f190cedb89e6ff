"""A model written for the official Python backend, run in a worker process."""
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        pb_utils.Logger.log_info(f"proc_pb initialized in pid {os.getpid()}")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if x.size == 1 and x[0] == -99:
                # BLS is not routed back through the server yet: a clear error.
                bls = pb_utils.InferenceRequest(
                    model_name="steady", requested_output_names=["Y"],
                    inputs=[pb_utils.Tensor("X", np.array([[1]], dtype=np.int32))])
                resp = bls.exec()
                if resp.has_error():
                    raise pb_utils.TritonModelException(resp.error().message())
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUT", (x + 1).astype(np.float32)),
                pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int64)),
            ]))
        return responses

    def finalize(self):
        pass
