"""`request.set_release_flags(RESCHEDULE)` (iterative sequences, issue 11),
in process isolation and in-process: every test runs against both (the
same models, in-process copies without the `rustpy.isolation` parameter).
In process mode the worker reports which requests the model asked to
reschedule; either way the backend releases them with Triton's RESCHEDULE
flag, unanswered, and Triton executes them again; each answer carries the
pid of the process that ran the model (a worker, or the server itself).
Models: tests/e2e/repos/process (proc_resched_stream: decoupled,
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


ISOLATION_LINE = 'parameters { key: "rustpy.isolation" value { string_value: "process" } }\n'


@pytest.fixture(scope="module", params=["process", "in_process"])
def server(tmp_path_factory, request):
    repo = copy_models(tmp_path_factory.mktemp("resched") / "repo",
                       PROCESS / "proc_resched_stream", PROCESS / "proc_resched",
                       PROCESS / "proc_resched_answered")
    if request.param == "in_process":
        for cfg in repo.glob("*/config.pbtxt"):
            text = cfg.read_text()
            assert ISOLATION_LINE in text, cfg
            cfg.write_text(text.replace(ISOLATION_LINE, ""))
    s = start_server(repo, name=f"resched_{request.param}")
    s.isolation = request.param
    yield s
    s.stop()


def assert_ran_where_configured(server, pid):
    if server.isolation == "process":
        assert pid != server.proc.pid, "not run in a worker process"
    else:
        assert pid == server.proc.pid, "not run in the server's own process"


def infer_once(server, protocol, model, inputs, **kw):
    """One request with a 90 s client timeout (a request that is never
    answered fails the test instead of hanging it)."""
    if protocol == "grpc":
        return server.grpc_client().infer(model, inputs, client_timeout=90, **kw)
    return server.http_client(network_timeout=90).infer(model, inputs, **kw)


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
                assert_ran_where_configured(server, int(r.as_numpy("PID")[0]))
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
        r = infer_once(server, protocol, "proc_resched",
                       make_inputs(protocol, {"IN": np.array([total], np.int32)}),
                       request_id=f"{protocol}{seq}")
        assert int(r.as_numpy("STEPS")[0]) == total, (seq, r.as_numpy("STEPS"))
        assert_ran_where_configured(server, int(r.as_numpy("PID")[0]))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_response_for_a_rescheduled_request_fails_it(server, protocol):
    """Asking to be rescheduled and returning a response fails the request with
    upstream's message, once, and it is not rescheduled."""
    x = np.arange(4, dtype=np.float32)
    for seq in (31, 32):
        with pytest.raises(InferenceServerException) as err:
            client(server, protocol).infer("proc_resched_answered",
                                           make_inputs(protocol, {"IN": x}),
                                           sequence_id=seq, sequence_start=True,
                                           sequence_end=True)
        assert MESSAGE in err.value.message(), err.value.message()
    # The server and the model keep serving.
    r = infer_once(server, protocol, "proc_resched",
                   make_inputs(protocol, {"IN": np.array([2], np.int32)}), request_id=f"{protocol}33")
    assert int(r.as_numpy("STEPS")[0]) == 2
