"""pb_utils.Tensor API, written against Triton's official Python backend."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def probe(fn, message=True):
    """Runs fn; returns its (JSON-able) result or the exception it raised."""
    try:
        return {"ok": fn()}
    except Exception as e:  # noqa: BLE001 - recording what the API raises
        out = {"err": type(e).__name__}
        if message:
            out["msg"] = str(e)
        return out


def describe(t):
    a = t.as_numpy()
    d = {
        "name": t.name(),
        # Not t.triton_dtype(): it raises TypeError in the official backend
        # (2.51: no Python conversion for TRITONSERVER_DataType).
        "numpy_to_triton_type": pb_utils.numpy_to_triton_type(a.dtype),
        "shape": list(t.shape()),
        "shape_type": type(t.shape()).__name__,
        "is_cpu": t.is_cpu(),
        "numpy_type": type(a).__name__,
        "numpy_dtype": str(a.dtype),
        "numpy_shape": list(a.shape),
        "c_contiguous": bool(a.flags["C_CONTIGUOUS"]),
        "same_array_each_call": t.as_numpy() is a,
    }
    if a.dtype == np.object_:
        d["element_types"] = sorted({type(x).__name__ for x in a.ravel()})
        d["values"] = [x.decode("utf-8", "replace") for x in a.ravel()]
    return d


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            f32 = pb_utils.get_input_tensor_by_name(request, "F32")
            strs = pb_utils.get_input_tensor_by_name(request, "STR")
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            h = pb_utils.get_input_tensor_by_name(request, "H").as_numpy()
            u64 = pb_utils.get_input_tensor_by_name(request, "U64").as_numpy()
            x = f32.as_numpy()

            info = {"inputs": [describe(t) for t in request.inputs()]}

            # Non-contiguous arrays are made contiguous by Tensor().
            t_out = pb_utils.Tensor("T", x.T)
            info["transposed"] = {
                "input_c_contiguous": bool(x.T.flags["C_CONTIGUOUS"]) if x.ndim == 2 and x.shape[0] > 1 and x.shape[1] > 1 else None,
                "tensor_c_contiguous": bool(t_out.as_numpy().flags["C_CONTIGUOUS"]),
                "shape": list(t_out.shape()),
            }
            contiguous = np.ascontiguousarray(x)
            info["keeps_contiguous_array"] = pb_utils.Tensor("K", contiguous).as_numpy() is contiguous
            slice_out = pb_utils.Tensor("SLICE", x[:, ::2])
            fortran_out = pb_utils.Tensor("FORTRAN", np.asfortranarray(x * 2))

            # DLPack: the capsule of to_dlpack(), an object with __dlpack__ (a
            # pb_utils.Tensor), and numpy consuming a Tensor. (Not a numpy
            # array's own capsule: with numpy 1.24 that crashes the official
            # backend's stub, which renames the capsule numpy then frees.)
            dl_capsule = pb_utils.Tensor.from_dlpack("DL_CAPSULE", f32.to_dlpack())
            dl_numpy = pb_utils.Tensor("DL_NUMPY", np.from_dlpack(pb_utils.Tensor("tmp1", x + 1)))
            dl_tensor = pb_utils.Tensor.from_dlpack("DL_TENSOR", pb_utils.Tensor("tmp", x * 3))
            dl_int8 = pb_utils.Tensor.from_dlpack("DL_INT8", pb_utils.Tensor("tmp8", np.arange(4, dtype=np.int8)))
            info["dlpack"] = {
                "capsule_type": type(f32.to_dlpack()).__name__,
                "device": [int(v) for v in f32.__dlpack_device__()],
                "from_capsule": describe(dl_capsule),
                "from_numpy": describe(dl_numpy),
                "numpy_from_tensor": np.from_dlpack(f32).tolist(),
                "int8": describe(dl_int8),
                "bytes_to_dlpack": probe(lambda: strs.to_dlpack()),
                "not_a_tensor": probe(lambda: pb_utils.Tensor.from_dlpack("NT", [1, 2]).shape()),
                "empty_name": probe(lambda: pb_utils.Tensor.from_dlpack("", np.zeros(2)).shape()),
            }

            # BYTES: object arrays of bytes / str / other objects, 'S' arrays.
            # (Not a numpy.bytes_ element: the official backend sends str() of
            # it, "b'...'", where rustpy sends its bytes; a known divergence.)
            mixed = np.array([b"raw\x00bytes", "str\u00e9", 42, 2.5, None], dtype=np.object_)
            str_out = pb_utils.Tensor("STR_OUT", mixed)
            words = np.array([s for s in strs.as_numpy()] * 2, dtype=np.object_)
            str_2d = pb_utils.Tensor("STR_2D", words.reshape(2, -1))
            str_t = pb_utils.Tensor("STR_T", words.reshape(2, -1).T)
            s_out = pb_utils.Tensor("S_OUT", np.array([b"ab\x00", b"c", b""], dtype="S3"))
            info["bytes"] = {
                "mixed": {"shape": str_out.shape(),
                          "numpy_dtype": str(str_out.as_numpy().dtype)},
                "s_dtype": {"numpy_dtype": str(s_out.as_numpy().dtype)},
            }

            # Construction errors.
            info["errors"] = {
                "empty_name": probe(lambda: pb_utils.Tensor("", x).name()),
                "list": probe(lambda: pb_utils.Tensor("L", [1, 2]).shape(), message=False),
                "unicode_array": probe(lambda: pb_utils.Tensor("U", np.array(["a", "bc"])).shape()),
                "complex": probe(lambda: pb_utils.Tensor("C", np.array([1 + 2j])).shape()),
                "name_not_str": probe(lambda: pb_utils.Tensor(3, x).name(), message=False),
            }
            info["repr_has_name"] = "Tensor" in repr(f32)

            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("INFO", np.array([json.dumps(info, sort_keys=True)], dtype=np.object_)),
                t_out, slice_out, fortran_out, dl_capsule, dl_numpy, dl_tensor, dl_int8,
                str_out, str_2d, str_t, s_out,
                pb_utils.Tensor("B_OUT", np.logical_not(b)),
                pb_utils.Tensor("H_OUT", (h * 2).astype(np.float16)),
                pb_utils.Tensor("U64_OUT", u64 + np.uint64(1)),
                pb_utils.Tensor("EMPTY", np.zeros((0,), dtype=np.float32)),
            ]))
        return responses
