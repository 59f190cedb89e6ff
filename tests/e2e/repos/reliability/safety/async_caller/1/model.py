import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def forward(self, request):
        tag = pb_utils.get_input_tensor_by_name(request, "TAG")
        bls = pb_utils.InferenceRequest(model_name="async_callee", inputs=[tag],
                                        requested_output_names=["MAX"])
        responses = await bls.async_exec(decoupled=True)
        sender = request.get_response_sender()
        for response in responses:
            out = pb_utils.get_output_tensor_by_name(response, "MAX")
            if out is not None:
                sender.send(pb_utils.InferenceResponse([out]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def execute(self, requests):
        await asyncio.gather(*(self.forward(r) for r in requests))
        return None
