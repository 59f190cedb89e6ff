# This file is broken on purpose (see config.pbtxt).
import numpy as np


class Model:
    # the missing colon on the next line (line 7) is the error
    def predict(self, inputs)
        return {"OUT": inputs["IN"]}
