import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # Executions so far, by request id.
        self.steps = {}

    def execute(self, requests):
        for request in requests:
            total = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            key = request.request_id()
            step = self.steps.get(key, 0) + 1
            sender = request.get_response_sender()
            response = pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([total - step], np.int32)),
                pb_utils.Tensor("STEP", np.array([step], np.int32)),
                pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
            ])
            if step >= total:
                self.steps.pop(key, None)
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                self.steps[key] = step
                # Before execute returns, as upstream requires for decoupled models.
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                sender.send(response)
        return None
