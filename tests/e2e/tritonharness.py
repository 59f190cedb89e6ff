"""Start and stop a real tritonserver for rustpy's end-to-end tests and demos.

Importable helper (no third-party imports at module level; tritonclient is only
needed by the ``http_client()``/``grpc_client()`` conveniences):

    from tritonharness import TritonServer
    with TritonServer(["model_repository"]) as server:
        client = server.http_client()
        ...

It builds a backend directory in a temp dir:

    <tmp>/backends/rustpy/libtriton_rustpy.so -> $RUSTPY_BACKEND_LIB
                                                 or <root>/target/release/libtriton_rustpy.so
    <tmp>/backends/rustpy/rustpy-worker -> rustpy-worker beside that library (process isolation)
    <tmp>/backends/python -> <tritonserver>/backends/python   (a directory symlink:
                             libtriton_python.so finds its libs via an $ORIGIN rpath,
                             which a copy would break)

and runs tritonserver with a clean environment on free loopback ports, logging
stdout+stderr to ``<tmp>/tritonserver.log``.

Environment overrides:
    RUSTPY_BACKEND_LIB   path of libtriton_rustpy.so
    RUSTPY_DEPS          where ci/install.sh put its deps (default <root>/.rustpy-deps)
    TRITONSERVER         path of the tritonserver binary
    RUSTPY_E2E_KEEP      keep the temp dir after stop (for debugging)
    RUSTPY_E2E_REFERENCE =1: run `backend: "rustpy"` models on the official python
                         backend through tests/e2e/reference/model.py, a pure-Python
                         reference implementation of the batched API (checks the
                         tests and example models without libtriton_rustpy.so)

Also a tiny CLI:  python tests/e2e/tritonharness.py --repo model_repository [--wait add_sub]
starts a server, prints its URLs and serves until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Iterable, Optional, Sequence

# tests/e2e/tritonharness.py -> project root is two levels up.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
ERRORS_REPOSITORY = E2E_DIR / "repos" / "errors"

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables passed through to the server; everything else (PYTHONHOME,
# PYTHONPATH, PYENV_*, VIRTUAL_ENV, LD_LIBRARY_PATH, CONDA_*, ...) is dropped.
_PASS_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
             "RUST_BACKTRACE", "RUST_LOG")
_PASS_ENV_PREFIXES = ("LC_", "RUSTPY_")


def deps_dir() -> Path:
    return Path(os.environ.get("RUSTPY_DEPS") or PROJECT_ROOT / ".rustpy-deps")


def tritonserver_root() -> Path:
    """The unpacked tritonserver tree (has bin/ and backends/)."""
    exe = os.environ.get("TRITONSERVER")
    if exe:
        return Path(exe).resolve().parent.parent
    return deps_dir() / "pytriton" / "tritonserver"


def tritonserver_binary() -> Path:
    exe = os.environ.get("TRITONSERVER")
    return Path(exe) if exe else tritonserver_root() / "bin" / "tritonserver"


def python_backend_dir() -> Path:
    return tritonserver_root() / "backends" / "python"


def tritonserver_lib_dir() -> Path:
    """<tritonserver>/lib, holding libtritonserver.so as in a Triton install
    (ci/install.sh links it to the wheel's libtritonserver-<hash>.so)."""
    return tritonserver_root() / "lib"


def tritonserver_private_libs() -> Path:
    """The wheel's own libraries (auditwheel's nvidia_pytriton.libs). They carry
    no search path of their own: the tritonserver binary finds them through its
    RPATH, any other host needs them on LD_LIBRARY_PATH."""
    return tritonserver_root().resolve().parent.parent / "nvidia_pytriton.libs"


def populate_backends(bdir: Path, backend_lib: Optional[Path] = None, require_rustpy: bool = True) -> None:
    """bdir/rustpy/libtriton_rustpy.so (+ rustpy-worker beside it) and
    bdir/python -> the official backend (a directory symlink: libtriton_python.so
    finds its libs via an $ORIGIN rpath, which a copy would break)."""
    lib = Path(backend_lib) if backend_lib else rustpy_backend_lib()
    (bdir / "rustpy").mkdir(parents=True, exist_ok=True)
    if lib.is_file():
        os.symlink(lib.resolve(), bdir / "rustpy" / "libtriton_rustpy.so")
        # The worker of process-isolated models is installed next to the library.
        worker = lib.resolve().parent / "rustpy-worker"
        if worker.is_file():
            os.symlink(worker, bdir / "rustpy" / "rustpy-worker")
    elif require_rustpy:
        raise TritonStartError(
            f"rustpy backend library not found at {lib} "
            "(build it with `cargo build --release` or set RUSTPY_BACKEND_LIB)")
    pyb = python_backend_dir()
    if pyb.is_dir():
        os.symlink(pyb.resolve(), bdir / "python", target_is_directory=True)


def make_triton_install(root: Path, backend_lib: Optional[Path] = None) -> Path:
    """A Triton install's layout under `root`, for hosts that load Triton's
    library themselves (perf_analyzer --triton-server-directory, rustpy-inproc):

        root/lib -> <tritonserver>/lib            (libtritonserver.so)
        root/backends/rustpy/libtriton_rustpy.so  (+ rustpy-worker)
        root/backends/python -> <tritonserver>/backends/python

    Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    os.symlink(tritonserver_lib_dir(), root / "lib", target_is_directory=True)
    populate_backends(root / "backends", backend_lib)
    return root


def rustpy_backend_lib() -> Path:
    lib = os.environ.get("RUSTPY_BACKEND_LIB")
    return Path(lib) if lib else PROJECT_ROOT / "target" / "release" / "libtriton_rustpy.so"


def reference_mode() -> bool:
    return os.environ.get("RUSTPY_E2E_REFERENCE", "") not in ("", "0", "false")


_BACKEND_RE = re.compile(r'^(\s*backend\s*:\s*)"rustpy"', re.M)


def make_reference_repository(src: Path, dst: Path) -> Path:
    """Copy repository `src` to `dst`, moving rustpy models onto the python backend
    with tests/e2e/reference/model.py as their model.py (see RUSTPY_E2E_REFERENCE)."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    adapter = E2E_DIR / "reference" / "model.py"
    for cfg in dst.glob("*/config.pbtxt"):
        text = cfg.read_text()
        if not _BACKEND_RE.search(text):
            continue
        cfg.write_text(_BACKEND_RE.sub(r'\1"python"', text))
        for user in cfg.parent.glob("*/model.py"):
            (user.parent / "user").mkdir()
            user.rename(user.parent / "user" / "model.py")
            shutil.copy(adapter, user)
    return dst


_PORT_IN_USE = re.compile(r"address already in use|already in use|failed to bind", re.I)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def clean_env(extra: Optional[dict] = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k in _PASS_ENV or k.startswith(_PASS_ENV_PREFIXES)}
    env["PATH"] = CLEAN_PATH
    env.setdefault("HOME", "/root" if os.geteuid() == 0 else "/tmp")
    env.setdefault("LANG", "C.UTF-8")
    # No PYTHONUNBUFFERED: the server runs as deployed (test_stdio checks
    # that model prints reach the log anyway).
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


class TritonStartError(RuntimeError):
    pass


class TritonServer:
    """One tritonserver process.

    model_repositories: one or more repository directories.
    require_rustpy:     fail early if libtriton_rustpy.so is missing (set False
                        for servers that only use the official python backend).
    model_control_mode: "none" | "poll" | "explicit"; load_models for explicit.
    exit_on_error:      False keeps the server up when a model fails to load.
    wait_models:        models that must be READY before start() returns. None
                        means wait for /v2/health/ready (all models ready).
    extra_args:         appended to the command line.
    exit_timeout:       --exit-timeout-secs. Note: after a failed (re)load in
                        explicit mode Triton waits out the whole timeout on
                        SIGTERM (it still counts the failed model as live; the
                        official python backend behaves the same).
    env:                extra environment variables on top of the clean one.
    backend_directory:  serve the backends of this directory (an installed
                        layout) instead of a temp one built from backend_lib.
    """

    def __init__(self,
                 model_repositories: Sequence[os.PathLike] | os.PathLike,
                 *,
                 require_rustpy: bool = True,
                 backend_lib: Optional[os.PathLike] = None,
                 model_control_mode: str = "none",
                 load_models: Iterable[str] = (),
                 exit_on_error: bool = True,
                 strict_readiness: Optional[bool] = None,
                 wait_models: Optional[Iterable[str]] = None,
                 extra_args: Iterable[str] = (),
                 env: Optional[dict] = None,
                 log_verbose: int = 0,
                 startup_timeout: float = 120.0,
                 exit_timeout: int = 10,
                 backend_directory: Optional[os.PathLike] = None,
                 name: str = "triton"):
        if isinstance(model_repositories, (str, os.PathLike)):
            model_repositories = [model_repositories]
        self.model_repositories = [Path(r).resolve() for r in model_repositories]
        self.reference = reference_mode()
        self.require_rustpy = require_rustpy and not self.reference
        self.backend_lib = Path(backend_lib) if backend_lib else rustpy_backend_lib()
        self.model_control_mode = model_control_mode
        self.load_models = list(load_models)
        self.exit_on_error = exit_on_error
        self.strict_readiness = strict_readiness
        self.wait_models = None if wait_models is None else list(wait_models)
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.log_verbose = log_verbose
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.name = name
        self.backend_directory = Path(backend_directory) if backend_directory else None

        self.tmpdir: Optional[Path] = None
        self.proc: Optional[subprocess.Popen] = None
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._log_fh = None
        self._clients = weakref.WeakSet()

    # ------------------------------------------------------------------ paths
    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None, "server was never started"
        return self.tmpdir / "tritonserver.log"

    @property
    def backend_dir(self) -> Path:
        if self.backend_directory is not None:
            return self.backend_directory
        assert self.tmpdir is not None
        return self.tmpdir / "backends"

    @property
    def shm_prefix(self) -> str:
        return f"rustpy_e2e_{os.getpid()}_{self.http_port}_"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    # ------------------------------------------------------------- lifecycle
    def _make_backend_dir(self) -> None:
        if self.backend_directory is None:
            populate_backends(self.backend_dir, self.backend_lib, self.require_rustpy)

    def _served_repositories(self) -> list:
        if not self.reference:
            return self.model_repositories
        return [make_reference_repository(r, self.tmpdir / "reference" / f"{i}_{r.name}")
                for i, r in enumerate(self.model_repositories)]

    def served_model_py(self, model: str, version: str = "1", repo: int = 0) -> Path:
        """The model.py the running server loads for `model` (a copy in reference mode)."""
        base = Path(self._repos[repo]) / model / version
        return base / "user" / "model.py" if self.reference else base / "model.py"

    def command(self) -> list:
        args = [
            str(tritonserver_binary()),
            *[f"--model-repository={r}" for r in self._repos],
            f"--backend-directory={self.backend_dir}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--model-control-mode={self.model_control_mode}",
            f"--exit-on-error={'true' if self.exit_on_error else 'false'}",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
            # Concurrent servers must not share the python backend's shm names.
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.strict_readiness is not None:
            args.append(f"--strict-readiness={'true' if self.strict_readiness else 'false'}")
        args += [f"--load-model={m}" for m in self.load_models]
        args += self.extra_args
        return args

    def start(self) -> "TritonServer":
        exe = tritonserver_binary()
        if not exe.is_file():
            raise TritonStartError(f"tritonserver not found at {exe}; run ci/install.sh")
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except TritonStartError as e:
                self.stop()
                # A port taken between free_port() and the server's bind: retry.
                if not _PORT_IN_USE.search(self.log_text()) or attempt == 2:
                    raise e
        return self

    def _start_once(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"rustpy-{self.name}-"))
        self._make_backend_dir()
        self._repos = self._served_repositories()
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        while len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
            self.grpc_port, self.metrics_port = free_port(), free_port()
        cmd = self.command()
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(("$ " + " ".join(cmd) + "\n").encode())
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT,
            env=clean_env(self.extra_env), cwd=self.tmpdir, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {rc} during startup\n" + self.log_tail())
            if self._is_up():
                return
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready after {self.startup_timeout:.0f}s "
                    f"(waiting for {self.wait_models or '/v2/health/ready'})\n" + self.log_tail())
            time.sleep(0.2)

    def _is_up(self) -> bool:
        # Triton starts gRPC, then HTTP, then metrics: HTTP answering "ready"
        # does not mean the metrics port listens yet (a first scrape right after
        # start() was refused in CI), so every endpoint must accept a connection.
        if not all(_accepts(p) for p in (self.grpc_port, self.metrics_port)):
            return False
        if self.wait_models is None:
            return self.get("/v2/health/ready")[0] == 200
        if self.get("/v2/health/live")[0] != 200:
            return False
        return all(self.model_ready(m) for m in self.wait_models)

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after exit_timeout + 10 s; returns the exit code. Leftover members
        of the server's process group (python backend stubs outlive a killed
        server) are killed too, and its shared-memory regions removed."""
        rc = None
        self.close_clients()
        if self.proc is not None:
            if self.proc.poll() is None:
                _killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=self.exit_timeout + 10)
                except subprocess.TimeoutExpired:
                    _killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            _killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.returncode
            self.proc = None
            for shm in Path("/dev/shm").glob(self.shm_prefix + "*"):
                try:
                    shm.unlink()
                except OSError:
                    pass
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self.tmpdir is not None and not os.environ.get("RUSTPY_E2E_KEEP"):
            # log_text() keeps working after the temp dir is gone.
            self._final_log = self.log_text()
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return rc

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (AssertionError, FileNotFoundError):
            return getattr(self, "_final_log", "")

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()[-lines:]
        return f"----- tail of tritonserver log ({self.name}) -----\n" + "\n".join(text)

    def wait_for_log(self, needle: str, timeout: float = 90.0) -> bool:
        # Generous: only a failing wait pays it, and a loaded CI machine
        # (2 cores, load 16) can take tens of seconds to get a line logged.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------- REST
    def request(self, method: str, path: str, body=None, timeout: float = 30.0):
        """Returns (status, parsed JSON or text or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, ConnectionError, OSError):
            return 0, None
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    # request() reports a timeout as status 0, so a short timeout turns a slow
    # answer on a loaded machine into "not ready"/"not live": keep them long.
    def get(self, path: str, timeout: float = 60.0):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body=None, timeout: float = 300.0):
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def is_ready(self) -> bool:
        return self.get("/v2/health/ready")[0] == 200

    def is_live(self) -> bool:
        return self.get("/v2/health/live")[0] == 200

    def model_ready(self, model: str, version: str = "") -> bool:
        v = f"/versions/{version}" if version else ""
        return self.get(f"/v2/models/{model}{v}/ready")[0] == 200

    def repository_index(self) -> list:
        """[{"name", "version"?, "state"?, "reason"?}, ...] over all repositories."""
        status, body = self.post("/v2/repository/index")
        assert status == 200, (status, body)
        return body

    def model_stats(self, model: str, version: str = "") -> dict:
        """The single model_stats entry of /v2/models/<model>[/versions/<v>]/stats."""
        v = f"/versions/{version}" if version else ""
        status, body = self.get(f"/v2/models/{model}{v}/stats")
        assert status == 200, (status, body)
        stats = body["model_stats"]
        assert len(stats) == 1, stats
        return stats[0]

    def model_stats_when(self, model: str, ready, timeout: float = 90.0) -> dict:
        """model_stats once ready(stats) holds, or the last read after timeout.

        Every backend (the official one too) reports statistics just after it
        sends the final response, so a client can hold its answer before the
        counters move; on a loaded machine that gap is long enough to see."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.model_stats(model)
            if ready(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def model_config(self, model: str) -> dict:
        status, body = self.get(f"/v2/models/{model}/config")
        assert status == 200, (status, body)
        return body

    def load_model(self, model: str):
        return self.post(f"/v2/repository/models/{model}/load")

    def unload_model(self, model: str):
        return self.post(f"/v2/repository/models/{model}/unload")

    # ---------------------------------------------------------------- clients
    # Clients made here are closed by stop(): an open HTTP keep-alive connection
    # would make tritonserver wait out its whole --exit-timeout-secs on SIGTERM.
    def http_client(self, **kw):
        import tritonclient.http as httpclient
        kw.setdefault("network_timeout", 120.0)
        c = httpclient.InferenceServerClient(self.http_url, **kw)
        self._clients.add(c)
        return c

    def grpc_client(self, **kw):
        import tritonclient.grpc as grpcclient
        c = grpcclient.InferenceServerClient(self.grpc_url, **kw)
        self._clients.add(c)
        return c

    def close_clients(self) -> None:
        clients, self._clients = list(self._clients), weakref.WeakSet()
        for c in clients:
            try:
                c.close()
            except Exception:
                pass


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", action="append", default=[],
                   help="model repository (repeatable; default model_repository/)")
    p.add_argument("--model-control-mode", default="none")
    p.add_argument("--load-model", action="append", default=[])
    p.add_argument("--exit-on-error", default="true", choices=["true", "false"])
    p.add_argument("--wait", action="append", default=None, metavar="MODEL",
                   help="wait for these models instead of /v2/health/ready")
    p.add_argument("--no-rustpy", action="store_true",
                   help="do not require libtriton_rustpy.so")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("extra", nargs="*", help="extra tritonserver args (after --)")
    a = p.parse_args(argv)
    server = TritonServer(a.repo or [MODEL_REPOSITORY], require_rustpy=not a.no_rustpy,
                          model_control_mode=a.model_control_mode, load_models=a.load_model,
                          exit_on_error=a.exit_on_error == "true", wait_models=a.wait,
                          extra_args=a.extra, log_verbose=a.log_verbose, name="cli")
    try:
        server.start()
    except TritonStartError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"tritonserver ready: http={server.http_url} grpc={server.grpc_url} "
          f"metrics={server.metrics_url}\nlog: {server.log_path}\nCtrl-C to stop", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while server.running:
            time.sleep(0.5)
        print("tritonserver exited\n" + server.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
