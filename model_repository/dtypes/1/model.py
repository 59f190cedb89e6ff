"""dtypes: identity over every numeric Triton data type.

rustpy maps Triton types to numpy dtypes (TYPE_BOOL -> np.bool_, TYPE_FP16 ->
np.float16, ...). This model checks the mapping on the way in (raising a
TypeError that names the input if it is wrong) and returns each input unchanged
as OUT_<T>, which checks the mapping on the way out.
"""
import numpy as np

EXPECTED = {
    "BOOL": np.bool_,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class Model:
    def predict(self, inputs):
        outputs = {}
        for name, array in inputs.items():
            triton_type = name[len("IN_"):]
            if array.dtype != EXPECTED[triton_type]:
                raise TypeError(f"{name} arrived as {array.dtype}, "
                                f"expected {np.dtype(EXPECTED[triton_type])}")
            outputs["OUT_" + triton_type] = array
        return outputs
