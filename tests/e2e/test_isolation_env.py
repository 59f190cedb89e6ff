"""Per-model Python environments and memory limits of process-isolated models
(docs/isolation.md, "Environments" and "Memory limit").

- `rustpy.python_env`: two models in one server, each with its own virtualenv
  holding a different version of the same local package (built here, installed
  with `pip install --no-index`), each sees its own version.
- `EXECUTION_ENV_PATH` (a conda-pack layout .tar.gz built here): unpacked once
  into RUSTPY_CACHE; a second model with the same archive and a reload reuse it.
- An environment of another Python version fails that model's load with a
  clear message (and `rustpy check` says so at the parameter's line); the
  server keeps serving the others.
- `rustpy.memory_limit_mb`: an allocation past the limit fails only its
  request (MemoryError, or the worker dying), another model answers
  throughout, the next request to the model succeeds.

Nothing reaches a package index: the package is a wheel written by hand.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_dependencies import build_wheel, check_json, infer, write_model
from tritonharness import rustpy_backend_lib

PYVER = "{}.{}".format(*sys.version_info[:2])  # the deps venv's = the server's (checked below)

VERSION_MODEL = '''
import numpy as np
import rustpy_demo_dep


class Model:
    def predict(self, inputs):
        return {"OUT": np.array([rustpy_demo_dep.VALUE.encode()], dtype=object)}
'''

PB_VERSION_MODEL = '''
import numpy as np
import rustpy_demo_dep
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = np.array([rustpy_demo_dep.VALUE.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]) for _ in requests]
'''

HOG_MODEL = '''
import ctypes
import os

import numpy as np


class Model:
    def predict(self, inputs):
        mode = int(inputs["IN"][0])
        if mode == 1:
            # Past the limit: Python raises MemoryError. (Without a limit this
            # is address space only: calloc'ed pages are never touched.)
            blob = bytes(2 << 30)
            del blob
        elif mode == 3:
            # numpy's own MemoryError subclass (np.empty: untouched without a limit).
            arr = np.empty(2 << 30, np.uint8)
            del arr
        elif mode == 2:
            # A C extension that does not check malloc: the worker dies.
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            p = libc.malloc(ctypes.c_size_t(2 << 30))
            ctypes.memset(p or 0, 1, 1)
        return {"OUT": np.array([str(os.getpid()).encode()], dtype=object)}
'''


def set_model_py(repo: Path, name: str, source: str):
    (repo / name / "1" / "model.py").write_text(source)


def install_package(venv: Path, wheel: Path):
    """pip install --no-index the wheel into the virtualenv's site-packages."""
    site = venv / "lib" / f"python{PYVER}" / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)


def make_venv(path: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)],
                   check=True, capture_output=True, timeout=300)
    assert f"version = {PYVER}" in (path / "pyvenv.cfg").read_text().replace("version_info", "")
    install_package(path, wheel)
    return path


