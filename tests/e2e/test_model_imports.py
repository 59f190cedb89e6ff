"""The import context each model gets (issue 17, point 1), rustpy only: the
same as upstream's (model.py as `<version>.model`, `from . import file2`,
`import file1`, `importlib.import_module("model")`, `unittest.main("model")`;
test_differential compares those with the official backend), yet private:
two models shipping the same file names each see their own, and a reload
reads edited files again.
"""
import json

import numpy as np

from e2e_client import infer
from pb_models.harness import render_model

IN = {"IN": np.array([1, 2], dtype=np.float32)}


def info(server, model, protocol="http"):
    return json.loads(infer(server, protocol, model, IN).as_numpy("INFO")[0])


def test_two_models_same_file_names_stay_apart_and_reload_rereads(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    for name in ("pi_a", "pi_b"):
        render_model("package_imports", repo / name, name, "rustpy")
    for name in ("si_a", "si_b"):
        render_model("self_import", repo / name, name, "rustpy")
    (repo / "pi_b" / "file1.py").write_text('NAME = "file1 of pi_b"\n')
    (repo / "pi_b" / "1" / "file2.py").write_text(
        'NAME = "file2 of pi_b"\n\n\ndef twice(x):\n    return 20 * x\n')
    (repo / "si_b" / "1" / "utils.py").write_text('WHO = "utils of si_b"\n')
    models = ["pi_a", "pi_b", "si_a", "si_b"]
    s = triton_factory(repo, model_control_mode="explicit", load_models=models, wait_models=models)

    for protocol in ("http", "grpc"):
        a, b = info(s, "pi_a", protocol), info(s, "pi_b", protocol)
        assert a["__name__"] == b["__name__"] == "1.model"
        assert a["file1"] == ["file1 (model directory)", "file1"]
        assert a["file2"] == ["file2 (version directory)", "1.file2", True]
        assert a["twice"] == [2.0, 4.0]
        assert b["file1"] == ["file1 of pi_b", "file1"]
        assert b["file2"] == ["file2 of pi_b", "1.file2", True]
        assert b["twice"] == [20.0, 40.0]

        a, b = info(s, "si_a", protocol), info(s, "si_b", protocol)
        assert a["import_module_model"] == b["import_module_model"] == [True, True]
        assert a["import_module_utils"] == "self_import utils"
        assert b["import_module_utils"] == "utils of si_b"
        # Each model's unittest.main("model") ran its own tests against its own utils.
        assert (a["tests_run"], a["tests_ok"]) == (2, True)
        assert (b["tests_run"], b["tests_ok"]) == (2, False)

    # A reload reads the edited relative import again; the other model keeps its own.
    (repo / "pi_a" / "1" / "file2.py").write_text(
        'NAME = "file2 edited"\n\n\ndef twice(x):\n    return 3 * x\n')
    assert s.load_model("pi_a")[0] == 200
    a = info(s, "pi_a")
    assert a["file2"] == ["file2 edited", "1.file2", True] and a["twice"] == [3.0, 6.0]
    assert info(s, "pi_b")["file2"] == ["file2 of pi_b", "1.file2", True]
