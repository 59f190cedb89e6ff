"""pb_utils helper functions, written against the official Python backend."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def probe(fn, message=True):
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001
        out = {"err": type(e).__name__}
        if message:
            out["msg"] = str(e)
        return out


def type_name(t):
    return None if t is None else getattr(t, "__name__", repr(t))


TYPE_STRINGS = ["TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16",
                "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16", "TYPE_BYTES", "FP32"]

NUMPY_TYPES = {
    "np.bool_": np.bool_, "bool": bool, "np.uint8": np.uint8, "np.uint16": np.uint16,
    "np.uint32": np.uint32, "np.uint64": np.uint64, "np.int8": np.int8, "np.int16": np.int16,
    "np.int32": np.int32, "np.int64": np.int64, "int": int, "np.float16": np.float16,
    "np.float32": np.float32, "np.float64": np.float64, "float": float,
    "np.object_": np.object_, "object": object, "np.bytes_": np.bytes_, "bytes": bytes,
    "np.str_": np.str_, "str": str, "dtype(float32)": np.dtype("float32"),
    "dtype(bool)": np.dtype(bool), "dtype(object)": np.dtype(object), "dtype(S3)": np.dtype("S3"),
    "dtype(U3)": np.dtype("U3"), "np.complex64": np.complex64,
}


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        pb_utils.Logger.log_info("pb_models helpers initialize " + self.model_name)

    def execute(self, requests):
        cfg = self.model_config
        logger = pb_utils.Logger
        logger.log("pb_models log default " + self.model_name)
        logger.log("pb_models log info " + self.model_name, logger.INFO)
        logger.log("pb_models log warning " + self.model_name, logger.WARNING)
        logger.log("pb_models log error " + self.model_name, logger.ERROR)
        logger.log("pb_models log verbose " + self.model_name, logger.VERBOSE)
        logger.log_info("pb_models log_info " + self.model_name)
        logger.log_warn("pb_models log_warn " + self.model_name)
        logger.log_error("pb_models log_error " + self.model_name)
        logger.log_verbose("pb_models log_verbose " + self.model_name)

        serialized = {}
        arrays = {
            "object": np.array([b"a", "b\u00e9", 3, b"", np.bytes_(b"npb")], dtype=np.object_),
            "object_2d": np.array([[b"x", b"yy"], [b"zzz", b""]], dtype=np.object_),
            "object_T": np.array([[b"x", b"yy"], [b"zzz", b""]], dtype=np.object_).T,
            "S": np.array([b"ab\x00", b"c"], dtype="S3"),
            "empty": np.array([], dtype=np.object_),
            "float": np.array([1.0], dtype=np.float32),
        }
        for key, arr in arrays.items():
            def ser(arr=arr):
                s = pb_utils.serialize_byte_tensor(arr)
                if isinstance(s, (bytes, bytearray)):
                    back = pb_utils.deserialize_bytes_tensor(s)
                    return {"type": type(s).__name__, "hex": bytes(s).hex(),
                            "back": [v.hex() for v in back], "back_dtype": str(back.dtype)}
                return {"type": type(s).__name__, "repr": repr(s)}
            serialized[key] = probe(ser)
        encoded = b"\x02\x00\x00\x00hi\x00\x00\x00\x00\x01\x00\x00\x00!"
        deser = {
            "bytes": [v.hex() for v in pb_utils.deserialize_bytes_tensor(encoded)],
            "uint8_array": [v.hex() for v in pb_utils.deserialize_bytes_tensor(
                np.frombuffer(encoded, dtype=np.uint8))],
            "types": sorted({type(v).__name__ for v in pb_utils.deserialize_bytes_tensor(encoded)}),
        }

        codes = {name: int(getattr(pb_utils.TritonError, name)) for name in
                 ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE",
                  "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"]}
        err = pb_utils.TritonError("boom")
        err2 = pb_utils.TritonError("nf", pb_utils.TritonError.NOT_FOUND)
        err3 = pb_utils.TritonError(message="kw", code=pb_utils.TritonError.UNAVAILABLE)
        t = pb_utils.Tensor("X", np.array([1, 2], dtype=np.int32))
        ok_resp = pb_utils.InferenceResponse(output_tensors=[t])
        err_resp = pb_utils.InferenceResponse(error=err2)
        pos_resp = pb_utils.InferenceResponse([t], err)
        empty_resp = pb_utils.InferenceResponse()

        info = {
            "codes": codes,
            "error": {
                "default_code": int(err.code()), "message": err.message(),
                "explicit_code": int(err2.code()), "kw": [err3.message(), int(err3.code())],
                "none_message": probe(lambda: pb_utils.TritonError(None).message(), message=False),
                "model_exception_is_exception": issubclass(pb_utils.TritonModelException, Exception),
            },
            "response": {
                "ok": [ok_resp.has_error(), ok_resp.error() is None,
                       [x.name() for x in ok_resp.output_tensors()]],
                "err": [err_resp.has_error(), err_resp.error().message(), int(err_resp.error().code()),
                        len(err_resp.output_tensors())],
                "positional": [pos_resp.has_error(), len(pos_resp.output_tensors())],
                "empty": [empty_resp.has_error(), len(empty_resp.output_tensors())],
                "get_output_tensor_by_name": [
                    pb_utils.get_output_tensor_by_name(ok_resp, "X").as_numpy().tolist(),
                    pb_utils.get_output_tensor_by_name(ok_resp, "Y") is None],
                "bad_error_type": probe(lambda: pb_utils.InferenceResponse(error="x").has_error(),
                                        message=False),
            },
            "constants": {
                name: int(getattr(pb_utils, name)) for name in [
                    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START", "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
                    "TRITONSERVER_RESPONSE_COMPLETE_FINAL", "TRITONSERVER_REQUEST_RELEASE_ALL",
                    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE", "TRITONSERVER_MEMORY_CPU",
                    "TRITONSERVER_MEMORY_GPU"]
            },
            "log_levels": [int(logger.INFO), int(logger.WARNING), int(logger.ERROR), int(logger.VERBOSE)],
            "metric_kinds": [int(pb_utils.MetricFamily.COUNTER), int(pb_utils.MetricFamily.GAUGE),
                             int(pb_utils.MetricFamily.HISTOGRAM)],
            "config": {
                "input_IN": pb_utils.get_input_config_by_name(cfg, "IN"),
                "input_missing": pb_utils.get_input_config_by_name(cfg, "NOPE"),
                "output_OUT": pb_utils.get_output_config_by_name(cfg, "OUT"),
                "output_missing": pb_utils.get_output_config_by_name(cfg, "NOPE"),
                "decoupled": pb_utils.using_decoupled_model_transaction_policy(cfg),
                "decoupled_empty": pb_utils.using_decoupled_model_transaction_policy({}),
                "decoupled_true": pb_utils.using_decoupled_model_transaction_policy(
                    {"model_transaction_policy": {"decoupled": True}}),
                "parameters": cfg.get("parameters"),
                "max_batch_size": cfg.get("max_batch_size"),
            },
            "triton_string_to_numpy": {
                s: probe(lambda s=s: type_name(pb_utils.triton_string_to_numpy(s)), message=False)
                for s in TYPE_STRINGS
            },
            "numpy_to_triton_type": {
                k: probe(lambda v=v: pb_utils.numpy_to_triton_type(v)) for k, v in NUMPY_TYPES.items()
            },
            "triton_to_numpy_type": {
                str(code): type_name(pb_utils.triton_to_numpy_type(code)) for code in range(16)
            },
            "TRITON_STRING_TO_NUMPY": sorted(
                (k, type_name(v)) for k, v in pb_utils.TRITON_STRING_TO_NUMPY.items()),
            "serialize": serialized,
            "deserialize": deser,
            "model_dir": pb_utils.get_model_dir(),
            "public_names": sorted(n for n in [
                "Tensor", "InferenceRequest", "InferenceResponse", "TritonError", "TritonModelException",
                "Logger", "MetricFamily", "ModelConfig", "PreferredMemory", "load_model",
                "unload_model", "is_model_ready", "get_model_dir", "get_input_tensor_by_name",
                "get_output_tensor_by_name", "get_input_config_by_name", "get_output_config_by_name",
                "using_decoupled_model_transaction_policy", "triton_to_numpy_type",
                "numpy_to_triton_type", "triton_string_to_numpy", "serialize_byte_tensor",
                "deserialize_bytes_tensor", "TRITON_STRING_TO_NUMPY"] if hasattr(pb_utils, n)),
        }
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_)),
                pb_utils.Tensor("OUT", x + 1),
            ]))
        return responses
