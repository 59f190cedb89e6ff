"""The backend built for a second CPython minor version (3.12, the Python of
current NGC images) serves both APIs, and the version checks hold the other
way round too.

ci/test.sh builds it (PYO3_PYTHON=$RUSTPY_PY312, its own target directory)
when this machine has a 3.12 with a shared libpython: no registry here provides
one (docs/deploy.md), the machine image's pyenv build does. ci/install.sh puts
numpy for it in $RUSTPY_DEPS/py312-site. Without them these tests skip, saying
so.
"""
import os
import subprocess
from pathlib import Path

import pytest

from test_dependencies import run_cli, write_model
from test_python_versions import PYVER
from tritonharness import PROJECT_ROOT, deps_dir, tritonserver_binary

LIB = Path(os.environ.get("RUSTPY_BACKEND_LIB_PY312", "/nonexistent"))
PY312 = Path(os.environ.get("RUSTPY_PY312", "/root/.pyenv/versions/3.12.1/bin/python3.12"))

pytestmark = pytest.mark.skipif(not LIB.is_file() or not PY312.is_file(),
                                reason="no backend built for a second CPython (ci/test.sh builds one "
                                       "when the machine has a 3.12 with a shared libpython)")


def env312():
    libdir = subprocess.run([str(PY312), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return {"LD_LIBRARY_PATH": libdir, "PYTHONPATH": str(deps_dir() / "py312-site")}


def test_the_312_backend_serves_both_apis(triton_factory):
    models = ["add_sub_rustpy", "add_sub_rustpy_compat"]
    server = triton_factory([PROJECT_ROOT / "bench" / "models"], backend_lib=LIB, model_control_mode="explicit",
                            load_models=models, wait_models=models, env=env312(), name="py312")
    body = {"inputs": [{"name": n, "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                       for n in ("INPUT0", "INPUT1")]}
    for m in models:
        status, resp = server.request("POST", f"/v2/models/{m}/infer", body)
        assert status == 200, resp
        assert {o["name"]: o["data"] for o in resp["outputs"]} == {"OUTPUT0": [2, 4, 6, 8], "OUTPUT1": [0, 0, 0, 0]}
    assert "libpython3.12.so" in server.log_text()


def test_the_312_backend_refuses_a_site_packages_dir_of_the_servers_311(tmp_path, triton_factory):
    if PYVER == "3.12":
        pytest.skip("the main build is 3.12 itself")
    sp = tmp_path / "site"
    (sp / "fast").mkdir(parents=True)
    (sp / "fast" / f"_ext.cpython-{PYVER.replace('.', '')}-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    repo = tmp_path / "repo"
    write_model(repo, "m")
    server = triton_factory(repo, backend_lib=LIB, exit_on_error=False, wait_models=[], env=env312(),
                            extra_args=[f"--backend-config=rustpy,site-packages={sp}"], name="py312-sp")
    log = server.log_text()
    assert not server.model_ready("m")
    assert f"built for Python {PYVER} (fast/_ext.cpython-" in log and "rustpy embeds Python 3.12" in log, log[-3000:]


def test_serve_refuses_the_312_library_with_a_rustpy_of_another_python(tmp_path):
    if PYVER == "3.12":
        pytest.skip("the main build is 3.12 itself")
    repo = tmp_path / "repo"
    write_model(repo, "m")
    r = run_cli(["serve", str(repo), "--tritonserver", str(tritonserver_binary()), "--backend-lib", str(LIB),
                 "--ready-timeout", "5"], check=1)
    assert f"was built for Python 3.12, but this rustpy embeds Python {PYVER}" in r.stderr, r.stderr
