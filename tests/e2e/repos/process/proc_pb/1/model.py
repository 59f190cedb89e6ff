"""A model written for the official Python backend, run in a worker process.

IN == [-99] makes a BLS call to the in-process model `steady` and asks
whether it is ready: OUT = [steady's Y, is_model_ready]. Every request
increments the counter `proc_pb_requests_total` (a custom metric)."""
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        pb_utils.Logger.log_info(f"proc_pb initialized in pid {os.getpid()}")
        # The family object must outlive its metrics (upstream refuses a
        # metric whose MetricFamily object was deleted).
        self.family = pb_utils.MetricFamily(name="proc_pb_requests_total",
                                            description="requests seen by proc_pb",
                                            kind=pb_utils.MetricFamily.COUNTER)
        self.requests = self.family.Metric(labels={"model": self.name})

    def execute(self, requests):
        responses = []
        for request in requests:
            self.requests.increment(1)
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if x.size == 1 and x[0] == -99:
                bls = pb_utils.InferenceRequest(
                    model_name="steady", requested_output_names=["Y"],
                    inputs=[pb_utils.Tensor("X", np.array([[21]], dtype=np.int32))])
                resp = bls.exec()
                if resp.has_error():
                    raise pb_utils.TritonModelException(resp.error().message())
                y = pb_utils.get_output_tensor_by_name(resp, "Y").as_numpy()
                ready = pb_utils.is_model_ready("steady")
                x = np.array([y[0, 0], float(ready)], dtype=np.float32) - 1
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUT", (x + 1).astype(np.float32)),
                pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int64)),
            ]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info(f"proc_pb finalized in pid {os.getpid()}")
