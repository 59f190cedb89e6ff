"""pb_utils, default model: the response goes out through the sender with
Y = the request's input array (a view of the worker's shared input region),
then execute overwrites that array with 7s and returns None. The client must
get the bytes it sent: the send waits until the backend took them, so it
cannot be held back for the batch's Done like other responses of a default
model sent by the batch's own thread."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            request.get_response_sender().send(
                pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            x[...] = 7
        return None
