"""Loads that must fail, promptly, with the cause, while the server serves
on (python_backend's hardening after r24.10, issue 23):

- an `initialize` that fails after starting a thread that never ends, or
  (process-isolated) kills its own process: the load fails at once, upstream's
  "Stub process '<instance>' is not healthy." names a dead worker, nothing
  waits on the thread, and the server still stops cleanly;
- model names the official backend refuses since r25.08 ("Invalid stub name:
  contains invalid characters");
- an `EXECUTION_ENV_PATH` archive whose entries would be written outside
  its directory (refused since r26.06).
"""
import io
import tarfile

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from e2e_client import PROTOCOLS, infer

CONFIG = """name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
{extra}
"""

IDENTITY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(
            [pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests]
'''

THREAD_THEN_RAISE = '''
import threading


class TritonPythonModel:
    def initialize(self, args):
        # A non-daemon thread that never ends, then a failure.
        threading.Thread(target=threading.Event().wait, name="forever").start()
        raise RuntimeError("the weights are missing")

    def execute(self, requests):
        pass
'''

KILLS_ITSELF = '''
import os
import signal


class TritonPythonModel:
    def initialize(self, args):
        os.kill(os.getpid(), signal.SIGKILL)

    def execute(self, requests):
        pass
'''

PROCESS = 'parameters { key: "rustpy.isolation" value { string_value: "process" } }'


def add(repo, name, code, extra=""):
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(CONFIG.format(name=name, extra=extra))
    (d / "1" / "model.py").write_text(code)


def load_error(server, name):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        with pytest.raises(InferenceServerException) as e:
            c.load_model(name)
        assert not c.is_model_ready(name)
    return e.value.message()


def evil_env(path):
    """A conda-pack-like archive with an entry that climbs out of it."""
    with tarfile.open(path, "w:gz") as t:
        for name, data in (("lib/python3.11/site-packages/ok.py", b"V = 1\n"),
                           ("../../escaped.py", b"import os\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_failed_loads_fail_promptly_and_the_server_serves_on(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    add(repo, "healthy", IDENTITY)
    add(repo, "thread_then_raise", THREAD_THEN_RAISE)
    add(repo, "thread_then_raise_proc", THREAD_THEN_RAISE, PROCESS)
    add(repo, "kills_itself_proc", KILLS_ITSELF, PROCESS)
    add(repo, "model;test", IDENTITY)
    add(repo, "model$test", IDENTITY)
    add(repo, "evil_env", IDENTITY,
        'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }')
    evil_env(repo / "evil_env" / "env.tar.gz")
    s = triton_factory(repo, model_control_mode="explicit", load_models=["healthy"],
                       wait_models=["healthy"], exit_on_error=False)

    for name in ("thread_then_raise", "thread_then_raise_proc"):
        assert "RuntimeError: the weights are missing" in load_error(s, name)
    message = load_error(s, "kills_itself_proc")
    assert "Stub process 'kills_itself_proc_0' is not healthy." in message or \
        "Stub process 'kills_itself_proc_0_0' is not healthy." in message, message
    for name in ("model;test", "model$test"):
        assert "Invalid stub name: contains invalid characters" in load_error(s, name)
    message = load_error(s, "evil_env")
    assert "path traversal" in message and "../../escaped.py" in message, message
    assert not (tmp_path / "escaped.py").exists() and not (repo / "escaped.py").exists()

    for protocol in PROTOCOLS:
        out = infer(s, protocol, "healthy", {"IN": np.array([2.0], dtype=np.float32)})
        assert out.as_numpy("OUT").tolist() == [2.0]
    # The never-ending thread of a failed in-process initialize does not keep
    # the server from exiting (upstream's stub process would simply die).
    assert s.stop() is not None
    assert "killed by SIGKILL" not in s.log_text()
