"""Batched API, part two (issue 12), against the real server over HTTP and gRPC:

- ragged batches: token-id requests of mixed lengths share predict calls
  (asserted from /stats and from what predict saw), every batch_input kind
  is computed (predict cross-checks them), the batch_output is scattered
  back by each request's input shape, and every value is checked;
- rustpy.ragged "pad": a dense [rows, longest] array plus lengths;
- per-request outputs of different shapes, and the errors: a list of the
  wrong length, a dict missing an output, a list mixing dicts and arrays,
  inconsistent ragged lengths returned;
- optional inputs with and without a default;
- a batched streaming predict ending one request's stream early, and one
  gRPC stream cancelled among several while the others go on.
"""
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from e2e_client import client, infer, infer_error, make_inputs
from tritonharness import E2E_DIR

RAGGED = E2E_DIR / "repos" / "ragged"
MODELS = ["tokens", "tokens_pad", "boxes", "opt_default", "opt_nodefault", "stream_ragged"]


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("ragged_markers")


@pytest.fixture(scope="module")
def srv(triton_factory_module, markers):
    return triton_factory_module(RAGGED, name="ragged", wait_models=MODELS,
                                 env={"RUSTPY_TEST_MARKERS": str(markers)})


@pytest.fixture(scope="module")
def triton_factory_module():
    from conftest import ServerFactory
    f = ServerFactory()
    yield f
    f.stop_all()


def settled_stats(s, model):
    """(inference_count, execution_count, fail count) once the counters stop
    moving (a response can reach the client just before they are updated)."""
    def read():
        st = s.model_stats(model)
        return st["inference_count"], st["execution_count"], st["inference_stats"]["fail"]["count"]
    # Unchanged for 0.5 s, bounded at 90 s: on a loaded machine the counters
    # can lag the responses by more than one quick re-read.
    deadline = time.monotonic() + 90
    last, still = read(), 0
    while still < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        still = still + 1 if now == last else 0
        last = now
    return last


def concurrently(s, protocol, model, arrays_list, **kw):
    """Sends every request at once (one client per thread), returns results in order."""
    local = threading.local()

    def one(arrays):
        if not hasattr(local, "c"):
            local.c = client(s, protocol)
        return infer(local.c, protocol, model, arrays, **kw)

    with ThreadPoolExecutor(len(arrays_list)) as pool:
        return list(pool.map(one, arrays_list))


def token_requests(seed, n=16):
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, size=(1, int(rng.integers(8, 129))), dtype=np.int32)
            for _ in range(n)]


def test_mixed_lengths_share_calls_and_every_value_is_right(srv, protocol):
    for attempt in range(10):  # a loaded machine may rarely send too slowly to batch
        inf0, exe0, fail0 = settled_stats(srv, "tokens")
        reqs = token_requests(attempt)
        # A batch-2 request too: two rows of one length.
        reqs.append(np.arange(20, dtype=np.int32).reshape(2, 10))
        results = concurrently(srv, protocol, "tokens", [{"TOKENS": t} for t in reqs])
        shared = 1
        for t, r in zip(reqs, results):
            np.testing.assert_array_equal(r.as_numpy("DOUBLED"), t * 2)
            assert r.as_numpy("DOUBLED").shape == t.shape
            np.testing.assert_array_equal(r.as_numpy("SUM"), t.sum(axis=1, dtype=np.int64).reshape(-1, 1))
            shared = max(shared, int(r.as_numpy("NREQ")[0, 0]))
        inf1, exe1, fail1 = settled_stats(srv, "tokens")
        assert fail1 == fail0
        assert inf1 - inf0 == sum(t.shape[0] for t in reqs)
        lengths = {t.shape[1] for t in reqs}
        assert len(lengths) > 3
        if exe1 - exe0 < len(reqs):
            break
    # Requests of different lengths shared predict calls.
    assert exe1 - exe0 < len(reqs), (exe1 - exe0, len(reqs))
    assert shared > 1


