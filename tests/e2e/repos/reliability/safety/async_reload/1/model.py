import asyncio
import os

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.markers = os.environ["RUSTPY_TEST_MARKERS"]

    def touch(self, name):
        with open(os.path.join(self.markers, name), "w"):
            pass

    async def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            tag = int(x[0])
            self.touch("started_%d" % tag)
            for _ in range(600):
                if os.path.exists(os.path.join(self.markers, "release_%d" % tag)):
                    break
                await asyncio.sleep(0.1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses

    def finalize(self):
        self.touch("finalized")
