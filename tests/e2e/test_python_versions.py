"""The backend is built for one Python (PYO3_PYTHON); what the environment hands
it must be of that version, and a mismatch is refused with a clear message:

- `rustpy check`: a serving interpreter (RUSTPY_PYTHON) or a `--site-packages`
  directory of another version is an error;
- `rustpy serve`: a backend library built for another Python than this rustpy
  embeds, or a `rustpy,site-packages=` directory of another version, stops it
  before tritonserver starts (exit 1);
- the backend at load: a `rustpy,site-packages=` directory of another version,
  a PYTHONHOME without this version's standard library (Python would otherwise
  abort the whole server while starting) or another version's packages on
  PYTHONPATH fail the backend's load with the reason; the server keeps running.
(Per-model environments of another version: test_isolation_env.py.)
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from test_dependencies import check_json, infer, run_cli, write_model
from tritonharness import rustpy_backend_lib, tritonserver_binary

PYTHON = os.environ.get("RUSTPY_PYTHON", "/usr/bin/python3.11")
PYVER = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, check=True).stdout.strip()
OTHER = "3.12" if PYVER != "3.12" else "3.11"
OTHER_TAG = OTHER.replace(".", "")


def foreign_site_packages(root: Path) -> Path:
    """A site-packages directory whose compiled package was built for OTHER."""
    sp = root / "site-packages"
    (sp / "fastpkg").mkdir(parents=True)
    (sp / "fastpkg" / "__init__.py").write_text("from ._speedups import *\n")
    (sp / "fastpkg" / f"_speedups.cpython-{OTHER_TAG}-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (sp / "fastpkg-1.0.dist-info").mkdir()
    (sp / "fastpkg-1.0.dist-info" / "WHEEL").write_text(
        f"Wheel-Version: 1.0\nTag: cp{OTHER_TAG}-cp{OTHER_TAG}-manylinux_2_17_x86_64\n")
    return sp


def other_interpreter():
    """Any CPython on this machine whose version is not PYVER (pyenv's, if any)."""
    for root in sorted(Path("/root/.pyenv/versions").glob("3.*")):
        exe = root / "bin" / "python3"
        if exe.is_file() and not root.name.startswith(PYVER + "."):
            return exe
    return None


def test_check_refuses_site_packages_built_for_another_python(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    sp = foreign_site_packages(tmp_path)
    diags = [d for d in check_json(repo, "--site-packages", str(sp), rc=1) if d["code"] == "site-packages.python"]
    assert len(diags) == 1, diags
    msg = diags[0]["message"]
    assert f"built for Python {OTHER}" in msg and f"rustpy embeds Python {PYVER}" in msg, msg
    assert f"_speedups.cpython-{OTHER_TAG}" in msg
    # The same directory without the foreign build passes.
    for f in sp.rglob(f"*cpython-{OTHER_TAG}*"):
        f.unlink()
    (sp / "fastpkg-1.0.dist-info" / "WHEEL").write_text("Wheel-Version: 1.0\nTag: py3-none-any\n")
    assert not [d for d in check_json(repo, "--site-packages", str(sp)) if d["code"] == "site-packages.python"]


def test_check_refuses_a_serving_interpreter_of_another_python(tmp_path):
    other = other_interpreter()
    if other is None:
        pytest.skip("no CPython of another version on this machine")
    repo = tmp_path / "repo"
    write_model(repo, "m")
    env = {**os.environ, "RUSTPY_PYTHON": str(other)}
    cli = os.environ.get("RUSTPY_CLI") or str(rustpy_backend_lib().parent / "rustpy")
    p = subprocess.run([cli, "check", str(repo), "--json"], capture_output=True, text=True, env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    diags = [d for d in json.loads(p.stdout)["diagnostics"] if d["code"] == "python.version"]
    assert len(diags) == 1 and f"embeds Python {PYVER}" in diags[0]["message"], diags


def test_serve_refuses_a_backend_library_built_for_another_python(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    lib = tmp_path / "libtriton_rustpy.so"
    lib.write_bytes(b"\x7fELF\0" + f"libpython{OTHER}.so.1.0".encode() + b"\0libc.so.6\0")
    r = run_cli(["serve", str(repo), "--tritonserver", str(tritonserver_binary()),
                 "--backend-lib", str(lib), "--ready-timeout", "5"], check=1)
    assert f"built for Python {OTHER}, but this rustpy embeds Python {PYVER}" in r.stderr, r.stderr


def test_serve_refuses_site_packages_built_for_another_python(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    sp = foreign_site_packages(tmp_path)
    r = run_cli(["serve", str(repo), "--tritonserver", str(tritonserver_binary()),
                 "--backend-lib", str(rustpy_backend_lib()), "--ready-timeout", "5",
                 "--", f"--backend-config=rustpy,site-packages={sp}"], check=1)
    assert f"built for Python {OTHER}" in r.stderr and f"rustpy embeds Python {PYVER}" in r.stderr, r.stderr


@pytest.mark.parametrize("case", ["site-packages", "PYTHONHOME", "PYTHONPATH"])
def test_the_backend_refuses_another_pythons_files_at_load(tmp_path, triton_factory, case):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    sp = foreign_site_packages(tmp_path)
    home = tmp_path / "home"
    (home / "lib" / f"python{OTHER}").mkdir(parents=True)
    (home / "lib" / f"python{OTHER}" / "os.py").write_text("")
    extra, env, expect = [], {}, ""
    if case == "site-packages":
        extra = [f"--backend-config=rustpy,site-packages={sp}"]
        expect = f"{sp} holds packages built for Python {OTHER}"
    elif case == "PYTHONHOME":
        env = {"PYTHONHOME": str(home)}
        expect = f"PYTHONHOME={home} has no Python {PYVER} standard library"
    else:
        env = {"PYTHONPATH": str(sp)}
        expect = f"PYTHONPATH entry {sp} holds packages built for Python {OTHER}"
    server = triton_factory(repo, exit_on_error=False, wait_models=[], extra_args=extra, env=env,
                            name=f"pyver-{case}")
    log = server.log_text()
    assert server.running, log[-3000:]
    assert not server.model_ready("m")
    assert expect in log and f"rustpy embeds Python {PYVER}" in log, log[-3000:]


def test_the_backend_loads_with_a_pythonhome_of_its_own_version(tmp_path, triton_factory):
    """The check refuses only another version: the interpreter's own prefix is fine."""
    prefix = subprocess.run([PYTHON, "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    repo = tmp_path / "repo"
    write_model(repo, "m")
    server = triton_factory(repo, env={"PYTHONHOME": prefix}, name="pyver-ownhome")
    assert infer(server, "m") == b"ok"
