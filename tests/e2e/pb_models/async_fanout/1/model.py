"""Several async executes of one decoupled instance, each awaiting BLS."""
import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        # async_fanout -> "", async_fanout_python -> "_python"
        self.peer = "async_peers" + self.name[len("async_fanout"):]

    async def forward(self, request):
        tag = pb_utils.get_input_tensor_by_name(request, "TAG")
        sender = request.get_response_sender()
        if int(tag.as_numpy()[0]) < 0:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            raise ValueError("negative tag in %s" % self.name)
        bls = pb_utils.InferenceRequest(model_name=self.peer, inputs=[tag],
                                        requested_output_names=["PEAK"])
        for response in await bls.async_exec(decoupled=True):
            peak = pb_utils.get_output_tensor_by_name(response, "PEAK")
            if peak is not None:
                sender.send(pb_utils.InferenceResponse([peak]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def execute(self, requests):
        await asyncio.gather(*(self.forward(r) for r in requests))
        return None
