"""Response sender of a default model: which combinations answer, which fail."""
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def response(x, how):
    return pb_utils.InferenceResponse([
        pb_utils.Tensor("OUT", x),
        pb_utils.Tensor("INFO", np.array([[json.dumps({"how": how}).encode()]], dtype=np.object_))])


class TritonPythonModel:
    def initialize(self, args):
        self.thread_errors = []

    def later(self, fn):
        def run():
            time.sleep(0.2)  # after execute returned
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.thread_errors.append("%s: %s" % (type(e).__name__, e))
        threading.Thread(target=run, daemon=True).start()

    def execute(self, requests):
        out = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0][0].decode()
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            returned = None
            if mode == "on_return":
                returned = response(x, "on_return")
            elif mode == "thread_errors":
                returned = pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUT", x),
                    pb_utils.Tensor("INFO", np.array([[json.dumps(self.thread_errors).encode()]],
                                                     dtype=np.object_))])
            else:
                sender = request.get_response_sender()
                if mode == "pre_return":
                    sender.send(response(x, "pre_return"))
                    sender.send(flags=FINAL)
                elif mode == "pre_return_final":
                    sender.send(response(x, "pre_return_final"), flags=FINAL)
                elif mode == "post_return":
                    def post(sender=sender, x=x):
                        sender.send(response(x, "post_return"))
                        sender.send(flags=FINAL)
                    self.later(post)
                elif mode == "zero_pre_return":
                    sender.send(flags=FINAL)
                elif mode == "two_pre_return":
                    sender.send(response(x, "first"))
                    sender.send(response(x, "second"))
                elif mode == "pre_and_on_return":
                    sender.send(response(x, "pre"))
                    sender.send(flags=FINAL)
                    returned = response(x, "on_return")
                elif mode == "on_and_post_return":
                    returned = response(x, "on_return")
                    self.later(lambda sender=sender, x=x: sender.send(response(x, "post")))
                elif mode == "taken_unused":
                    pass  # the sender is dropped unanswered
            out.append(returned)
        return out
