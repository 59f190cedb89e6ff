"""Outputs written into arrays from `ctx.empty` (batched API).

Per row: Y = X ^ 0x5A, computed straight into `ctx.empty(x.shape, x.dtype)`;
KEPT = the Y of the last call that had parameter `keep` (the model keeps that
array), or Y when none is kept or its shape differs; PLACED = 1 when Y's
memory is the worker's output region (its base is the placed range), else 0;
OUTMAP = the bytes of memory this worker's shared output region holds now
(a sparse file: pages hold memory once written)."""
import os

import numpy as np


def output_map_size():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:rustpy-output"):
                return os.stat(f"/proc/self/fd/{fd}").st_blocks * 512
        except OSError:
            continue
    return -1


class Model:
    split_by_parameters = True

    def initialize(self, ctx):
        self.ctx = ctx
        self.kept = None

    def predict(self, inputs, requests):
        x = inputs["X"]
        y = np.bitwise_xor(x, np.uint8(0x5A), out=self.ctx.empty(x.shape, x.dtype))
        kept = self.kept if self.kept is not None and self.kept.shape == x.shape else y
        if "keep" in requests[0].parameters:
            self.kept = y
        n = x.shape[0]
        placed = type(y.base).__name__ == "PlacedBase"
        return {
            "Y": y,
            "KEPT": kept,
            "PLACED": np.full((n, 1), int(placed), np.int32),
            "OUTMAP": np.full((n, 1), output_map_size(), np.int64),
        }
