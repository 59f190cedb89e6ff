"""Model code that pickles, deep-copies, inspects itself and spawns processes,
as it does under the official backend (issue 23): classes of model.py and of
its sibling modules are found by name (`1.model`, `utils`) although every
model keeps its own import context. Two models that both ship `utils.py`
each get their own class back; a reload serves the edited files; a process
spawned from model code (multiprocessing's spawn context) is a Python that
imports `1.model` again by name. In-process and process-isolated (the latter
through the backend-wide default, `--backend-config=rustpy,default-isolation=process`).
"""
import json

import numpy as np
import pytest

from e2e_client import PROTOCOLS, infer

CONFIG = """name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "MODE" data_type: TYPE_STRING dims: [ 1 ] }},
        {{ name: "DATA" data_type: TYPE_STRING dims: [ 1 ] optional: true }} ]
output [ {{ name: "OUT" data_type: TYPE_STRING dims: [ 1 ] }},
         {{ name: "BLOB" data_type: TYPE_STRING dims: [ 1 ] }} ]
"""

UTILS = '''
OWNER = "{name}"


class Thing:
    """A class of a sibling module ({name})."""

    def __init__(self, value):
        self.value = value

    def owner(self):
        return OWNER
'''

MODEL = '''
import concurrent.futures
import copy
import dataclasses
import inspect
import json
import multiprocessing
import os
import pickle
import sys
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

import utils

OWNER = "{name}"


@dataclasses.dataclass
class Point:
    x: int
    y: int

    def owner(self):
        return OWNER


def square(v):
    """Runs in a spawned child: a fresh interpreter that imported this
    module again by its name."""
    return {{"square": v * v, "pid": os.getpid(), "executable": sys.executable,
            "module": __name__, "owner": OWNER, "utils_owner": utils.OWNER,
            "point": Point(v, -v)}}


def describe(obj):
    return {{"type": type(obj).__module__ + "." + type(obj).__qualname__,
            "owner": obj.owner(), "same_class": type(obj) in (Point, utils.Thing)}}


class TritonPythonModel:
    def initialize(self, args):
        # Pickling at load time, as models restoring state in initialize do.
        self.loaded = pickle.loads(pickle.dumps(Point(3, 4)))

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            data = pb_utils.get_input_tensor_by_name(request, "DATA")
            blob = b""
            if mode == "pickle":
                p = pickle.loads(pickle.dumps(Point(1, 2)))
                t = pickle.loads(pickle.dumps(utils.Thing(5)))
                # Pure-Python pickle (joblib's) looks modules up the same way.
                t2 = pickle._loads(pickle._dumps(utils.Thing(6)))
                out = {{"point": describe(p), "equal": p == Point(1, 2), "thing": describe(t),
                       "thing_value": t.value, "pure": describe(t2), "at_load": describe(self.loaded)}}
                blob = pickle.dumps(utils.Thing(7))
            elif mode == "unpickle":
                obj = pickle.loads(data.as_numpy()[0])
                out = describe(obj)
            elif mode == "thread":
                # A pool thread has no model frame on its stack: it belongs to
                # the model whose code started it.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    obj = pool.submit(pickle.loads, pickle.dumps(Point(8, 9))).result()
                out = describe(obj)
            elif mode == "deepcopy":
                p, t = copy.deepcopy(Point(1, 2)), copy.deepcopy([utils.Thing(3)])[0]
                out = {{"point": describe(p), "thing": describe(t), "value": t.value}}
            elif mode == "inspect":
                out = {{"point": inspect.getsource(Point).splitlines()[1].strip(),
                       "thing": inspect.getsource(utils.Thing).splitlines()[1].strip(),
                       "file": inspect.getsourcefile(Point),
                       "module_file": inspect.getmodule(utils.Thing).__file__}}
            elif mode in ("spawn", "forkserver"):
                ctx = multiprocessing.get_context(mode)
                with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    got = pool.submit(square, 7).result(timeout=240)
                point = got.pop("point")
                got.update({{"parent_pid": os.getpid(), "point": describe(point),
                            "point_xy": [point.x, point.y]}})
                out = got
            else:
                raise ValueError(mode)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([json.dumps(out).encode()], dtype=np.object_)),
                pb_utils.Tensor("BLOB", np.array([blob], dtype=np.object_))]))
        return responses
'''


def add_model(repo, name):
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(CONFIG.format(name=name))
    (d / "1" / "model.py").write_text(MODEL.format(name=name))
    (d / "1" / "utils.py").write_text(UTILS.format(name=name))


