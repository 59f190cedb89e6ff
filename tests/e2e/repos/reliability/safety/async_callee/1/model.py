import asyncio
import os

import numpy as np
import triton_python_backend_utils as pb_utils

RUNNING = {"now": 0, "max": 0}


class TritonPythonModel:
    async def execute(self, requests):
        RUNNING["now"] += 1
        RUNNING["max"] = max(RUNNING["max"], RUNNING["now"])
        tag = int(pb_utils.get_input_tensor_by_name(requests[0], "TAG").as_numpy()[0])
        with open(os.path.join(os.environ["RUSTPY_TEST_MARKERS"], "callee_%d" % tag), "w"):
            pass
        for _ in range(200):
            if RUNNING["max"] >= 4:
                break
            await asyncio.sleep(0.05)
        out = pb_utils.Tensor("MAX", np.array([RUNNING["max"]], dtype=np.int32))
        for request in requests:
            request.get_response_sender().send(
                pb_utils.InferenceResponse([out]), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        RUNNING["now"] -= 1
        return None
