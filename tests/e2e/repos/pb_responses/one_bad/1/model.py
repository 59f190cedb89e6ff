import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        sizes = [len(requests)] * len(requests)
        for request in requests:
            v = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0, 0])
            # A lone surrogate (e.g. from errors="surrogateescape") has no UTF-8 form.
            text = "bad\udcff" if v == 0 else json.dumps({"value": v, "batch": len(requests)})
            out = pb_utils.Tensor("OUT", np.array([[text]], dtype=object))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
