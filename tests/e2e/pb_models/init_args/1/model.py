"""initialize(args) and sibling-module imports, for the official Python backend."""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

import helper
from common import COMMON_VALUE


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.calls = 0

    def execute(self, requests):
        self.calls += 1
        args = self.args
        info = {
            "arg_types": sorted({type(k).__name__ + ":" + type(v).__name__ for k, v in args.items()}),
            "args_type": type(args).__name__,
            "keys": sorted(args),
            "values": {k: v for k, v in args.items() if k != "model_config"},
            "model_config": json.loads(args["model_config"]),
            "model_repository_is_model_dir": os.path.isfile(
                os.path.join(args["model_repository"], "common.py")),
            "helper": [helper.HELPER_NAME, helper.__name__, os.path.basename(helper.__file__)],
            "common": COMMON_VALUE,
            "model_dir_matches": pb_utils.get_model_dir() == args["model_repository"],
        }
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            n = x.shape[0]
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([[json.dumps(info, sort_keys=True)]] * n, dtype=np.object_)),
                pb_utils.Tensor("OUT", helper.scale(x) + COMMON_VALUE),
            ]))
        return responses
