import os
import time

import numpy as np


class Model:
    """Sleeps MS milliseconds; MS < 0 holds predict until the test creates
    the file `release` in $RUSTPY_TEST_MARKERS (then removes it). Every call
    appends "start N MS" and "end N" to sleepy.log there, so a test can wait
    for a request to be really in predict, or really done, on the event."""

    def initialize(self, ctx):
        self.calls = 0
        self.markers = os.environ.get("RUSTPY_TEST_MARKERS")

    def mark(self, line):
        if self.markers:
            with open(os.path.join(self.markers, "sleepy.log"), "a") as f:
                f.write(line + "\n")

    def predict(self, inputs):
        self.calls += 1
        ms = int(inputs["MS"][0])
        self.mark("start %d %d" % (self.calls, ms))
        if ms >= 0:
            time.sleep(ms / 1000.0)
        else:
            release = os.path.join(self.markers, "release")
            deadline = time.monotonic() + 120
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.remove(release)
        self.mark("end %d" % self.calls)
        return {"CALLS": np.array([self.calls], dtype=np.int64)}
