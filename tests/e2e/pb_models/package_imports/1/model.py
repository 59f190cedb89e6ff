"""Imports relative to the model's package and from its directories."""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

import file1
from . import file2
from .file2 import twice


class TritonPythonModel:
    def execute(self, requests):
        from . import file2 as again  # a relative import at call time

        info = {
            "__name__": __name__,
            "__package__": __package__,
            "file1": [file1.NAME, file1.__name__],
            "file2": [file2.NAME, file2.__name__, again is file2],
            "model_dir": os.path.basename(pb_utils.get_model_dir()),
        }
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            info["twice"] = twice(x).tolist()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))]))
        return responses
