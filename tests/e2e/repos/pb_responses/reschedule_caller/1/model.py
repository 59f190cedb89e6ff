import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            answer = pb_utils.InferenceRequest(
                model_name="reschedule_answered",
                inputs=[pb_utils.Tensor("IN", x)],
                requested_output_names=["OUT"],
            ).exec()
            message = answer.error().message() if answer.has_error() else "no error"
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("ERROR", np.array([message.encode()], dtype=np.object_))]))
        return responses
