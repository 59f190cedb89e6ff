"""What a model prints reaches the server's stdout/stderr while the server
runs, when they are a file (as under systemd, Kubernetes or any log
collector), without PYTHONUNBUFFERED in the server's environment: rustpy
line-buffers the embedded interpreter's streams and flushes them after
finalize and at shutdown.

The harness sends the server's stdout and stderr to one log file.
"""
import numpy as np
import pytest

from e2e_client import infer, make_inputs
from reliability import start_server
from tritonharness import E2E_DIR

STDIO = E2E_DIR / "repos" / "stdio"
MODELS = ["printer", "pb_printer"]


@pytest.fixture
def srv():
    s = start_server(STDIO, name="stdio", model_control_mode="explicit",
                     load_models=MODELS, wait_models=MODELS, log_verbose=1,
                     env={"PYTHONUNBUFFERED": ""})
    yield s
    s.stop()


def test_server_env_is_buffered(srv):
    """The premise: nothing in the server's environment unbuffers Python."""
    env = open(f"/proc/{srv.proc.pid}/environ", "rb").read().split(b"\0")
    assert not any(e.startswith(b"PYTHONUNBUFFERED=") and e != b"PYTHONUNBUFFERED=" for e in env)


def test_prints_reach_the_log_while_serving(srv):
    for line in ("printer: initialize on stdout", "printer: initialize on stderr",
                 "pb_printer: initialize pb_printer_"):
        assert srv.wait_for_log(line), line + "\n" + srv.log_tail()
    for i, protocol in enumerate(("http", "grpc")):
        for model in MODELS:
            r = infer(srv, protocol, model, {"X": np.array([40 + i], np.int32)})
            assert r.as_numpy("Y").tolist() == [40 + i]
        for line in (f"printer: predict {40 + i} on stdout", f"printer: predict {40 + i} on stderr",
                     f"pb_printer: execute {40 + i}"):
            assert srv.wait_for_log(line), line + "\n" + srv.log_tail()
    assert srv.running


def test_finalize_prints_reach_the_log_at_unload_and_shutdown(srv):
    assert srv.unload_model("printer")[0] == 200
    assert srv.wait_for_log("printer: finalize on stdout"), srv.log_tail()
    # The line without a newline was flushed after finalize.
    assert srv.wait_for_log("printer: finalize without newline"), srv.log_tail()
    assert srv.running
    # pb_printer is finalized by the shutdown: its lines are in the log once each.
    srv.stop()
    log = srv.log_text()
    assert log.count("Finalize invoked") == 1, log[-3000:]
    assert log.count("Finalize complete...") == 1, log[-3000:]
    # The verbose lines upstream's backend logs per instance and per model.
    assert log.count("TRITONBACKEND_ModelInstanceFinalize: delete instance state") == 2, log[-3000:]
    assert log.count("TRITONBACKEND_ModelFinalize: delete model state") == 2, log[-3000:]
