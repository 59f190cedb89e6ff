"""One request = one unit of work of a given kind (~30 ms on an idle core):

cpu    pure-Python arithmetic: holds the GIL throughout
sleep  time.sleep: releases the GIL (like waiting on I/O or a remote call)
numpy  np.sort of 400k float64: numpy releases the GIL while sorting

Y = [start, end, cpu, pid]: perf_counter_ns() at entry and exit, the CPU time
this thread spent in between (thread_time_ns) and the process that ran it, so
the test can measure, on the server's own clock, how many predicts were in
flight at once, how many cores they kept busy, and in which processes they
ran (the server's own in-process; a worker per instance in process mode).
"""
import os
import time

import numpy as np

CPU_ITERS = 300_000


class Model:
    def initialize(self, ctx):
        self.work = ctx.parameters["work"]
        self.data = np.random.default_rng(0).standard_normal(400_000)

    def predict(self, inputs):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        if self.work == "cpu":
            s = 0
            for i in range(CPU_ITERS):
                s += i * i & 0xFF
        elif self.work == "sleep":
            time.sleep(0.03)
        else:
            np.sort(self.data)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        return {"Y": np.array([t0, t1, c1 - c0, os.getpid()], dtype=np.int64)}
