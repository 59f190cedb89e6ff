import os
import time

import numpy as np


class Model:
    def predict(self, inputs):
        count = int(inputs["COUNT"][0])
        sent, how = 0, "exhausted"
        try:
            for i in range(count):
                yield {"OUT": np.array([i], dtype=np.int32)}
                sent += 1
                time.sleep(0.05)
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            markers = os.environ.get("RUSTPY_TEST_MARKERS")
            if markers:
                with open(os.path.join(markers, "slow_stream.log"), "a") as f:
                    f.write("%d:%d:%s\n" % (count, sent, how))
