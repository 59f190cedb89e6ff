import os
import time


def touch(name):
    with open(os.path.join(os.environ["RUSTPY_TEST_MARKERS"], name), "w"):
        pass


class Model:
    def initialize(self, ctx):
        touch("slow_init_started")
        release = os.path.join(os.environ["RUSTPY_TEST_MARKERS"], "release_slow_init")
        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        touch("slow_init_done")

    def predict(self, inputs):
        return {"Y": inputs["X"]}
