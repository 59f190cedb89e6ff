"""Process isolation: a batch whose inputs cannot be placed in the
instance's input shared memory (issue 11). `rustpy.input_shm_limit_mb` caps
how far the region grows; a batch that needs more fails with a message
naming the model, the instance, the size and the limit, while the worker (alive,
waiting for its next batch) keeps serving. Before, any failure to grow the
region was treated as a dead worker, and the backend waited for a process that
never exits (the instance hung for good). Model: tests/e2e/repos/process/proc_shm_limit.
"""
import threading

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import infer
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

PROCESS = E2E_DIR / "repos" / "process"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("limits") / "repo",
                       PROCESS / "proc_shm_limit", PROCESS / "steady")
    s = start_server(repo, name="limits")
    yield s
    s.stop()


def run_bounded(fn, timeout=60):
    """Runs fn() on a thread; fails (instead of hanging the suite) if it does
    not finish within `timeout` seconds."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"no answer within {timeout} s (the instance hangs)"
    return out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_batch_larger_than_the_input_limit_fails_alone(server, protocol):
    small = np.ones(1000, np.float32)
    first = run_bounded(lambda: infer(server, protocol, "proc_shm_limit", {"X": small}))
    assert "error" not in first, first
    pid = int(first["value"].as_numpy("PID")[0])
    assert pid != server.proc.pid

    big = np.ones(3 << 18, np.float32)  # 3 MiB > the 2 MiB limit
    got = run_bounded(lambda: infer(server, protocol, "proc_shm_limit", {"X": big}))
    err = got.get("error")
    assert isinstance(err, InferenceServerException), got
    msg = err.message()
    for part in ("model 'proc_shm_limit'", "instance 'proc_shm_limit_0_0'", "3.0 MiB",
                 "rustpy.input_shm_limit_mb = 2 MiB"):
        assert part in msg, msg

    # The same worker serves the next requests; so does another model.
    for n in (10, 1 << 18):  # 40 B, 1 MiB: within the limit
        after = run_bounded(lambda: infer(server, protocol, "proc_shm_limit",
                                          {"X": np.ones(n, np.float32)}))
        assert "error" not in after, after
        assert float(after["value"].as_numpy("SUM")[0]) == n
        assert int(after["value"].as_numpy("PID")[0]) == pid, "the worker was restarted"
    steady = infer(server, protocol, "steady", {"X": np.array([[3]], np.int32)})
    assert steady.as_numpy("Y") is not None
