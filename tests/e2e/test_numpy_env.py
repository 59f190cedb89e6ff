"""`rustpy env` with a real numpy-dependent stack (onnxruntime + onnx wheels from
PyPI, downloaded by ci/install.sh into $RUSTPY_DEPS/wheelhouse and installed
offline here).

The serving interpreter (Debian's python3.11) has numpy 1.24, and the server
imports it before a `rustpy,site-packages=` directory goes on sys.path. So:
- `rustpy env` installs onnx/onnxruntime and their dependencies but no numpy
  (the interpreter's is kept), and the model that builds an ONNX graph in code
  and runs it with onnxruntime loads and answers when served;
- requirements that need another numpy stop `rustpy env`, naming the fixed one;
- a directory installed the naive way (`pip install --target`: numpy 2 beside
  onnx built against it) is flagged by `rustpy check --site-packages`, and
  served, the model indeed fails to import onnx.
"""
import subprocess

import numpy as np
import pytest

from test_dependencies import check_json, run_cli
from tritonharness import deps_dir

WHEELS = deps_dir() / "wheelhouse"
PYTHON = "/usr/bin/python3.11"

MODEL = '''
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


class Model:
    def initialize(self, args):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
        w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
        graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "scale", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def predict(self, inputs, requests):
        (y,) = self.session.run(None, {"x": inputs["X"]})
        return {"Y": y}
'''


def write_onnx_model(repo, requirements):
    d = repo / "scale"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text('''name: "scale"
backend: "rustpy"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
''')
    (d / "1" / "model.py").write_text(MODEL)
    (d / "requirements.txt").write_text(requirements)
    return d


def wheelhouse(name):
    path = WHEELS / name
    if not (WHEELS / ".complete").is_file():
        pytest.fail(f"{WHEELS} missing: run ci/install.sh", pytrace=False)
    return path


def interpreter_numpy():
    return subprocess.run([PYTHON, "-I", "-c", "import numpy; print(numpy.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def scale(server, rows):
    import tritonclient.http as httpclient
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return x, server.http_client().infer("scale", [inp]).as_numpy("Y")


def test_env_installs_onnx_without_a_second_numpy_and_the_model_serves(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    write_onnx_model(repo, "onnxruntime==1.19.2\nonnx==1.16.2\n")
    target = tmp_path / "site"
    r = run_cli(["env", str(repo), "--target", str(target), "--", "--no-index",
                 "--find-links", str(wheelhouse("numpy1"))], check=0)
    installed = {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
    assert {"onnx", "onnxruntime", "protobuf"} <= installed, installed
    assert "numpy" not in installed and not (target / "numpy").exists(), installed
    assert f"numpy=={interpreter_numpy()}" in r.stderr, r.stderr
    # The check finds nothing wrong with it.
    diags = check_json(repo, "--site-packages", str(target))
    assert not [d for d in diags if d["code"].startswith(("site-packages", "requirements"))], diags

    server = triton_factory(repo, extra_args=[f"--backend-config=rustpy,site-packages={target}"],
                            name="onnx-env")
    x, y = scale(server, 3)
    np.testing.assert_array_equal(y, x * np.array([1, 2, 3, 4], np.float32))


def test_env_stops_when_requirements_need_another_numpy(tmp_path):
    repo = tmp_path / "repo"
    write_onnx_model(repo, "onnx==1.23.2\nml_dtypes==0.7.0\n")   # ml_dtypes 0.7 needs numpy >= 2
    target = tmp_path / "site"
    r = run_cli(["env", str(repo), "--target", str(target), "--", "--no-index",
                 "--find-links", str(wheelhouse("numpy2"))], check=1)
    assert "cannot be met with the packages the serving Python" in r.stderr, r.stderr
    assert f"numpy=={interpreter_numpy()}" in r.stderr, r.stderr
    assert not any(target.glob("*.dist-info")), "nothing may be installed"


def test_check_flags_a_package_built_against_another_numpy(tmp_path, triton_factory):
    """What `pip install --target` alone does: numpy 2 and onnx built against it."""
    repo = tmp_path / "repo"
    write_onnx_model(repo, "onnx\nonnxruntime\n")
    bad = tmp_path / "naive"
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(bad),
                    "--no-index", "--find-links", str(wheelhouse("numpy2")), "onnx==1.23.2",
                    "onnxruntime==1.32.0"], check=True, capture_output=True)
    diags = check_json(repo, "--site-packages", str(bad), rc=1)
    codes = {d["code"] for d in diags}
    assert "site-packages.numpy-shadowed" in codes, diags
    abi = [d for d in diags if d["code"] == "site-packages.numpy-abi"]
    assert any(d["message"].startswith("onnx 1.23.2 (import onnx)") for d in abi), abi
    assert all("C-API" in d["message"] for d in abi), abi
    # And it is right: served with that directory, the model cannot import onnx.
    server = triton_factory(repo, extra_args=[f"--backend-config=rustpy,site-packages={bad}"],
                            exit_on_error=False, wait_models=[], name="onnx-naive")
    assert not server.model_ready("scale")
    assert "C-API version" in server.log_text(), server.log_text()[-3000:]
