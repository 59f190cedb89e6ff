"""The backend library loads in every host that loads Triton backends
(design hazard 13), not only in the tritonserver binary.

tritonserver makes libtritonserver's symbols global; other hosts open it
themselves without doing so: perf_analyzer's C API mode, Triton's in-process
Python API, any program embedding Triton (rustpy-inproc opens it RTLD_LOCAL
too). A backend that leaves TRITONSERVER_* to the process's global scope fails
there ("undefined symbol: TRITONSERVER_ParameterNew"); Triton's own backends
name libtritonserver.so as a needed library, and so does ours (build.rs links a
stub of it). The loader then finds the real library already loaded:

- in an NGC image, by its soname libtritonserver.so;
- in this machine's install (the nvidia-pytriton wheel renamed it
  libtritonserver-<hash>.so), through <triton>/lib/libtritonserver.so: our
  RPATH $ORIGIN/../../lib from <triton>/backends/rustpy/, or tritonserver's
  own RPATH ${ORIGIN}/../lib; the loader sees it is the same file.
"""
import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonharness import (PROJECT_ROOT, clean_env, populate_backends, python_backend_dir,
                           rustpy_backend_lib, tritonserver_private_libs)

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import perf_analyzer  # noqa: E402

LIB = rustpy_backend_lib()
MODELS = PROJECT_ROOT / "bench" / "models"
INPROC = LIB.parent / "rustpy-inproc"


def real_libtritonserver() -> Path:
    found = sorted(tritonserver_private_libs().glob("libtritonserver*.so"))
    assert found, f"no libtritonserver*.so in {tritonserver_private_libs()} (ci/install.sh)"
    return found[0]


def dynamic_section(path) -> str:
    return subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout


def needed(path) -> list:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic_section(path))


def dynamic_symbols(path, *flags) -> set:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


# ---------------------------------------------------------------- the library
def test_backend_library_needs_libtritonserver_as_tritons_own_backends_do():
    official = python_backend_dir() / "libtriton_python.so"
    assert any(n.startswith("libtritonserver") for n in needed(official)), \
        "the official backend names libtritonserver as a needed library"
    assert "libtritonserver.so" in needed(LIB), f"{LIB} does not name libtritonserver.so: {needed(LIB)}"


def test_backend_library_keeps_nodelete_and_its_search_path():
    dyn = dynamic_section(LIB)
    assert re.search(r"\(FLAGS_1\)\s+Flags:.*NODELETE", dyn), "-z nodelete was lost"
    assert "$ORIGIN/../../lib" in dyn, "the RPATH to <triton>/lib was lost"
    assert "(RUNPATH)" not in dyn, "a RUNPATH would hide the host executable's RPATH"


def test_backend_library_exports_only_the_backend_entry_points():
    exported = {s for s in dynamic_symbols(LIB, "--defined-only") if s and not s.startswith("_")}
    expected = set(re.findall(r"(TRITONBACKEND_\w+);", (PROJECT_ROOT / "src" / "exports.map").read_text()))
    assert expected and exported == expected


def test_every_server_function_the_backend_calls_is_in_the_real_library():
    """The stub we link against is generated from our header: a name the real
    library lacks would link here and fail at load everywhere."""
    imported = {s for s in dynamic_symbols(LIB, "--undefined-only") if s.startswith("TRITON")}
    provided = dynamic_symbols(real_libtritonserver(), "--defined-only")
    assert len(imported) > 50
    assert imported <= provided, sorted(imported - provided)


# ------------------------------------------------------------- perf_analyzer
@pytest.fixture(scope="module")
def c_api(tmp_path_factory):
    pa = perf_analyzer.PerfAnalyzer("triton_c_api", tmp_path_factory.mktemp("pa-capi"), MODELS)
    if not pa.exe.exists():
        pytest.fail(f"perf_analyzer missing at {pa.exe}: run ci/install.sh", pytrace=False)
    return pa


