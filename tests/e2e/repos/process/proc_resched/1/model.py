import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.steps = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            total = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            key = request.request_id()
            step = self.steps.get(key, 0) + 1
            if step >= total:
                self.steps.pop(key, None)
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("STEPS", np.array([step], np.int32)),
                    pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
                ]))
            else:
                self.steps[key] = step
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                responses.append(None)
        return responses
