"""pb_utils.InferenceRequest accessors, written against the official Python backend."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            requested = request.requested_output_names()
            params = request.parameters()
            corr = request.correlation_id()
            sender = request.get_response_sender()
            info = {
                "batch": len(requests),
                "input_names": [t.name() for t in request.inputs()],
                "input_shape": list(x.shape),
                "request_id": request.request_id(),
                "correlation_id": corr,
                "correlation_id_type": type(corr).__name__,
                "flags": request.flags(),
                "timeout": request.timeout(),
                "parameters_type": type(params).__name__,
                "parameters": json.loads(params),
                "requested_output_names": sorted(requested),
                "requested_output_names_type": type(requested).__name__,
                "is_cancelled": request.is_cancelled(),
                "sender_type": type(sender).__name__,
                "same_sender": request.get_response_sender() is sender,
                "sender_is_cancelled": sender.is_cancelled(),
                "missing_input": pb_utils.get_input_tensor_by_name(request, "NOPE") is None,
            }
            request.set_flags(7)
            info["flags_after_set"] = request.flags()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([[json.dumps(info, sort_keys=True)]], dtype=np.object_)),
                pb_utils.Tensor("OUT0", x * 2),
                pb_utils.Tensor("OUT1", x * 3),
            ]))
        return responses
