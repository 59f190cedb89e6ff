import numpy as np


class Model:
    def predict(self, inputs):
        import lazy_helper

        return {"OUT": np.array([lazy_helper.VALUE.encode()], dtype=object)}