def test_pad_layout_gives_dense_rows_and_lengths(srv, protocol):
    reqs = [np.arange(1, n + 1, dtype=np.float32).reshape(1, n) for n in (3, 9, 5, 12, 1, 7)]
    for attempt in range(10):  # until they batch (a loaded machine may send too slowly)
        results = concurrently(srv, protocol, "tokens_pad", [{"TOKENS": t} for t in reqs])
        widths = set()
        for t, r in zip(reqs, results):
            assert r.as_numpy("LAST")[0, 0] == t[0, -1]
            assert r.as_numpy("PADDING_SUM")[0, 0] == 0  # padding is zeros
            width = int(r.as_numpy("WIDTH")[0, 0])
            assert width >= t.shape[1]
            widths.add((width, int(r.as_numpy("NREQ")[0, 0])))
        if any(nreq > 1 for _, nreq in widths):
            break
    # In a shared call the rows were padded to the longest of that call.
    assert any(nreq > 1 for _, nreq in widths), widths


def test_inconsistent_ragged_lengths_returned(srv, protocol):
    msg = infer_error(srv, protocol, "tokens", {"TOKENS": np.ones((1, 8), np.int32)},
                      parameters={"mode": "badlen"})
    assert "model 'tokens'" in msg and "output 'DOUBLED'" in msg, msg
    assert "has 7 elements" in msg and "call for 8" in msg, msg
    r = infer(srv, protocol, "tokens", {"TOKENS": np.ones((1, 8), np.int32)})
    np.testing.assert_array_equal(r.as_numpy("DOUBLED"), np.full((1, 8), 2, np.int32))


def test_per_request_outputs_of_different_shapes(srv, protocol):
    ns = [0, 3, 1, 7, 2, 5]
    for attempt in range(10):  # until they batch (a loaded machine may send too slowly)
        results = concurrently(srv, protocol, "boxes", [{"N": np.array([[n]], np.int32)} for n in ns])
        nreq = 1
        for n, r in zip(ns, results):
            boxes = r.as_numpy("BOXES")
            assert boxes.shape == (1, n, 4)
            np.testing.assert_array_equal(
                boxes, np.arange(n * 4, dtype=np.float32).reshape(1, n, 4) + 1000 * n)
            assert r.as_numpy("SCORES").shape == (1, n)
            nreq = max(nreq, int(r.as_numpy("SCORES").max(initial=1)))
        if nreq > 1:
            break
    assert nreq > 1, "no call had several requests"


@pytest.mark.parametrize("mode,needles", [
    ("short", ["predict returned a list of", "items for a call of", "one dict per request"]),
    ("missing", ["is missing output 'SCORES'", "which that request asked for"]),
    ("mix", ["not a dict", "not a mix"]),
])
def test_per_request_output_errors(srv, protocol, mode, needles):
    msg = infer_error(srv, protocol, "boxes", {"N": np.array([[2]], np.int32)},
                      parameters={"mode": mode})
    assert "model 'boxes'" in msg, msg
    for n in needles:
        assert n in msg, msg
    r = infer(srv, protocol, "boxes", {"N": np.array([[2]], np.int32)})
    assert r.as_numpy("BOXES").shape == (1, 2, 4)


def test_missing_output_fails_only_that_request(srv):
    """A dict missing an output fails its own request; the others of the
    same call get their outputs."""
    def one(i):
        c = client(srv, "grpc")
        params = {"mode": "missing"} if i == 0 else None
        try:
            r = infer(c, "grpc", "boxes", {"N": np.array([[i + 1]], np.int32)}, parameters=params)
            return r.as_numpy("BOXES").shape, int(r.as_numpy("SCORES").max())
        except Exception as e:  # noqa: BLE001
            return "error", str(e)
    for attempt in range(10):  # until they batch (a loaded machine may send too slowly)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(one, range(4)))
        assert got[0][0] == "error" and "missing output 'SCORES'" in got[0][1], got
        for i, g in enumerate(got[1:], start=1):
            assert g[0] == (1, i + 1, 4), got
        if any(g[1] > 1 for g in got[1:]):
            break
    assert any(g[1] > 1 for g in got[1:]), got


