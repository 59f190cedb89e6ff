"""pb_utils: a response that cannot be converted fails its own request only
(issue 9, item 4). `one_bad` (tests/e2e/repos/pb_responses/) answers a batch
of 4 requests; the response to the first one (IN == 0) holds a string with no
UTF-8 encoding. Before the fix the conversion error aborted the sending loop
and every later request of the batch got that error."""
import json
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import client, infer, make_inputs
from tritonharness import E2E_DIR


def _pending(s, model):
    """nv_inference_pending_request_count of `model` (queued, not yet executing)."""
    import urllib.request
    with urllib.request.urlopen(s.metrics_url, timeout=60) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("nv_inference_pending_request_count") and f'model="{model}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_bad_response_fails_only_its_request(triton_factory, protocol):
    s = triton_factory(E2E_DIR / "repos" / "pb_responses", name="pb_responses")
    results = {}

    def send(v):
        try:
            r = infer(s, protocol, "one_bad", {"IN": np.array([[v]], dtype=np.int32)})
            results[v] = json.loads(r.as_numpy("OUT")[0, 0])
        except InferenceServerException as e:
            results[v] = e

    # The bad request first, so it heads the batch (requests keep their
    # arrival order in a dynamic batch).
    threads = [threading.Thread(target=send, args=(v,)) for v in range(4)]
    threads[0].start()
    # Until Triton has it queued (a fixed sleep may be too short on a loaded
    # machine); the queue delay is 5 s, so at most 3 s.
    deadline = time.monotonic() + 3
    while _pending(s, "one_bad") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2, 3], results
    bad = results[0]
    assert isinstance(bad, InferenceServerException), bad
    assert "one_bad" in bad.message() and "OUT" in bad.message(), bad.message()
    for v in (1, 2, 3):
        assert not isinstance(results[v], Exception), (v, results[v])
        assert results[v]["value"] == v
    # They were one batch (else the test would not show anything).
    assert {results[v]["batch"] for v in (1, 2, 3)} == {4}, results
    # And the server keeps serving.
    r = infer(s, protocol, "one_bad", {"IN": np.array([[7]], dtype=np.int32)})
    assert json.loads(r.as_numpy("OUT")[0, 0])["value"] == 7


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_response_for_a_rescheduled_request_fails_it_once(triton_factory, protocol):
    """A request that asked to be rescheduled but got a response from execute
    fails with upstream's message and is released, not rescheduled: handing
    it back to Triton after its FINAL response made the server crash when the
    rescheduled request was executed again."""
    s = triton_factory(E2E_DIR / "repos" / "pb_responses", name="pb_responses")
    x = np.arange(4, dtype=np.float32)
    for seq in (1, 2, 3):
        with pytest.raises(InferenceServerException) as err:
            client(s, protocol).infer("reschedule_answered", make_inputs(protocol, {"IN": x}),
                                      sequence_id=seq, sequence_start=True, sequence_end=True)
        assert "Expected a None object in the execute function return list for reschduled request" \
            in err.value.message(), err.value.message()
    # The server is alive and still serving other models.
    r = infer(s, protocol, "one_bad", {"IN": np.array([[7]], dtype=np.int32)})
    assert json.loads(r.as_numpy("OUT")[0, 0])["value"] == 7


def test_response_for_a_rescheduled_request_through_bls(triton_factory, tmp_path):
    """The same through BLS, where the crash showed (a second answer reached
    the BLS caller's completion state after its FINAL): every call gets the
    error once, is executed once, and the server stays up. The model logs
    each execution (IN[0] of the request): a request rescheduled after all
    would be executed again, before the next call's request that came later
    (one instance)."""
    s = triton_factory(E2E_DIR / "repos" / "pb_responses", name="pb_responses",
                       env={"RUSTPY_TEST_MARKERS": str(tmp_path)})
    for k in range(1, 7):
        r = infer(s, "grpc", "reschedule_caller", {"IN": np.full(4, k, np.float32)})
        message = r.as_numpy("ERROR")[0].decode()
        assert "Expected a None object in the execute function return list for reschduled request" \
            in message, message
    executed = (tmp_path / "reschedule_answered.log").read_text().split()
    assert executed == ["1", "2", "3", "4", "5", "6"], executed
    r = infer(s, "http", "one_bad", {"IN": np.array([[7]], dtype=np.int32)})
    assert json.loads(r.as_numpy("OUT")[0, 0])["value"] == 7