def call(server, model, mode, data=None, protocol="http"):
    arrays = {"MODE": np.array([mode.encode()], dtype=np.object_)}
    if data is not None:
        arrays["DATA"] = np.array([data], dtype=np.object_)
    out = infer(server, protocol, model, arrays)
    return json.loads(out.as_numpy("OUT")[0]), out.as_numpy("BLOB")[0]


MODES = {"in_process": [], "process": ["--backend-config=rustpy,default-isolation=process"]}


@pytest.fixture(params=list(MODES))
def two_models(request, tmp_path, triton_factory):
    repo = tmp_path / "repo"
    add_model(repo, "pk_a")
    add_model(repo, "pk_b")
    s = triton_factory(repo, model_control_mode="explicit", load_models=["pk_a", "pk_b"],
                       wait_models=["pk_a", "pk_b"], extra_args=MODES[request.param])
    if request.param == "process":
        assert "runs process-isolated" in s.log_text()
    return s, repo


def test_classes_of_model_and_sibling_modules_pickle_and_deepcopy(two_models):
    s, _ = two_models
    for model in ("pk_a", "pk_b"):
        for protocol in PROTOCOLS:
            out, _ = call(s, model, "pickle", protocol=protocol)
            assert out["point"] == {"type": "1.model.Point", "owner": model, "same_class": True}
            assert out["equal"] is True
            assert out["thing"] == {"type": "utils.Thing", "owner": model, "same_class": True}
            assert out["thing_value"] == 5
            assert out["pure"]["same_class"] and out["pure"]["owner"] == model
            assert out["at_load"] == out["point"]
        out, _ = call(s, model, "deepcopy")
        assert out == {"point": {"type": "1.model.Point", "owner": model, "same_class": True},
                       "thing": {"type": "utils.Thing", "owner": model, "same_class": True},
                       "value": 3}
        out, _ = call(s, model, "thread")
        assert out == {"type": "1.model.Point", "owner": model, "same_class": True}


def test_two_models_with_the_same_module_names_each_unpickle_their_own(two_models):
    s, _ = two_models
    _, blob_a = call(s, "pk_a", "pickle")
    _, blob_b = call(s, "pk_b", "pickle")
    # `utils.Thing` pickled by either model: each model gets its own class
    # back, as each would in its own stub process upstream.
    for blob in (blob_a, blob_b):
        for model in ("pk_a", "pk_b"):
            out, _ = call(s, model, "unpickle", blob)
            assert out == {"type": "utils.Thing", "owner": model, "same_class": True}


def test_inspect_getsource_of_model_classes(two_models):
    s, repo = two_models
    for model in ("pk_a", "pk_b"):
        out, _ = call(s, model, "inspect")
        assert out["point"] == "class Point:"
        assert out["thing"] == '"""A class of a sibling module (%s)."""' % model
        assert out["file"] == str(repo / model / "1" / "model.py")
        assert out["module_file"] == str(repo / model / "1" / "utils.py")


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_spawned_process_imports_the_model_by_name(two_models, start_method):
    s, _ = two_models
    for model in ("pk_a", "pk_b"):
        out, _ = call(s, model, start_method)
        assert out["square"] == 49
        assert out["pid"] != out["parent_pid"]
        # A Python interpreter, not the server (or worker) binary.
        assert "python" in out["executable"].rsplit("/", 1)[-1], out["executable"]
        assert out["module"] == "1.model"
        assert out["owner"] == model and out["utils_owner"] == model
        # The child's Point came back as the parent's own class.
        assert out["point"] == {"type": "1.model.Point", "owner": model, "same_class": True}
        assert out["point_xy"] == [7, -7]


def test_a_reload_serves_the_edited_files_by_name_too(two_models):
    s, repo = two_models
    utils = repo / "pk_a" / "1" / "utils.py"
    utils.write_text(utils.read_text().replace('OWNER = "pk_a"', 'OWNER = "pk_a edited"')
                     .replace("A class of a sibling module", "An edited class"))
    assert s.load_model("pk_a")[0] == 200
    out, blob = call(s, "pk_a", "pickle")
    assert out["thing"] == {"type": "utils.Thing", "owner": "pk_a edited", "same_class": True}
    out, _ = call(s, "pk_a", "inspect")
    assert out["thing"] == '"""An edited class (pk_a)."""'
    # The other model is untouched.
    out, _ = call(s, "pk_b", "unpickle", blob)
    assert out == {"type": "utils.Thing", "owner": "pk_b", "same_class": True}