def conda_pack_archive(path: Path, version: str, pyver: str = PYVER) -> Path:
    """A .tar.gz with conda-pack's layout (bin/, lib/pythonX.Y/site-packages)
    holding rustpy_demo_dep `version`."""
    files = {
        "bin/python": b"#!/bin/sh\n",
        f"lib/python{pyver}/os.py": b"# stdlib stand-in\n",
        f"lib/python{pyver}/site-packages/rustpy_demo_dep/__init__.py":
            f'VALUE = "demo-{version}"\n'.encode(),
        f"lib/python{pyver}/site-packages/rustpy_demo_dep-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: rustpy-demo-dep\nVersion: {version}\n".encode(),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def test_server_python_is_the_test_python(tmp_path):
    """The environments below are built with this interpreter: it must be the
    Python the server embeds (else every test here would test a mismatch)."""
    lib = rustpy_backend_lib()
    if not lib.is_file():
        pytest.skip("no libtriton_rustpy.so")
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    assert f"libpython{PYVER}" in out, out


def test_two_models_each_see_their_own_package_version(tmp_path, triton_factory):
    v1 = build_wheel(tmp_path / "w1", "1.0")
    v2 = build_wheel(tmp_path / "w2", "2.0")
    make_venv(tmp_path / "venv1", v1)
    make_venv(tmp_path / "venv2", v2)
    repo = tmp_path / "repo"
    # An absolute path, and one relative to the model directory via upstream's variable.
    write_model(repo, "uses_v1", params={"rustpy.isolation": "process",
                                         "rustpy.python_env": str(tmp_path / "venv1")})
    write_model(repo, "uses_v2", params={"rustpy.python_env":
                                         "$$TRITON_MODEL_DIRECTORY/../../venv2"})
    set_model_py(repo, "uses_v1", VERSION_MODEL)
    set_model_py(repo, "uses_v2", PB_VERSION_MODEL)  # both APIs
    write_model(repo, "plain", imports="import importlib.util",
                value='str(importlib.util.find_spec("rustpy_demo_dep")).encode()')

    diags = check_json(repo)
    assert not [d for d in diags if d["code"].startswith("parameters.")], diags

    server = triton_factory(repo, name="venvs")
    assert infer(server, "uses_v1") == b"demo-1.0"
    assert infer(server, "uses_v2") == b"demo-2.0"
    # The server's own interpreter never saw either environment.
    assert infer(server, "plain") == b"None"
    log = server.log_text()
    assert f"model 'uses_v1': rustpy.python_env Python {PYVER} virtualenv {tmp_path / 'venv1'}" \
        in log, log
    # rustpy.python_env alone implies process isolation.
    assert "model 'uses_v2' version 1 runs process-isolated" in log


def test_execution_env_path_is_unpacked_once_and_reused(tmp_path, triton_factory):
    archive = conda_pack_archive(tmp_path / "env.tar.gz", "3.0")
    repo = tmp_path / "repo"
    write_model(repo, "env_a", params={"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz"})
    write_model(repo, "env_b", params={"EXECUTION_ENV_PATH": str(archive)})
    shutil.copy(archive, repo / "env_a" / "env.tar.gz")
    for m in ("env_a", "env_b"):
        set_model_py(repo, m, VERSION_MODEL)
    assert not [d for d in check_json(repo) if d["code"].startswith("parameters.")]

    cache = tmp_path / "cache"
    server = triton_factory(repo, name="execenv", model_control_mode="explicit",
                            load_models=["env_a", "env_b"], env={"RUSTPY_CACHE": cache})
    assert infer(server, "env_a") == b"demo-3.0"
    assert infer(server, "env_b") == b"demo-3.0"
    envs = [p for p in (cache / "envs").iterdir() if p.is_dir() and p.name != ".tmp"]
    assert len(envs) == 1, envs  # one content hash, one unpacked copy
    assert list((cache / "envs" / ".tmp").iterdir()) == []
    log = server.log_text()
    # Loaded concurrently: exactly one of them unpacked, the other found it.
    assert log.count(f"unpacked into {envs[0]}") == 1, log
    assert log.count(f"already unpacked in {envs[0]}") == 1, log

    # A reload finds it too (a file we add to the cache survives: not unpacked again).
    (envs[0] / "sentinel").write_text("x")
    time.sleep(1.1)  # a new mtime: Triton reloads only a changed model
    set_model_py(repo, "env_a", VERSION_MODEL + "# edited\n")
    status, body = server.load_model("env_a")
    assert status == 200, body
    assert infer(server, "env_a") == b"demo-3.0"
    assert server.log_text().count(f"already unpacked in {envs[0]}") == 2
    assert (envs[0] / "sentinel").is_file()


def test_an_environment_of_another_python_fails_only_its_model(tmp_path, triton_factory):
    other = "3.8" if PYVER != "3.8" else "3.9"
    venv = tmp_path / "oldvenv"
    (venv / "lib" / f"python{other}" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {other}.18\n")
    repo = tmp_path / "repo"
    write_model(repo, "bad_venv", params={"rustpy.python_env": str(venv)})
    write_model(repo, "bad_archive", params={"EXECUTION_ENV_PATH": "old.tar.gz"})
    conda_pack_archive(repo / "bad_archive" / "old.tar.gz", "0.1", pyver=other)
    write_model(repo, "plain")

    diags = [d for d in check_json(repo, rc=1) if d["code"] == "parameters.python-env"]
    assert sorted(Path(d["file"]).parent.name for d in diags) == ["bad_archive", "bad_venv"]
    for d in diags:
        # At the parameter's value: line 6 of the config write_model writes.
        assert d["line"] == 6, d
        assert f"Python {other} environment, but rustpy embeds Python {PYVER}" in d["message"], d

    server = triton_factory(repo, exit_on_error=False, wait_models=["plain"], name="envver",
                            env={"RUSTPY_CACHE": tmp_path / "cache"})
    assert infer(server, "plain") == b"ok"
    assert not server.model_ready("bad_venv") and not server.model_ready("bad_archive")
    log = server.log_text()
    assert (f"model 'bad_venv': rustpy.python_env ('{venv}'): it is a Python {other} "
            f"environment, but rustpy embeds Python {PYVER}") in log, log
    assert (f"model 'bad_archive': EXECUTION_ENV_PATH ('old.tar.gz'): it is a Python {other} "
            f"environment") in log, log
    assert infer(server, "plain") == b"ok"


def test_memory_limit_fails_only_the_requests_that_blow_it(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    write_model(repo, "hog", params={"rustpy.isolation": "process",
                                     "rustpy.memory_limit_mb": "768"})
    set_model_py(repo, "hog", HOG_MODEL)
    write_model(repo, "plain")
    server = triton_factory(repo, name="memlimit")

    def ask(mode):
        import tritonclient.http as httpclient
        inp = httpclient.InferInput("IN", [1], "FP32")
        inp.set_data_from_numpy(np.array([mode], np.float32))
        return server.http_client().infer("hog", [inp]).as_numpy("OUT")[0]

    def ask_error(mode):
        from tritonclient.utils import InferenceServerException
        with pytest.raises(InferenceServerException) as e:
            ask(mode)
        return str(e.value)

    pid = int(ask(0))
    limits = Path(f"/proc/{pid}/limits").read_text()
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert data.split()[3:5] == [str(768 << 20)] * 2, data  # soft and hard

    steady_ok, steady_errors, stop = [], [], threading.Event()

    def steady():
        while not stop.is_set():
            try:
                assert infer(server, "plain") == b"ok"
                steady_ok.append(1)
            except Exception as e:  # noqa: BLE001 - asserted on below
                steady_errors.append(repr(e))
            time.sleep(0.02)

    t = threading.Thread(target=steady, daemon=True)
    t.start()
    try:
        # Python raises MemoryError: that request fails, naming model, instance and limit.
        msg = ask_error(1)
        assert "model 'hog'" in msg and "MemoryError" in msg, msg
        assert f"model 'hog' instance 'hog_0': the worker process (pid {pid}) ran out of " \
               f"its memory limit, rustpy.memory_limit_mb = 768 MiB" in msg, msg
        # The worker survived it.
        assert int(ask(0)) == pid
        msg = ask_error(3)
        assert "MemoryError" in msg and "rustpy.memory_limit_mb = 768 MiB" in msg, msg
        assert int(ask(0)) == pid

        # Native code that ignores a failed malloc: the worker dies, is restarted.
        msg = ask_error(2)
        assert f"model 'hog' instance 'hog_0': the worker process (pid {pid}) exited on " \
               f"SIGSEGV" in msg, msg
        assert "its memory limit: rustpy.memory_limit_mb = 768 MiB" in msg, msg
        new_pid = int(ask(0))
        assert new_pid != pid
        assert f"Max data size             {768 << 20}" in Path(f"/proc/{new_pid}/limits").read_text()
    finally:
        deadline = time.monotonic() + 30  # a loaded machine may not have run it yet
        while not steady_ok and not steady_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        t.join(timeout=30)
    assert steady_errors == [], steady_errors[:3]
    assert len(steady_ok) > 0
    assert server.model_ready("hog")
