"""Process isolation, decoupled models (issue 11): the instance takes its
next batch while earlier requests are still being answered from user
threads, and the client's cancellation reaches the worker
(`request.is_cancelled()` in pb_utils, `RequestInfo.cancelled` / the
generator closed in the batched API). All over gRPC streaming, against the
real server. Models: tests/e2e/repos/process (proc_decoupled,
proc_stream_cancel); no test depends on timing beyond generous bounds.
"""
import queue
import time

import numpy as np
import pytest

from e2e_client import make_inputs
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

PROCESS = E2E_DIR / "repos" / "process"


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def server(tmp_path_factory, markers):
    repo = copy_models(tmp_path_factory.mktemp("decoupled") / "repo",
                       PROCESS / "proc_decoupled", PROCESS / "proc_stream_cancel")
    s = start_server(repo, name="decoupled", env={"RUSTPY_TEST_MARKERS": markers})
    yield s
    s.stop()


def open_stream(server):
    c = server.grpc_client()
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    return c, q


def send(c, model, request_id, **arrays):
    c.async_stream_infer(model, make_inputs("grpc", {k: np.array([v], np.int32)
                                                    for k, v in arrays.items()}),
                         request_id=request_id, enable_empty_final_response=True)


def next_response(q, timeout=30):
    """(OUT value or None, final) of the next response; fails on an error."""
    r, e = q.get(timeout=timeout)
    assert e is None, e
    final = r.get_response().parameters["triton_final_response"].bool_param
    out = r.as_numpy("OUT")
    return (None if out is None else int(out[0])), final


def test_an_open_decoupled_request_does_not_hold_the_instance(server, markers):
    """`slow` keeps its stream open (its thread waits for a marker file) on
    the model's only instance; `fast`, sent after it, must be executed and
    finish meanwhile. Before, the backend waited for every final response of
    a batch before the instance took the next one, so `fast` waited for
    `slow` (and here, for ever: `slow` is released only once `fast` is done)."""
    release = markers / "release"
    release.unlink(missing_ok=True)
    c1, q1 = open_stream(server)
    send(c1, "proc_decoupled", "slow", COUNT=3, WAIT=1)
    assert next_response(q1) == (0, False)
    c2, q2 = open_stream(server)
    send(c2, "proc_decoupled", "fast", COUNT=2, WAIT=0)
    got = [next_response(q2, timeout=30) for _ in range(3)]
    assert got == [(0, False), (1, False), (None, True)], got
    assert q1.empty(), "slow answered before it was released"
    release.write_text("go")
    rest = [next_response(q1, timeout=60) for _ in range(3)]
    assert rest == [(1, False), (2, False), (None, True)], rest
    c1.stop_stream()
    c2.stop_stream()


def test_cancellation_reaches_a_pb_utils_thread(server, markers):
    (markers / "release").write_text("go")
    c, q = open_stream(server)
    send(c, "proc_decoupled", "long", COUNT=5000, WAIT=1)
    assert [next_response(q)[0] for _ in range(3)] == [0, 1, 2]
    c.stop_stream(cancel_requests=True)
    assert server.wait_for_log("proc_decoupled: long cancelled after", timeout=30), \
        "request.is_cancelled() never became true in the worker"
    line = [ln for ln in server.log_text().splitlines() if "proc_decoupled: long cancelled after" in ln][-1]
    assert int(line.rsplit(" ", 1)[1].strip('"')) < 5000
    # The instance still serves.
    c2, q2 = open_stream(server)
    send(c2, "proc_decoupled", "after", COUNT=1, WAIT=0)
    assert [next_response(q2) for _ in range(2)] == [(0, False), (None, True)]
    c2.stop_stream()


def test_cancellation_stops_a_batched_generator(server):
    c, q = open_stream(server)
    send(c, "proc_stream_cancel", "gen", COUNT=5000)
    assert [next_response(q)[0] for _ in range(3)] == [0, 1, 2]
    c.stop_stream(cancel_requests=True)
    assert server.wait_for_log("proc_stream_cancel: gen ended after", timeout=30), \
        "the generator did not end after the stream was cancelled"
    line = [ln for ln in server.log_text().splitlines() if "proc_stream_cancel: gen ended after" in ln][-1]
    assert int(line.rsplit(" ", 1)[1].strip('"')) < 5000
    c2, q2 = open_stream(server)
    send(c2, "proc_stream_cancel", "short", COUNT=2)
    assert [next_response(q2) for _ in range(3)] == [(0, False), (1, False), (None, True)]
    c2.stop_stream()
