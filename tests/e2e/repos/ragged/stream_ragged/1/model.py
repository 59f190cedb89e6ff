import os
import time

import numpy as np


def _mark(line):
    markers = os.environ.get("RUSTPY_TEST_MARKERS")
    if markers:
        with open(os.path.join(markers, "stream_ragged.log"), "a") as f:
            f.write(line + "\n")


class Model:
    def predict(self, inputs, requests):
        steps = inputs["STEPS"][:, 0]
        n = len(requests)
        seen = set()
        how = "exhausted"
        try:
            for step in range(int(steps.max())):
                out = []
                for k, r in enumerate(requests):
                    if r.cancelled and r.id not in seen:
                        seen.add(r.id)
                        _mark("%s:cancelled:%d" % (r.id, step))
                    if step >= steps[k] or r.cancelled:
                        out.append(None)
                        continue
                    if step == steps[k] - 1:
                        r.finish()
                    out.append({"OUT": np.array([[step]], np.int32),
                                "NREQ": np.array([[n]], np.int32)})
                yield out
                time.sleep(0.02)
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            _mark("%s:end:%s" % (",".join(r.id for r in requests), how))
