import numpy as np

import vhelper

VERSION = 2


class Model:
    def initialize(self, ctx):
        assert ctx.model_version == VERSION, (ctx.model_version, VERSION)

    def predict(self, inputs):
        n = inputs["X"].shape[0]
        return {
            "VERSION": np.full((n, 1), VERSION, dtype=np.int32),
            "TAG": np.array([[vhelper.TAG.encode()]] * n, dtype=object),
        }
