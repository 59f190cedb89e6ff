"""conda-pack archives (`EXECUTION_ENV_PATH`) in process isolation (issue 11):
what conda-pack expects after unpacking, and the cache entry's lifetime.

- `bin/conda-unpack` (conda-pack's prefix rewriting) runs once, in the
  unpacked directory, before the entry is marked complete; two models and a
  reload sharing the archive do not run it again.
- The environment's `lib/` is first on the worker's LD_LIBRARY_PATH: a native
  library that only the environment ships is found by name (ctypes); its
  `bin/` is first on PATH, CONDA_PREFIX names it. An environment shipping its
  own `lib/libpython3.X.so.1.0` does not replace the libpython the worker
  embeds (the stand-in here has no Python in it: loading it would kill the
  worker), and the worker does not hand that preload on (LD_PRELOAD unset).
- `rustpy cache prune` keeps the entry while a loaded model uses it and
  deletes it once the model is unloaded.

The archive is built here (conda-pack's layout, a shared library compiled with
the system C compiler); nothing reaches the network.
"""
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from test_dependencies import run_cli, write_model
from test_isolation_env import PYVER, set_model_py

MODEL = '''
import ctypes
import json
import os

import numpy as np


class Model:
    def predict(self, inputs):
        lib = ctypes.CDLL("librustpy_envmark.so")  # by name: found through LD_LIBRARY_PATH
        maps = open("/proc/self/maps").read()
        libpython = sorted({l.split()[-1] for l in maps.splitlines() if "/libpython" in l})
        prefix = os.environ.get("CONDA_PREFIX", "")
        info = {
            "mark": lib.rustpy_envmark(),
            "prefix": prefix,
            "unpacked": open(os.path.join(prefix, "unpacked-by")).read().strip(),
            "path0": os.environ.get("PATH", "").split(":")[0],
            "ld0": os.environ.get("LD_LIBRARY_PATH", "").split(":")[0],
            "ld_preload": os.environ.get("LD_PRELOAD"),
            "libpython": libpython,
        }
        return {"OUT": np.array([json.dumps(info).encode()], dtype=object)}
'''


def compile_lib(src: str, out: Path, soname: str) -> bytes:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out), str(c)],
                   check=True, capture_output=True, timeout=120)
    return out.read_bytes()


def make_archive(tmp: Path, log: Path) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc) to build the archive's native library")
    mark = compile_lib("int rustpy_envmark(void) { return 4242; }\n",
                       tmp / "librustpy_envmark.so", "librustpy_envmark.so")
    # Named like a libpython: loading it instead of the real one would fail.
    fake_py = compile_lib("int not_python(void) { return 0; }\n",
                          tmp / "fakepython.so", f"libpython{PYVER}.so.1.0")
    unpack = (f"#!/bin/sh\n"
              f"# conda-pack's conda-unpack rewrites prefixes; this one records where it ran\n"
              f"here=$(cd \"$(dirname \"$0\")/..\" && pwd)\n"
              f"echo \"$here\" > \"$here/unpacked-by\"\n"
              f"echo \"$here\" >> {log}\n").encode()
    files = {
        "bin/python": (b"#!/bin/sh\n", 0o755),
        "bin/conda-unpack": (unpack, 0o755),
        f"lib/python{PYVER}/os.py": (b"# stdlib stand-in\n", 0o644),
        f"lib/python{PYVER}/site-packages/placeholder.py": (b"", 0o644),
        "lib/librustpy_envmark.so": (mark, 0o755),
        f"lib/libpython{PYVER}.so.1.0": (fake_py, 0o755),
    }
    path = tmp / "env.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return path


def ask(server, model):
    import numpy as np
    import tritonclient.http as httpclient
    inp = httpclient.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros([1], np.float32))
    out = server.http_client().infer(model, [inp]).as_numpy("OUT")[0]
    return json.loads(out)


def test_conda_pack_archive_unpacked_activated_and_pruned(tmp_path, triton_factory):
    log = tmp_path / "conda-unpack.log"
    archive = make_archive(tmp_path, log)
    repo = tmp_path / "repo"
    for m in ("conda_a", "conda_b"):
        write_model(repo, m, params={"EXECUTION_ENV_PATH": str(archive)})
        set_model_py(repo, m, MODEL)
    cache = tmp_path / "cache"
    server = triton_factory(repo, name="conda", model_control_mode="explicit",
                            load_models=["conda_a", "conda_b"], env={"RUSTPY_CACHE": cache})
    envs = [p for p in (cache / "envs").iterdir() if p.is_dir() and p.name != ".tmp"]
    assert len(envs) == 1, envs
    env = envs[0]
    for m in ("conda_a", "conda_b"):
        got = ask(server, m)
        assert got["mark"] == 4242, got
        assert Path(got["prefix"]) == env, got
        assert Path(got["unpacked"]) == env, got  # conda-unpack ran in place
        assert Path(got["path0"]) == env / "bin", got
        assert Path(got["ld0"]) == env / "lib", got
        assert got["ld_preload"] is None, got
        assert got["libpython"] and all(not p.startswith(str(env)) for p in got["libpython"]), got
    # Once for both models.
    assert log.read_text().splitlines() == [str(env)]

    # In use by a loaded model: kept. (The server's lock is a real OS lock;
    # rustpy cache prune runs in its own process.)
    r = run_cli(["cache", "prune", "--json", "--cache-dir", str(cache)], check=0)
    assert [e["action"] for e in json.loads(r.stdout)] == ["in use"], r.stdout
    assert env.is_dir()
    # One model unloaded: the other still holds it.
    status, body = server.unload_model("conda_a")
    assert status == 200, body
    r = run_cli(["cache", "prune", "--json", "--cache-dir", str(cache)], check=0)
    assert [e["action"] for e in json.loads(r.stdout)] == ["in use"], r.stdout
    assert ask(server, "conda_b")["mark"] == 4242
    # Both unloaded: deleted (Triton finishes an unload after answering the
    # call: the lock goes with the model's last instance).
    status, body = server.unload_model("conda_b")
    assert status == 200, body
    deadline = time.monotonic() + 60
    while True:
        r = run_cli(["cache", "prune", "--json", "--cache-dir", str(cache)], check=0)
        actions = [e["action"] for e in json.loads(r.stdout)]
        if actions != ["in use"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert actions == ["removed"], r.stdout
    assert not env.exists()
    # A later load unpacks (and runs conda-unpack) again.
    status, body = server.load_model("conda_a")
    assert status == 200, body
    assert ask(server, "conda_a")["mark"] == 4242
    assert log.read_text().splitlines() == [str(env), str(env)]
