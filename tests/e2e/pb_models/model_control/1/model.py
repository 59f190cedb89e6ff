"""Model control from a model, for the official Python backend."""
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def catch(fn):
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001
        return {"err": "%s: %s" % (type(e).__name__, e)}


class TritonPythonModel:
    def initialize(self, args):
        self.target = "ctl_target" + args["model_name"][len("model_control"):]

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            info = {"mode": mode}
            if mode == "cycle":
                info["ready_before"] = pb_utils.is_model_ready(self.target)
                info["load"] = catch(lambda: pb_utils.load_model(self.target))
                info["ready_after_load"] = pb_utils.is_model_ready(self.target)
                info["ready_version_1"] = pb_utils.is_model_ready(self.target, "1")
                info["ready_version_9"] = pb_utils.is_model_ready(self.target, "9")
                resp = pb_utils.InferenceRequest(
                    model_name=self.target, inputs=[pb_utils.Tensor("IN", np.array([4.0], dtype=np.float32))],
                    requested_output_names=["OUT"]).exec()
                info["infer"] = pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy().tolist()
                info["unload"] = catch(lambda: pb_utils.unload_model(self.target))
                deadline = time.monotonic() + 10
                while pb_utils.is_model_ready(self.target) and time.monotonic() < deadline:
                    time.sleep(0.05)
                info["ready_after_unload"] = pb_utils.is_model_ready(self.target)
            elif mode == "missing":
                info["load"] = catch(lambda: pb_utils.load_model("no_such_model_anywhere"))
                info["ready"] = catch(lambda: pb_utils.is_model_ready("no_such_model_anywhere"))
            else:
                raise ValueError("unknown mode " + mode)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))]))
        return responses
