"""Error paths of execute() for the official Python backend (MODE selects one)."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def ok_response(value=1):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([value], dtype=np.int32))])


def info_response(info):
    return pb_utils.InferenceResponse([
        pb_utils.Tensor("OUT", np.array([0], dtype=np.int32)),
        pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_)),
    ])


def catch(fn, message=True):
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e) if message else type(e).__name__


class TritonPythonModel:
    def execute(self, requests):
        modes = [pb_utils.get_input_tensor_by_name(r, "MODE").as_numpy()[0].decode() for r in requests]
        mode = modes[0]
        if mode == "ok":
            return [ok_response() for _ in requests]
        if mode == "raise":
            raise ValueError("boom from execute")
        if mode == "raise_model_exception":
            raise pb_utils.TritonModelException("model exception from execute")
        if mode == "raise_multiline":
            raise RuntimeError("line one\nline two")
        if mode == "wrong_count_more":
            return [ok_response() for _ in requests] + [ok_response()]
        if mode == "wrong_count_empty":
            return []
        if mode == "none":
            return None
        if mode == "tuple":
            return tuple(ok_response() for _ in requests)
        if mode == "dict":
            return {"a": ok_response()}
        if mode == "bad_item":
            return ["not a response" for _ in requests]
        if mode == "none_item":
            return [None for _ in requests]
        if mode.startswith("error_code:"):
            code = getattr(pb_utils.TritonError, mode.split(":", 1)[1])
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("custom error", code))
                    for _ in requests]
        if mode == "error_default":
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("default code error"))
                    for _ in requests]
        if mode == "error_with_outputs":
            return [pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUT", np.array([5], dtype=np.int32))],
                error=pb_utils.TritonError("error wins", pb_utils.TritonError.INVALID_ARG))
                for _ in requests]
        if mode == "error_multiline":
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("first\nsecond"))
                    for _ in requests]
        if mode == "unknown_output":
            return [pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([1], dtype=np.int32)),
                pb_utils.Tensor("NOT_IN_CONFIG", np.array([2], dtype=np.int32))]) for _ in requests]
        if mode == "wrong_dtype":
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1.5], dtype=np.float32))])
                    for _ in requests]
        if mode == "wrong_shape":
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1, 2, 3], dtype=np.int32))])
                    for _ in requests]
        if mode == "no_outputs":
            return [pb_utils.InferenceResponse() for _ in requests]
        # The response sender of a default (non-decoupled) model.
        if mode == "sender_final":
            for r in requests:
                r.get_response_sender().send(ok_response(7), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        if mode == "sender_no_final":
            for r in requests:
                r.get_response_sender().send(ok_response(8))
            return None
        if mode == "sender_no_final_then_final":
            for r in requests:
                r.get_response_sender().send(ok_response(8))
                r.get_response_sender().send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        if mode == "sender_twice":
            for r in requests:
                r.get_response_sender().send(ok_response(1))
                r.get_response_sender().send(ok_response(2), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        if mode == "sender_final_only":
            for r in requests:
                r.get_response_sender().send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        if mode == "sender_and_return":
            for r in requests:
                r.get_response_sender().send(ok_response(3), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return [ok_response(4) for _ in requests]
        if mode == "sender_caught":
            infos = []
            for r in requests:
                s = r.get_response_sender()
                info = {
                    "bad_flags": catch(lambda: s.send(ok_response(), flags=2)),
                    "none_nonfinal": catch(lambda: s.send(None, 0)),
                    "not_a_response": catch(lambda: s.send("nope", flags=0), message=False),
                    "final_only_first": catch(
                        lambda: s.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)),
                }
                infos.append(info)
            return [info_response(i) for i in infos]
        if mode == "sender_error_response":
            for r in requests:
                r.get_response_sender().send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError("sent error", pb_utils.TritonError.UNAVAILABLE)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
        raise ValueError("unknown mode " + mode)
