"""Counts its own coroutines running at once on the instance's event loop."""
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

RUNNING = {"now": 0, "peak": 0}


class TritonPythonModel:
    async def execute(self, requests):
        RUNNING["now"] += 1
        RUNNING["peak"] = max(RUNNING["peak"], RUNNING["now"])
        try:
            for _ in range(200):
                if RUNNING["peak"] >= 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            RUNNING["now"] -= 1
        peak = RUNNING["peak"]
        out = pb_utils.Tensor("PEAK", np.array([peak], dtype=np.int32))
        for request in requests:
            request.get_response_sender().send(
                pb_utils.InferenceResponse([out]), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
