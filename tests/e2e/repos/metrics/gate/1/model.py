"""Y = X * scale. A request with parameter hold=true keeps its call (and so
the only instance) busy, with <model dir>/holding present, until <model
dir>/release exists, so the requests sent meanwhile queue up and reach the
next execution as one batch. Calls split by parameters (tag, scale)."""
import os
import time

import numpy as np


class Model:
    split_by_parameters = True

    def initialize(self, ctx):
        self.release = os.path.join(ctx.model_dir, "release")
        self.holding = os.path.join(ctx.model_dir, "holding")

    def predict(self, inputs, requests):
        if any(r.parameters["hold"] for r in requests):
            open(self.holding, "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.01)
            os.remove(self.release)
            os.remove(self.holding)
        scale = requests[0].parameters["scale"]
        return {"Y": inputs["X"] * scale}
