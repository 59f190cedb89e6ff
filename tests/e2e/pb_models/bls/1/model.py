"""Business logic scripting (BLS) for the official Python backend."""
import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def describe(resp):
    d = {"has_error": resp.has_error(),
         "outputs": sorted(t.name() for t in resp.output_tensors())}
    if resp.has_error():
        d["code"] = int(resp.error().code())
        d["message"] = resp.error().message()
    return d


def catch(fn):
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)


class TritonPythonModel:
    def initialize(self, args):
        # bls -> "", bls_python -> "_python": sibling models carry the same suffix.
        self.suffix = args["model_name"][len("bls"):]

    def target(self, name):
        return name + self.suffix

    def identity(self, x, **kw):
        return pb_utils.InferenceRequest(
            model_name=self.target("identity"), inputs=[pb_utils.Tensor("IN", x)],
            requested_output_names=["OUT"], **kw)

    async def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            y = x
            info = {"mode": mode}
            if mode == "exec":
                resp = self.identity(x).exec()
                info["response"] = describe(resp)
                y = pb_utils.get_output_tensor_by_name(resp, "OUT").as_numpy() * 2
            elif mode == "async_exec":
                a, b = await asyncio.gather(self.identity(x).async_exec(), self.identity(x + 1).async_exec())
                info["responses"] = [describe(a), describe(b)]
                y = (pb_utils.get_output_tensor_by_name(a, "OUT").as_numpy()
                     + pb_utils.get_output_tensor_by_name(b, "OUT").as_numpy())
            elif mode == "missing_model":
                resp = pb_utils.InferenceRequest(
                    model_name="no_such_model", inputs=[pb_utils.Tensor("IN", x)],
                    requested_output_names=["OUT"]).exec()
                info["response"] = describe(resp)
            elif mode == "error_target":
                resp = pb_utils.InferenceRequest(
                    model_name=self.target("errors"),
                    inputs=[pb_utils.Tensor("MODE", np.array([b"error_code:NOT_FOUND"], dtype=np.object_))],
                    requested_output_names=["OUT"]).exec()
                info["response"] = describe(resp)
            elif mode == "decoupled":
                stream = pb_utils.InferenceRequest(
                    model_name=self.target("decoupled"),
                    inputs=[pb_utils.Tensor("MODE", np.array([b"inline"], dtype=np.object_)),
                            pb_utils.Tensor("N", np.array([3], dtype=np.int32))],
                    requested_output_names=["OUT"]).exec(decoupled=True)
                items = []
                for resp in stream:
                    out = pb_utils.get_output_tensor_by_name(resp, "OUT")
                    items.append([resp.has_error(), None if out is None else out.as_numpy().tolist()])
                info["stream"] = items
            elif mode == "decoupled_as_default":
                # exec() without decoupled=True on a decoupled model.
                resp = pb_utils.InferenceRequest(
                    model_name=self.target("decoupled"),
                    inputs=[pb_utils.Tensor("MODE", np.array([b"inline"], dtype=np.object_)),
                            pb_utils.Tensor("N", np.array([1], dtype=np.int32))],
                    requested_output_names=["OUT"]).exec()
                info["response"] = describe(resp)
            elif mode == "missing_model_decoupled":
                stream = pb_utils.InferenceRequest(
                    model_name="no_such_model", inputs=[pb_utils.Tensor("IN", x)],
                    requested_output_names=["OUT"]).exec(decoupled=True)
                info["stream"] = [describe(r) for r in stream]
            elif mode == "request_fields":
                resp = pb_utils.InferenceRequest(
                    model_name=self.target("request_api"),
                    inputs=[pb_utils.Tensor("IN", np.array([[1, 2]], dtype=np.int32))],
                    requested_output_names=["INFO", "OUT1"], request_id="bls-req",
                    correlation_id=77, parameters={"p_int": 3, "p_str": "s", "p_bool": True}).exec()
                info["response"] = describe(resp)
                seen = json.loads(pb_utils.get_output_tensor_by_name(resp, "INFO").as_numpy().ravel()[0])
                info["seen"] = {k: seen[k] for k in ["request_id", "correlation_id", "parameters",
                                                     "requested_output_names"]}
            elif mode == "constructor_errors":
                info["errors"] = {
                    "float_param": catch(lambda: self.identity(x, parameters={"f": 1.5})),
                    "int_key": catch(lambda: self.identity(x, parameters={1: "a"})),
                    "bad_correlation": catch(lambda: self.identity(x, correlation_id=1.5)),
                }
            else:
                raise ValueError("unknown mode " + mode)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.asarray(y, dtype=np.float32)),
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_)),
            ]))
        return responses
