import json
import sys

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        mode = json.loads(requests[0].parameters()).get("mode", "ok")
        if mode == "raise":
            raise ValueError("pb_faulty raised on purpose")
        if mode == "sys_exit":
            sys.exit(4)
        if mode == "not_list":
            return "not a list"
        if mode == "wrong_count":
            return []
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]))
        return out
