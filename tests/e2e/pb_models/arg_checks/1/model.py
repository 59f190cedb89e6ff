"""Which exception each wrong argument of pb_utils' constructors raises (the
types only: the messages are the implementations' own)."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def raises(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - recording what the API raises
        return type(e).__name__
    return None


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            t = [pb_utils.Tensor("T", x)]
            req = dict(inputs=t, model_name="m", requested_output_names=["O"])

            def request_with(**changes):
                return lambda: pb_utils.InferenceRequest(**{**req, **changes})

            info = {
                "request": {
                    "inputs_none_element": raises(request_with(inputs=[None])),
                    "inputs_none": raises(request_with(inputs=None)),
                    "model_name_none": raises(request_with(model_name=None)),
                    "outputs_none_element": raises(request_with(requested_output_names=[None])),
                    "outputs_none": raises(request_with(requested_output_names=None)),
                    "correlation_id_none": raises(request_with(correlation_id=None)),
                    "request_id_none": raises(request_with(request_id=None)),
                    "model_version_none": raises(request_with(model_version=None)),
                    "flags_none": raises(request_with(flags=None)),
                    "empty_lists": raises(request_with(inputs=[], requested_output_names=[])),
                    "correlation_int": pb_utils.InferenceRequest(**req, correlation_id=5).correlation_id(),
                    "correlation_str": pb_utils.InferenceRequest(**req, correlation_id="c-5").correlation_id(),
                    "correlation_default": pb_utils.InferenceRequest(**req).correlation_id(),
                },
                "response": {
                    "none_element": raises(lambda: pb_utils.InferenceResponse(output_tensors=[None])),
                    "none": raises(lambda: pb_utils.InferenceResponse(output_tensors=None)),
                    "empty": raises(lambda: pb_utils.InferenceResponse(output_tensors=[])),
                    "positional": raises(lambda: pb_utils.InferenceResponse(t)),
                },
                "tensor": {
                    "name_none": raises(lambda: pb_utils.Tensor(None, x)),
                    "array_none": raises(lambda: pb_utils.Tensor("O", None)),
                    "dlpack_none": raises(lambda: pb_utils.Tensor.from_dlpack("O", None)),
                    "dlpack_empty_name": raises(lambda: pb_utils.Tensor.from_dlpack("", None)),
                    "empty_name_array_none": raises(lambda: pb_utils.Tensor("", None)),
                },
                "logger": {
                    "level_none": raises(lambda: pb_utils.Logger.log("x", None)),
                    "level_int": raises(lambda: pb_utils.Logger.log("x", 1)),
                    "info_none": raises(lambda: pb_utils.Logger.log_info(None)),
                    "warn_none": raises(lambda: pb_utils.Logger.log_warn(None)),
                    "error_none": raises(lambda: pb_utils.Logger.log_error(None)),
                    "verbose_none": raises(lambda: pb_utils.Logger.log_verbose(None)),
                    "default_level": raises(lambda: pb_utils.Logger.log("arg_checks: level left out")),
                    "named_level": raises(lambda: pb_utils.Logger.log("arg_checks: named", pb_utils.Logger.INFO)),
                },
            }
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor(
                "INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_))]))
        return out
