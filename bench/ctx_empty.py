"""16 MiB UINT8 -> Y = X ^ 0x5A in process mode: a new numpy array (copied into the output
region by the worker) vs the same computed into `ctx.empty` (written in the region, sent from
there). Server-side time per request from Triton's statistics (compute input/infer/output),
the two models alternating in one server, over HTTP.

    .rustpy-deps/venv/bin/python bench/ctx_empty.py [ROUNDS]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from e2e_client import infer
from tritonharness import TritonServer

CFG = """
name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_UINT8 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "rustpy.isolation" value {{ string_value: "process" }} }}
"""
MODEL = """
import numpy as np
class Model:
    def initialize(self, ctx):
        self.ctx = ctx
    def predict(self, inputs):
        x = inputs["X"]
        {body}
        return {{"Y": y}}
"""
BODIES = {"xor_new": "y = np.bitwise_xor(x, np.uint8(0x5A))",
          "xor_empty": "y = np.bitwise_xor(x, np.uint8(0x5A), out=self.ctx.empty(x.shape, x.dtype))"}

def stats(s, m):
    st = s.model_stats(m)["inference_stats"]
    return {k: (int(st[k]["count"]), int(st[k]["ns"])) for k in ("success", "compute_input", "compute_infer", "compute_output")}

with tempfile.TemporaryDirectory() as tmp:
    repo = Path(tmp)
    for name, body in BODIES.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(CFG.format(name=name))
        (repo / name / "1" / "model.py").write_text(MODEL.format(body=body))
    s = TritonServer([repo], name="emptybench").start()
    try:
        x = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8)
        for m in BODIES:
            for _ in range(3):
                infer(s, "http", m, {"X": x})
        base = {m: stats(s, m) for m in BODIES}
        load0 = open("/proc/loadavg").read().split()[:3]
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
        for _ in range(n):
            for m in BODIES:
                r = infer(s, "http", m, {"X": x})
        assert np.array_equal(r.as_numpy("Y"), x ^ 0x5A)
        load1 = open("/proc/loadavg").read().split()[:3]
        for m in BODIES:
            now = stats(s, m)
            d = {k: (now[k][1] - base[m][k][1]) / max(1, now[k][0] - base[m][k][0]) / 1e6 for k in now}
            total = d["compute_input"] + d["compute_infer"] + d["compute_output"]
            print(f"{m:10s} per request ms: input {d['compute_input']:.2f} infer {d['compute_infer']:.2f} output {d['compute_output']:.2f} total {total:.2f}")
        print("load", load0, "->", load1)
    finally:
        s.stop()
