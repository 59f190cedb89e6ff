"""Inputs reach predict as views of the worker's shared input region.

Per row: Y = X; VIEW = 1 if X is a view whose base is the shared region's
view base (`ViewBase`, holding the mapping; not a copy); MAPS = how many mappings of the input region this worker
has now (one, unless kept views pin older ones); KEPT_OK = 1 if every kept
array still holds the bytes it held when it was kept (its checksum).
Request parameters: `keep` keeps the call's X (and a copy to compare with),
`drop` forgets everything kept, before MAPS is read."""
import numpy as np


def input_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "rustpy-input" in line)


class Model:
    split_by_parameters = True

    def initialize(self, ctx):
        self.kept = []

    def predict(self, inputs, requests):
        x = inputs["X"]
        params = requests[0].parameters
        if "drop" in params:
            self.kept.clear()
        if "keep" in params:
            self.kept.append((x, x.copy()))
        n = x.shape[0]
        view = int(type(x.base).__name__ == "ViewBase" and not x.flags.owndata)
        ok = int(all(np.array_equal(a, b) for a, b in self.kept))
        col = lambda v: np.full((n, 1), v, np.int32)  # noqa: E731
        return {"Y": x, "VIEW": col(view), "MAPS": col(input_maps()), "KEPT_OK": col(ok)}
