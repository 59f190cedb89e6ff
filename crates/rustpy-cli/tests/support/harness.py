# Runs a scaffolded model.py the way rustpy's batched API does (see
# docs/python-api.md) and checks its outputs against config.pbtxt's shapes.
# argv: MODEL_DIR TASK MAX_BATCH_SIZE
import importlib.util
import inspect
import json
import os
import sys

import numpy as np

model_dir, task, max_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("scaffolded", os.path.join(model_dir, "1", "model.py"))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


class Ctx:
    model_name = os.path.basename(model_dir)
    model_version = 1
    instance_name = "test_0"
    instance_kind = "CPU"
    device_id = 0
    model_dir = model_dir
    config = {"max_batch_size": max_batch}
    parameters = {}
    # rustpy's ctx.labels: the output's label_filename, else labels.txt.
    labels_path = os.path.join(model_dir, "labels.txt")
    labels = [l.strip() for l in open(labels_path) if l.strip()] if os.path.isfile(labels_path) else []


# rustpy fills each request's parameters with the declared defaults.
with open(os.path.join(model_dir, "request_parameters.json")) as f:
    DEFAULTS = {p["name"]: p["default"] for p in json.load(f)["parameters"] if "default" in p}


class Req:
    def __init__(self, i):
        self.id = str(i)
        self.correlation_id = 0
        self.parameters = dict(DEFAULTS)
        self.batch_size = 1
        self.requested_outputs = []


model = module.Model()
model.initialize(Ctx())
rng = np.random.default_rng(0)
batch = 3 if max_batch > 0 else 1
lead = (batch,) if max_batch > 0 else ()


def image():
    return rng.integers(0, 256, size=lead + (32, 48, 3), dtype=np.uint8)


def text(values):
    arr = np.array([v.encode() for v in values[:batch]], dtype=np.object_)
    return arr.reshape(lead + (1,))


inputs = {
    "image-classification": lambda: {"IMAGE": image()},
    "object-detection": lambda: {"IMAGE": image()},
    "text-embedding": lambda: {"TEXT": text(["hello world", "rust and python", ""])},
    "text-generation": lambda: {"PROMPT": text(["once upon a time", "hello", "x y z"])},
    "passthrough": lambda: {"INPUT0": rng.random(lead + (7,), dtype=np.float32)},
}[task]()

result = model.predict(inputs, [Req(i) for i in range(batch)])
responses = list(result) if inspect.isgenerator(result) else [result]
assert responses, "no response"
shapes = []
for outputs in responses:
    assert isinstance(outputs, dict), type(outputs)
    for name, value in outputs.items():
        assert isinstance(value, np.ndarray), (name, type(value))
        if max_batch > 0:
            assert value.shape[0] == batch, (name, value.shape)
    shapes.append({k: [str(v.dtype), list(v.shape)] for k, v in outputs.items()})

# Determinism: a second run gives the same outputs.
again = model.predict(inputs, [Req(i) for i in range(batch)])
again = list(again) if inspect.isgenerator(again) else [again]
for a, b in zip(responses, again):
    for k in a:
        assert np.array_equal(a[k], b[k]), k
if hasattr(model, "finalize"):
    model.finalize()
print(json.dumps({"responses": len(responses), "shapes": shapes[0]}))
