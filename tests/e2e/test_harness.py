"""The harness itself, checked against the official Python backend (no rustpy needed)."""
import textwrap

import numpy as np
import pytest

from e2e_client import infer
from tritonharness import TritonServer, TritonStartError, clean_env

PB_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

PB_MODEL = textwrap.dedent("""
    import sys
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            print("pb_double initialized with", sys.executable, flush=True)

        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
                out.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))]))
            return out
""")


def write_model(repo, name, config, model_py):
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(model_py)


def test_official_python_backend_http_and_grpc(tmp_path, triton_factory, monkeypatch):
    # The harness must not need rustpy nor depend on the reference mode here.
    monkeypatch.delenv("RUSTPY_E2E_REFERENCE", raising=False)
    write_model(tmp_path, "pb_double", PB_CONFIG, PB_MODEL)
    s = triton_factory(tmp_path, require_rustpy=False, wait_models=["pb_double"])
    assert (s.backend_dir / "python").is_symlink()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for protocol in ("http", "grpc"):
        out = infer(s, protocol, "pb_double", {"INPUT0": x}).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, x * 2)
    stats = s.model_stats_when("pb_double", lambda st: st["inference_count"] >= 4)
    assert stats["inference_count"] == 4 and stats["execution_count"] == 2
    assert s.is_ready()
    assert "pb_double initialized" in s.log_text()
    log_path = s.log_path
    assert s.stop() is not None
    assert not log_path.exists()
    assert "pb_double initialized" in s.log_text()  # still readable after stop


def test_startup_failure_raises_with_log_tail(tmp_path, monkeypatch):
    monkeypatch.delenv("RUSTPY_E2E_REFERENCE", raising=False)
    write_model(tmp_path, "pb_broken", PB_CONFIG.replace("TYPE_FP32", "TYPE_NOPE", 1),
                PB_MODEL)
    s = TritonServer(tmp_path, require_rustpy=False, name="broken", startup_timeout=60)
    with pytest.raises(TritonStartError) as e:
        s.start()
    assert "exited with code" in str(e.value)
    assert "pb_broken" in str(e.value)  # the log tail explains which model failed
    assert not s.running


def test_clean_environment(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/nope")
    monkeypatch.setenv("PYENV_VERSION", "3.99")
    monkeypatch.setenv("VIRTUAL_ENV", "/venv")
    monkeypatch.setenv("RUSTPY_SOMETHING", "kept")
    env = clean_env({"EXTRA": 1})
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "PYTHONPATH" not in env and "PYENV_VERSION" not in env and "VIRTUAL_ENV" not in env
    assert env["RUSTPY_SOMETHING"] == "kept" and env["EXTRA"] == "1"


def test_ready_waits_for_every_endpoint_not_only_http(tmp_path):
    """Triton starts its metrics service after HTTP answers "ready"; start() must
    not return in between (a scrape right after start() was refused in CI)."""
    import http.server
    import socket
    import threading

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    http_srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=http_srv.serve_forever, daemon=True).start()
    listeners = []
    try:
        s = TritonServer(tmp_path, require_rustpy=False)
        s.http_port = http_srv.server_address[1]
        # Two bound but not yet listening sockets: ports nobody else takes meanwhile.
        for _ in range(2):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            listeners.append(sock)
        s.grpc_port, s.metrics_port = (x.getsockname()[1] for x in listeners)
        assert s.is_ready()  # HTTP alone says ready ...
        assert not s._is_up()  # ... but gRPC and metrics refuse connections
        listeners[0].listen()
        assert not s._is_up()  # metrics still refuses
        listeners[1].listen()
        assert s._is_up()
    finally:
        http_srv.shutdown()
        for sock in listeners:
            sock.close()
