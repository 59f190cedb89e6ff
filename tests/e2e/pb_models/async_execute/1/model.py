"""An `async def execute` model for the official Python backend."""
import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils


async def square(x):
    await asyncio.sleep(0.01)
    return x * x


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if x.size and x[0] < 0:
                raise ValueError("negative input %s" % x[0])
            y = await asyncio.gather(square(x), square(x + 1))
            info = {"running_loop": asyncio.get_running_loop() is not None}
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", (y[0] + y[1]).astype(np.float32)),
                pb_utils.Tensor("INFO", np.array([json.dumps(info)], dtype=np.object_)),
            ]))
        return responses
