import threading

import numpy as np


class Model:
    def initialize(self, ctx):
        box = {}

        def work():
            import late_helper  # first imported here, on another thread

            box["value"] = late_helper.VALUE

        t = threading.Thread(target=work)
        t.start()
        t.join(20)
        if t.is_alive():
            raise RuntimeError("the thread importing a sibling module did not finish within 20 s")
        self.value = box["value"]

    def predict(self, inputs):
        return {"OUT": np.array([self.value.encode()], dtype=object)}
