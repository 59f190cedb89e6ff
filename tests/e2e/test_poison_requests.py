"""One poison request must not fail the batch it shares (issue 25,
`rustpy.isolate_failures`, docs/reliability.md).

Models: tests/e2e/repos/poison. Each waits (up to 10 s) until 32 requests
can share one call; a request whose X is negative makes the whole call
raise. A model directory without a model.py runs poison_batched's (copied
in by the fixture). With `rustpy.isolate_failures` the failed requests are run again in
halves until the poison fails alone: 31 answers and one error naming the
exception, over HTTP and gRPC, for the batched API, the pb_utils API and a
process-isolated model. The same model without the option fails the whole
batch (which shows the requests did share calls); a model failing
everything answers each request once, with a bounded number of calls.
"""
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import PROTOCOLS, infer
from reliability import copy_models, start_server
from test_metrics import scrape, settled
from tritonharness import E2E_DIR

REPO = E2E_DIR / "repos" / "poison"
BATCH = 32
POISON = 13
# A model that fails every call: the first call, two halves, four quarters.
MOST_CALLS_PER_EXECUTION = 7


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("poison") / "repo",
                       *sorted(p for p in REPO.iterdir() if p.is_dir()))
    for model in repo.iterdir():
        if not (model / "1" / "model.py").exists():
            (model / "1").mkdir(exist_ok=True)
            shutil.copy(REPO / "poison_batched" / "1" / "model.py", model / "1" / "model.py")
    s = start_server(repo, name="poison")
    yield s
    s.stop()


def one_request(server, protocol: str, model: str, value: float):
    """("ok", Y) or ("error", message) for one request of X = [[value]]
    (its own client: the 32 requests are sent from 32 threads)."""
    try:
        result = infer(server, protocol, model, {"X": np.array([[value]], dtype=np.float32)})
    except InferenceServerException as e:
        return "error", e.message()
    return "ok", float(result.as_numpy("Y")[0, 0])


def batch_of_32(server, protocol: str, model: str, poison=(POISON,)):
    """Sends 32 requests at once (X = index, negative at `poison`); their results in order."""
    values = [-1.0 if i in poison else float(i) for i in range(BATCH)]
    with ThreadPoolExecutor(BATCH) as pool:
        return list(pool.map(lambda v: one_request(server, protocol, model, v), values))


def counters(server, model: str) -> tuple:
    m = scrape(server)
    return (m.get("rustpy_executions_total", model=model),
            m.get("rustpy_calls_total", model=model))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", ["poison_batched", "poison_pb", "poison_process"])
def test_one_poison_in_a_batch_of_32_fails_alone(server, model, protocol):
    executions, calls = counters(server, model)
    results = batch_of_32(server, protocol, model)
    for i, (kind, value) in enumerate(results):
        if i == POISON:
            assert kind == "error", (i, value)
            assert model in value and "ValueError: poison row" in value, value
        else:
            assert (kind, value) == ("ok", 2.0 * i), (i, kind, value)
    after = settled(server, "rustpy_executions_total", executions + 1, model=model)
    more_executions = after.get("rustpy_executions_total", model=model) - executions
    more_calls = after.get("rustpy_calls_total", model=model) - calls
    # Re-runs happened: a call failed while it held more than one request.
    assert more_calls > more_executions, (more_calls, more_executions)


def test_without_the_option_a_poison_fails_the_requests_it_shares_a_call_with(server):
    results = batch_of_32(server, "http", "poison_control")
    failed = [i for i, (kind, _) in enumerate(results) if kind == "error"]
    assert POISON in failed and len(failed) > 1, failed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_failing_everything_fails_each_request_once_at_a_bounded_cost(server, protocol):
    model = "always_fails"
    executions, calls = counters(server, model)
    results = batch_of_32(server, protocol, model, poison=())
    for kind, message in results:
        assert kind == "error" and "ValueError: poison row" in message, (kind, message)
    after = settled(server, "rustpy_executions_total", executions + 1, model=model)
    more_executions = after.get("rustpy_executions_total", model=model) - executions
    more_calls = after.get("rustpy_calls_total", model=model) - calls
    assert 0 < more_calls <= MOST_CALLS_PER_EXECUTION * more_executions, (more_calls, more_executions)
    # Not one call per request: the failure was the model's, found in a few calls.
    assert more_calls < BATCH, more_calls


def test_a_poison_that_kills_the_worker_is_pinned_like_an_exception(server):
    """The poison ends the worker process (os._exit) instead of raising. A
    worker that started and then crashed is restarted at once (backoff is
    only for workers that cannot start), so each re-run half runs in a fresh
    worker: 31 answers and the poison's error, which names the exit; the
    model serves whole batches afterwards. Over both protocols, twice, so
    the second round runs in a worker restarted by the first."""
    for protocol in PROTOCOLS:
        results = batch_of_32(server, protocol, "poison_crash")
        assert [r for i, r in enumerate(results) if i != POISON] == \
            [("ok", 2.0 * i) for i in range(BATCH) if i != POISON]
        kind, message = results[POISON]
        assert kind == "error" and "poison_crash" in message and "exited with status 3" in message, \
            results[POISON]
    assert batch_of_32(server, "http", "poison_crash", poison=()) == \
        [("ok", 2.0 * i) for i in range(BATCH)]
