"""Misbehaves on demand, in a worker process (see ../../README.md)."""
import ctypes
import os
import resource

import numpy as np


class Model:
    def initialize(self, ctx):
        if os.path.exists(os.path.join(ctx.model_dir, "crash_on_start")):
            os._exit(9)
        self.pid = os.getpid()

    def predict(self, inputs):
        x, mode = inputs["X"], inputs["MODE"]
        for m in mode[:, 0].tolist():
            if m == 1:
                ctypes.string_at(0)  # reads address 0: SIGSEGV
            elif m == 2:
                os._exit(7)
            elif m == 3:
                os.abort()
            elif m == 4:
                while True:
                    pass
            elif m == 5:
                raise ValueError("mode 5 asked for an exception")
            elif m == 6:
                # Allocates past a 512 MiB address-space limit: Python's
                # MemoryError. The hog goes before the error leaves (its
                # traceback keeps this frame alive) and the limit after, so
                # the worker goes on as before.
                soft, hard = resource.getrlimit(resource.RLIMIT_AS)
                resource.setrlimit(resource.RLIMIT_AS, (512 << 20, hard))
                hog = []
                try:
                    while True:
                        hog.append(bytearray(64 << 20))
                except MemoryError:
                    hog.clear()
                    raise
                finally:
                    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        pid = np.full((x.shape[0], 1), self.pid, dtype=np.int64)
        return {"Y": x * 2, "PID": pid}
