"""Where BLS is allowed: not in initialize or finalize, yes in execute and in a
thread that execute starts and joins. What initialize and finalize got is
reported (finalize's through the Logger, read from the server log)."""
import asyncio
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


def catch(fn):
    try:
        return "ok: %r" % (fn(),)
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        # bls_phases_python -> identity_python: siblings carry the same suffix.
        self.identity = "identity" + self.name[len("bls_phases"):]
        self.init = {
            "exec": catch(lambda: self.bls().exec().has_error()),
            "decoupled_exec": catch(lambda: list(self.bls().exec(decoupled=True))),
            "async_exec": catch(lambda: asyncio.run(self.bls_async())),
            "is_model_ready": catch(lambda: pb_utils.is_model_ready(self.identity)),
        }

    def bls(self, x=None):
        x = np.array([1.0], np.float32) if x is None else x
        return pb_utils.InferenceRequest(model_name=self.identity, inputs=[pb_utils.Tensor("IN", x)],
                                         requested_output_names=["OUT"])

    async def bls_async(self):
        return (await self.bls().async_exec()).has_error()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            resp = self.bls(x).exec()
            y = pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy()
            from_thread = {}
            t = threading.Thread(target=lambda: from_thread.update(
                result=catch(lambda: self.bls(x).exec().has_error())))
            t.start()
            t.join()
            info = {"initialize": self.init, "execute": resp.has_error(), "thread": from_thread["result"]}
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", y),
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True).encode()],
                                                 dtype=np.object_))]))
        return responses

    def finalize(self):
        got = catch(lambda: self.bls().exec().has_error())
        pb_utils.Logger.log_info("bls_phases finalize %s: %s" % (self.name, got))
