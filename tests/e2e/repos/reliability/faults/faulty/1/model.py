"""Every way user code can go wrong in predict, selected per request by the
"mode" parameter. "ok" answers Y = X, Z = rows."""
import sys

import numpy as np


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("__str__ of the exception itself raised")


def recurse(n):
    return recurse(n + 1) + 1


def good(x):
    return {"Y": x, "Z": np.full((x.shape[0], 1), x.shape[0], dtype=np.int32)}


class Model:
    def predict(self, inputs, requests):
        x = inputs["X"]
        mode = requests[0].parameters.get("mode", "ok")
        n = x.shape[0]
        if mode == "ok":
            return good(x)
        # ---- exceptions, including BaseExceptions that are not Exceptions
        if mode == "raise":
            raise ValueError("deliberate failure in predict")
        if mode == "sys_exit":
            sys.exit(3)
        if mode == "sys_exit_none":
            sys.exit()
        if mode == "keyboard_interrupt":
            raise KeyboardInterrupt("pretend Ctrl-C inside predict")
        if mode == "generator_exit":
            raise GeneratorExit()
        if mode == "recursion":
            return recurse(0)
        if mode == "memory_error":
            raise MemoryError("pretend out of memory")
        if mode == "unprintable":
            raise Unprintable()
        if mode == "nul_in_message":
            raise RuntimeError("before\x00after")
        if mode == "huge_message":
            raise RuntimeError("x" * 200_000 + " END")
        # ---- wrong return types
        if mode == "return_none":
            return None
        if mode == "return_list":
            return [x]
        if mode == "return_tuple":
            return (x, x)
        if mode == "return_str":
            return "Y"
        if mode == "non_str_key":
            return {1: x}
        if mode == "value_is_list":
            return {"Y": x.tolist(), "Z": [[n]] * n}
        if mode == "value_is_str":
            return {"Y": "not a tensor", "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "value_is_none":
            return {"Y": None, "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "object_array":
            return {"Y": x.astype(object), "Z": np.full((n, 1), n, dtype=np.int32)}
        # ---- wrong shapes / dtypes / names
        if mode == "wrong_dtype":
            return {"Y": x.astype(np.float64), "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "wrong_rows":
            return {"Y": np.concatenate([x, x]), "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "wrong_dims":
            return {"Y": np.zeros((n, 3), np.float32), "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "wrong_rank":
            return {"Y": x.reshape(-1), "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "scalar":
            return {"Y": np.float32(1.0), "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "unknown_output":
            return dict(good(x), EXTRA=x)
        if mode == "missing_output":
            return {"Y": x}
        # ---- unusual but valid arrays: must be answered correctly
        if mode == "non_contiguous":
            wide = np.repeat(x, 2, axis=1)
            return {"Y": wide[:, ::2], "Z": np.full((n, 1), n, dtype=np.int32)}
        if mode == "fortran_order":
            return {"Y": np.asfortranarray(x), "Z": np.full((n, 1), n, dtype=np.int32).T.copy().T}
        if mode == "readonly":
            y = x.copy()
            y.setflags(write=False)
            return {"Y": y, "Z": np.full((n, 1), n, dtype=np.int32)}
        raise KeyError("unknown mode %r" % mode)
