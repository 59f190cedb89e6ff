"""Process isolation: `request.set_release_flags(RESCHEDULE)` (iterative
sequences, issue 11). The worker reports which requests the model asked to
reschedule; the backend releases them with Triton's RESCHEDULE flag, unanswered,
as in-process (tests/e2e/test_pb_responses.py), and Triton executes them
again. Models: tests/e2e/repos/process (proc_resched_stream: decoupled,
streams one response per execution; proc_resched: one response at the last
execution; proc_resched_answered: asks to be rescheduled but returns a
response). Upstream's rules (python_backend README, "Request Rescheduling"):
both decoupled and default models may reschedule, with
`sequence_batching { iterative_sequence: true }`.
"""
import queue

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import client, make_inputs
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

PROCESS = E2E_DIR / "repos" / "process"
MESSAGE = "Expected a None object in the execute function return list for reschduled request"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("resched") / "repo",
                       PROCESS / "proc_resched_stream", PROCESS / "proc_resched",
                       PROCESS / "proc_resched_answered")
    s = start_server(repo, name="resched")
    yield s
    s.stop()


def test_decoupled_request_rescheduled_until_its_last_step(server):
    """Each request is executed IN times (the model counts executions per
    request id) and streams one response per execution, the last one FINAL.
    Before, the backend ignored the rescheduling: the request was released
    after its first execution and its stream never ended."""
    c = server.grpc_client()
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        for seq, total in ((11, 4), (12, 1), (13, 3)):
            c.async_stream_infer("proc_resched_stream",
                                 make_inputs("grpc", {"IN": np.array([total], np.int32)}),
                                 request_id=f"r{seq}", enable_empty_final_response=True)
            got = []
            while True:
                r, e = q.get(timeout=60)
                assert e is None, e
                final = r.get_response().parameters["triton_final_response"].bool_param
                got.append((int(r.as_numpy("STEP")[0]), int(r.as_numpy("OUT")[0]), final))
                pid = int(r.as_numpy("PID")[0])
                assert pid != server.proc.pid, "not run in a worker process"
                if final:
                    break
            assert got == [(s, total - s, s == total) for s in range(1, total + 1)], (seq, got)
    finally:
        c.stop_stream()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_default_model_request_rescheduled_then_answered(server, protocol):
    """A non-decoupled model returns None for the request it reschedules and
    answers it at its last execution: one response, counting every execution."""
    for seq, total in ((21, 3), (22, 1), (23, 5)):
        r = client(server, protocol).infer(
            "proc_resched", make_inputs(protocol, {"IN": np.array([total], np.int32)}),
            request_id=f"{protocol}{seq}")
        assert int(r.as_numpy("STEPS")[0]) == total, (seq, r.as_numpy("STEPS"))
        assert int(r.as_numpy("PID")[0]) != server.proc.pid


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_response_for_a_rescheduled_request_fails_it_as_in_process(server, protocol):
    """Asking to be rescheduled and returning a response fails the request with
    upstream's message, once, and it is not rescheduled (as in-process)."""
    x = np.arange(4, dtype=np.float32)
    for seq in (31, 32):
        with pytest.raises(InferenceServerException) as err:
            client(server, protocol).infer("proc_resched_answered",
                                           make_inputs(protocol, {"IN": x}),
                                           sequence_id=seq, sequence_start=True,
                                           sequence_end=True)
        assert MESSAGE in err.value.message(), err.value.message()
    # The server and the model keep serving.
    r = client(server, protocol).infer(
        "proc_resched", make_inputs(protocol, {"IN": np.array([2], np.int32)}),
        request_id=f"{protocol}33")
    assert int(r.as_numpy("STEPS")[0]) == 2