def test_optional_input_default_fills_missing_rows(srv, protocol):
    x = np.array([[1.0, 2.0]], np.float32)
    r = infer(srv, protocol, "opt_default", {"X": x})
    np.testing.assert_array_equal(r.as_numpy("Y"), x * 2.5)
    r = infer(srv, protocol, "opt_default", {"X": x, "SCALE": np.array([[3.0]], np.float32)})
    np.testing.assert_array_equal(r.as_numpy("Y"), x * 3)
    # Without a default, predict gets no SCALE at all.
    r = infer(srv, protocol, "opt_nodefault", {"X": x})
    np.testing.assert_array_equal(r.as_numpy("Y"), x)
    r = infer(srv, protocol, "opt_nodefault", {"X": x, "SCALE": np.array([[3.0]], np.float32)})
    np.testing.assert_array_equal(r.as_numpy("Y"), x * 3)


def test_optional_inputs_concurrent_values(srv, protocol):
    """Mixed requests with and without SCALE, at once: every value right."""
    xs = [np.array([[i, -i]], np.float32) for i in range(1, 9)]
    arrays = [{"X": x, "SCALE": np.array([[4.0]], np.float32)} if i % 2 else {"X": x}
              for i, x in enumerate(xs)]
    for model, default in (("opt_default", 2.5), ("opt_nodefault", 1.0)):
        results = concurrently(srv, protocol, model, arrays)
        for a, r in zip(arrays, results):
            want = a["X"] * (4.0 if "SCALE" in a else default)
            np.testing.assert_array_equal(r.as_numpy("Y"), want)


def _stream_marks(markers):
    p = markers / "stream_ragged.log"
    return p.read_text().split() if p.exists() else []


class Stream:
    """One gRPC client with its own stream, collecting (outs, final, error)."""

    def __init__(self, s, request_id, steps):
        self.q = queue.Queue()
        self.c = s.grpc_client()
        self.c.start_stream(callback=lambda result, error: self.q.put((result, error)))
        self.c.async_stream_infer("stream_ragged", make_inputs("grpc", {"STEPS": np.array([[steps]], np.int32)}),
                                  request_id=request_id, enable_empty_final_response=True)
        self.outs, self.nreq, self.final, self.error = [], 1, False, None

    def pump(self, until_outs=None, timeout=90):
        deadline = time.monotonic() + timeout
        while not self.final and self.error is None and time.monotonic() < deadline:
            if until_outs is not None and len(self.outs) >= until_outs:
                return
            try:
                r, e = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            if e is not None:
                self.error = e
                return
            if r.as_numpy("OUT") is not None:
                self.outs.append(int(r.as_numpy("OUT")[0, 0]))
                self.nreq = max(self.nreq, int(r.as_numpy("NREQ")[0, 0]))
            self.final = r.get_response().parameters["triton_final_response"].bool_param


def test_stream_finishes_requests_early_and_survives_one_cancel(srv, markers):
    for attempt in range(10):  # until all four streams share one call
        streams = {rid: Stream(srv, rid, steps)
                   for rid, steps in (("short%d" % attempt, 3), ("mid%d" % attempt, 6),
                                      ("long%d" % attempt, 60), ("gone%d" % attempt, 60))}
        short, mid, long_, gone = streams.values()
        gone.pump(until_outs=3)
        assert gone.outs == [0, 1, 2], (gone.outs, gone.error)
        gone.c.stop_stream(cancel_requests=True)
        for s in (short, mid, long_):
            s.pump()
            s.c.stop_stream()
        # Each request got exactly its own number of responses, then FINAL,
        # while the others went on.
        assert short.final and short.outs == [0, 1, 2], (short.outs, short.error)
        assert mid.final and mid.outs == list(range(6)), (mid.outs, mid.error)
        assert long_.final and long_.outs == list(range(60)), (long_.outs, long_.error)
        if min(s.nreq for s in streams.values()) == 4:
            break
    assert min(s.nreq for s in streams.values()) == 4, "the streams did not share a call"
    # predict saw the cancellation between yields, while `long` went on to
    # its 60 responses in the same call.
    needle = "gone%d:cancelled:" % attempt
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(m.startswith(needle) for m in _stream_marks(markers)):
        time.sleep(0.05)
    marks = _stream_marks(markers)
    assert any(m.startswith(needle) for m in marks), marks
    assert gone.final is False and len(gone.outs) < 60, gone.outs
    assert srv.model_ready("stream_ragged")
