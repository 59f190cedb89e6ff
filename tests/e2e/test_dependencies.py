"""Model dependencies (issue 13): requirements.txt checked across models and against the
serving interpreter, installed with `rustpy env --target DIR`, put on sys.path by
--backend-config=rustpy,site-packages=DIR; EXECUTION_ENV_PATH needs process isolation.

The installed package is a wheel built here (nothing reaches a package index).
"""
import base64
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np

from tritonharness import clean_env
from test_checkpoints import cli

PYTHON = os.environ.get("RUSTPY_PYTHON", "/usr/bin/python3.11")

MODEL = '''
import numpy as np
{imports}

class Model:
    def predict(self, inputs):
        return {{"OUT": np.array([{value}], dtype=object)}}
'''


def write_model(repo: Path, name: str, requirements: str = None, imports="",
                value='b"ok"', params=None):
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    p = "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}'
                  for k, v in (params or {}).items())
    (d / "config.pbtxt").write_text(f'''name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_STRING dims: [ 1 ] }} ]
{p}
''')
    (d / "1" / "model.py").write_text(MODEL.format(imports=imports, value=value))
    if requirements is not None:
        (d / "requirements.txt").write_text(requirements)


def build_wheel(out_dir: Path, version="1.2.3") -> Path:
    """A pure-Python wheel of `rustpy-demo-dep`, written by hand (PEP 427)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dist = f"rustpy_demo_dep-{version}.dist-info"
    files = {
        "rustpy_demo_dep/__init__.py": f'VALUE = "demo-{version}"\n'.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: rustpy-demo-dep\nVersion: {version}\n"
                            .encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: rustpy-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    whl = out_dir / f"rustpy_demo_dep-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return whl


def run_cli(args, check=None):
    env = clean_env({})
    env["PATH"] = os.environ.get("PATH", env["PATH"])
    r = subprocess.run([cli(), *args], env=env, capture_output=True, text=True, timeout=600)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def check_json(path, *extra, rc=None):
    r = run_cli(["check", str(path), "--json", *extra], check=rc)
    return json.loads(r.stdout)["diagnostics"]


def infer(server, model):
    import tritonclient.http as httpclient
    inp = httpclient.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros([1], np.float32))
    return server.http_client().infer(model, [inp]).as_numpy("OUT")[0]


def test_conflicting_pins_across_models(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "a", "numpy\nrustpy-demo-dep==1.0\n")
    write_model(repo, "b", "rustpy-demo-dep>=2,<3\n")
    write_model(repo, "c", "rustpy-demo-dep>=0.5\n")  # compatible with both: not a conflict
    diags = check_json(repo, rc=1)
    conflicts = [d for d in diags if d["code"] == "requirements.conflict"]
    assert sorted(Path(d["file"]).parent.name for d in conflicts) == ["a", "b"], diags
    a = next(d for d in conflicts if Path(d["file"]).parent.name == "a")
    assert a["line"] == 2 and "b: rustpy-demo-dep>=2,<3" in a["message"], a
    r = run_cli(["env", str(repo), "--target", str(tmp_path / "sp")], check=1)
    assert "conflict" in r.stderr and not (tmp_path / "sp").exists()


def test_satisfied_and_unsatisfied_requirements(tmp_path):
    numpy_version = subprocess.run([PYTHON, "-c", "import numpy; print(numpy.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    repo = tmp_path / "repo"
    write_model(repo, "m", f"# comment\nnumpy>={numpy_version}\nnumpy<1.0\n"
                           "rustpy-demo-dep\nnumpy; python_version < '3'\n")
    diags = [d for d in check_json(repo, rc=1) if d["code"].startswith("requirements.")]
    by_line = {d["line"]: d for d in diags}
    assert 2 not in by_line, diags  # satisfied
    assert by_line[3]["code"] == "requirements.unsatisfied"
    assert f"numpy {numpy_version} is installed" in by_line[3]["message"]
    assert by_line[4]["code"] == "requirements.missing"
    assert "rustpy-demo-dep is not installed" in by_line[4]["message"]
    assert 5 not in by_line  # marker false for this interpreter
    assert "rustpy env" in by_line[4]["hint"]


def test_env_installs_into_a_target_that_a_served_model_imports(tmp_path, triton_factory):
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    repo = tmp_path / "repo"
    write_model(repo, "uses_dep", "rustpy-demo-dep==1.2.3\nnumpy\n",
                imports="import rustpy_demo_dep", value="rustpy_demo_dep.VALUE.encode()")
    site = tmp_path / "site-packages"
    missing = [d for d in check_json(repo, rc=1) if d["code"] == "requirements.missing"]
    assert len(missing) == 1

    r = run_cli(["env", str(repo), "--target", str(site), "--dry-run"], check=0)
    assert r.stdout.split() == ["rustpy-demo-dep==1.2.3"]  # numpy: the interpreter has it
    run_cli(["env", str(repo), "--target", str(site), "-q", "--",
             "--no-index", "--find-links", str(wheels)], check=0)
    assert (site / "rustpy_demo_dep" / "__init__.py").is_file()
    assert check_json(repo, "--site-packages", str(site), rc=0) == []

    # A process-isolated model's workers get DIR too.
    write_model(repo, "uses_dep_proc", params={"rustpy.isolation": "process"},
                imports="import rustpy_demo_dep", value="rustpy_demo_dep.VALUE.encode()")
    server = triton_factory(repo, extra_args=[f"--backend-config=rustpy,site-packages={site}"],
                            name="deps")
    assert infer(server, "uses_dep") == b"demo-1.2.3"
    assert infer(server, "uses_dep_proc") == b"demo-1.2.3"
    assert f"site-packages {site} added to sys.path" in server.log_text()

    r = run_cli(["run", str(repo / "uses_dep"), "--site-packages", str(site), "--json", "-q"],
                check=0)
    assert json.loads(r.stdout)["responses"][0][0]["outputs"][0]["data"] == ["demo-1.2.3"]


def test_without_site_packages_the_model_does_not_import(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    write_model(repo, "uses_dep", "rustpy-demo-dep\n", imports="import rustpy_demo_dep")
    write_model(repo, "plain")
    server = triton_factory(repo, exit_on_error=False, wait_models=["plain"], name="nodeps")
    assert not server.model_ready("uses_dep")
    assert "No module named 'rustpy_demo_dep'" in server.log_text()


def test_execution_env_path_needs_its_archive_and_process_isolation(tmp_path, triton_factory):
    """EXECUTION_ENV_PATH means process isolation (docs/isolation.md; it works in
    tests/e2e/test_isolation_env.py): a missing archive fails that model's load,
    `in_process` with it is refused, and `rustpy run` (which hosts the model in a
    worker with that environment, as the server does) fails on a broken archive."""
    repo = tmp_path / "repo"
    write_model(repo, "with_env", params={"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/e.tgz"})
    write_model(repo, "in_proc_env", params={"EXECUTION_ENV_PATH": "e.tgz",
                                             "rustpy.isolation": "in_process"})
    write_model(repo, "plain")
    diags = check_json(repo, rc=1)
    missing = [d for d in diags if d["code"] == "parameters.python-env"]
    assert len(missing) == 1 and Path(missing[0]["file"]).parent.name == "with_env", diags
    assert "is not a file" in missing[0]["message"] and missing[0]["line"] == 6
    refused = [d for d in diags if d["code"] == "parameters.isolation"]
    assert len(refused) == 1 and Path(refused[0]["file"]).parent.name == "in_proc_env", diags
    assert "needs process isolation" in refused[0]["message"]

    server = triton_factory(repo, exit_on_error=False, wait_models=["plain"], name="execenv")
    assert infer(server, "plain") == b"ok"
    assert not server.model_ready("with_env") and not server.model_ready("in_proc_env")
    log = server.log_text()
    assert "model 'with_env': EXECUTION_ENV_PATH ('$$TRITON_MODEL_DIRECTORY/e.tgz'): " \
           f"{repo / 'with_env' / 'e.tgz'} is not a file" in log, log
    assert "model 'in_proc_env': parameter 'EXECUTION_ENV_PATH' needs process isolation" in log

    (repo / "with_env" / "e.tgz").write_bytes(b"")
    r = run_cli(["run", str(repo / "with_env"), "--json", "-q"])
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "model 'with_env': EXECUTION_ENV_PATH ('$$TRITON_MODEL_DIRECTORY/e.tgz'): " \
        f"environment {repo / 'with_env' / 'e.tgz'}: reading the archive" in r.stderr, r.stderr