@pytest.mark.parametrize("model", ["add_sub_rustpy", "add_sub_rustpy_compat", "add_sub_rustpy_process"])
def test_perf_analyzer_c_api_mode_serves_rustpy_models_without_preload(c_api, model):
    """Triton's own load generator hosts the server in its process: the model
    loads, every request succeeds, nothing is preloaded."""
    env = c_api.env()
    assert "LD_PRELOAD" not in env
    assert not any(p.name.startswith("libtritonserver.so") for d in env.get("LD_LIBRARY_PATH", "").split(":")
                   if d for p in Path(d).glob("libtritonserver.so*")), \
        "libtritonserver.so must be found through the backend's own links, not the library path"
    rc, log, report = c_api.run(model, "add_sub", None, conc=4, duration=1.5, label=model)
    assert rc == 0 and report is not None, perf_analyzer.failure_summary(log)
    assert "undefined symbol" not in log
    assert report["client_requests"] > 0 and report["throughput_rps"] > 0
    # perf_analyzer exits non-zero when a request fails; the server counted successes.
    assert report["successes"] > 0


# ------------------------------------------------- a Triton install's soname
class Inproc:
    """rustpy-inproc (opens libtritonserver RTLD_LOCAL) on one repository."""

    def __init__(self, lib: Path, backend_dir: Path, models, env: dict, log: Path):
        if not INPROC.is_file():
            pytest.fail(f"{INPROC} missing: cargo build --release --workspace", pytrace=False)
        self.proc = subprocess.Popen(
            [str(INPROC), "--lib", str(lib), "--repo", str(MODELS), "--backend-dir", str(backend_dir),
             "--load", ",".join(models), "--log-file", str(log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, cwd=backend_dir.parent, start_new_session=True)
        self.log = log
        self.ready = self.read(300)["ready"]

    def read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            self.proc.kill()
            pytest.fail(f"rustpy-inproc gave no answer (exit {self.proc.poll()}): "
                        f"{self.proc.stderr.read()[-2000:]}\n"
                        f"{self.log.read_text(errors='replace')[-3000:] if self.log.exists() else ''}")
        return json.loads(line)

    def run(self, **spec):
        self.proc.stdin.write(json.dumps({"warmup": 0.2, "expect": "compute", **spec}) + "\n")
        self.proc.stdin.flush()
        return self.read(spec["duration"] + 120)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def test_a_host_that_loaded_libtritonserver_so_by_its_soname_serves_rustpy(tmp_path):
    """As in an NGC image: the host loaded <triton>/lib/libtritonserver.so
    (soname libtritonserver.so) RTLD_LOCAL and our library sits where no
    search path leads to it; the needed entry is satisfied by the soname of
    the library already loaded, and every response is right."""
    if shutil.which("patchelf") is None:
        pytest.fail("patchelf missing: run ci/install.sh", pytrace=False)
    ngc_lib = tmp_path / "opt" / "tritonserver" / "lib"
    ngc_lib.mkdir(parents=True)
    server_lib = ngc_lib / "libtritonserver.so"
    shutil.copy(real_libtritonserver(), server_lib)
    subprocess.run(["patchelf", "--set-soname", "libtritonserver.so", str(server_lib)], check=True)
    # Backends away from <triton>/: $ORIGIN/../../lib finds nothing, and
    # rustpy-inproc has no RPATH of its own.
    backends = tmp_path / "elsewhere" / "backends"
    populate_backends(backends)
    assert not (backends / ".." / ".." / "lib").exists()
    env = clean_env()
    # The copy's own dependencies (the wheel's libraries); libtritonserver.so is not among them.
    env["LD_LIBRARY_PATH"] = str(tritonserver_private_libs())
    assert not (tritonserver_private_libs() / "libtritonserver.so").exists()
    models = ["add_sub_rustpy", "add_sub_rustpy_compat"]
    host = Inproc(server_lib, backends, models, env, tmp_path / "server.log")
    try:
        assert host.ready == {m: True for m in models}, host.log.read_text(errors="replace")[-3000:]
        for m in models:
            r = host.run(model=m, workload="add_sub", concurrency=4, duration=1.0, label=m)
            assert "error" not in r, r
            assert r["completed"] > 0 and r["errors"] == 0 and r["validation_errors"] == 0, r
    finally:
        assert host.close() == 0
    assert "undefined symbol" not in host.log.read_text(errors="replace")
