"""Faults in user code and in clients, against the real server. Each must give
the client (or the load) a clear error, and the server must keep serving:

- user code raising in initialize / at import (the model fails to load, the
  others load), in predict/execute (the request fails), in finalize (the
  unload still completes);
- BaseExceptions that are not Exceptions: sys.exit(), KeyboardInterrupt,
  GeneratorExit, and RecursionError/MemoryError, in every entry point;
- wrong return types, shapes, dtypes and names;
- predict sleeping past a client timeout;
- clients cancelling: a gRPC call cancelled mid-flight and while queued, a
  gRPC stream cancelled in the middle of a decoupled response stream.
"""
import queue
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_client import infer, infer_error, make_inputs
from reliability import RELIABILITY, start_server

FAULTS = RELIABILITY / "faults"
LOADABLE = ["faulty", "finalize_raises", "finalize_exits", "sleepy", "slow_stream", "pb_faulty"]
FAILING = {
    "init_raises": ["RuntimeError", "initialize refuses: missing weights for init_raises"],
    "init_exits": ["SystemExit", "init_exits: exiting from initialize"],
    "import_fails": ["ModuleNotFoundError", "rustpy_no_such_module"],
}
X = {"X": np.array([[1.0, 2.0]], dtype=np.float32)}


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("fault_markers")


@pytest.fixture(scope="module")
def srv(markers):
    s = start_server(FAULTS, name="faults", exit_on_error=False, model_control_mode="explicit",
                     load_models=LOADABLE + list(FAILING), wait_models=LOADABLE,
                     env={"RUSTPY_TEST_MARKERS": markers})
    yield s
    s.stop()


def serving(s):
    """The process is up, ready for the loadable models, and answers."""
    assert s.running, "tritonserver died\n" + s.log_tail()
    assert s.is_live()
    r = infer(s, "grpc", "faulty", X, parameters={"mode": "ok"})
    np.testing.assert_array_equal(r.as_numpy("Y"), X["X"])
    return True


def fault(s, protocol, mode, model="faulty", inputs=X):
    msg = infer_error(s, protocol, model, inputs, parameters={"mode": mode})
    assert serving(s)
    return msg


# ------------------------------------------------------------ load failures
@pytest.mark.parametrize("model", sorted(FAILING))
def test_load_failure_is_reported_and_others_load(srv, model):
    index = {m["name"]: m for m in srv.repository_index()}
    assert index[model]["state"] == "UNAVAILABLE", index[model]
    for needle in FAILING[model]:
        assert needle in index[model]["reason"], index[model]
    assert not srv.model_ready(model)
    for m in LOADABLE:
        assert index[m]["state"] == "READY", index[m]
    # Loading it again fails the same way, and the server keeps serving.
    status, body = srv.load_model(model)
    assert status == 400 and FAILING[model][0] in body["error"], body
    assert serving(srv)


# --------------------------------------------------------- predict raising
@pytest.mark.parametrize("mode,needles", [
    ("raise", ["ValueError", "deliberate failure in predict", "model.py"]),
    ("sys_exit", ["model 'faulty': predict raised: SystemExit: 3\nTraceback"]),
    ("sys_exit_none", ["model 'faulty': predict raised: SystemExit: \nTraceback"]),
    ("keyboard_interrupt", ["KeyboardInterrupt", "pretend Ctrl-C"]),
    ("generator_exit", ["GeneratorExit"]),
    ("recursion", ["RecursionError"]),
    ("memory_error", ["MemoryError", "pretend out of memory"]),
    ("unprintable", ["Unprintable"]),
    ("nul_in_message", ["RuntimeError", "before"]),
    ("huge_message", ["RuntimeError"]),
])
def test_predict_exception_fails_only_the_request(srv, protocol, mode, needles):
    msg = fault(srv, protocol, mode)
    assert "faulty" in msg, msg
    for n in needles:
        assert n in msg, (n, msg[:500])


def test_sys_exit_does_not_stop_the_server(srv):
    """sys.exit(3) in predict is the request's SystemExit, twenty times over:
    each fails its own request with it, the server and the model stay up."""
    for _ in range(20):
        msg = fault(srv, "http", "sys_exit")
        assert msg.startswith("model 'faulty': predict raised: SystemExit: 3\nTraceback"), msg
        assert msg.endswith("sys.exit(3)"), msg
    assert srv.running and srv.is_live()
    assert all(srv.model_ready(m) for m in LOADABLE)


def test_pb_utils_execute_faults(srv, protocol):
    ok = {"X": np.array([1.5], np.float32)}
    for mode, needle in [("raise", "pb_faulty raised on purpose"), ("sys_exit", "SystemExit"),
                         ("not_list", "pb_faulty"), ("wrong_count", "Number of InferenceResponse")]:
        msg = infer_error(srv, protocol, "pb_faulty", ok, parameters={"mode": mode})
        assert needle in msg, (mode, msg)
        assert serving(srv)
    r = infer(srv, protocol, "pb_faulty", ok, parameters={"mode": "ok"})
    assert r.as_numpy("Y").tolist() == [3.0]


# -------------------------------------------------------- wrong return values
@pytest.mark.parametrize("mode,needles", [
    ("return_none", ["dict", "NoneType"]),
    ("return_list", ["dict", "list"]),
    ("return_tuple", ["dict", "tuple"]),
    ("return_str", ["dict", "str"]),
    ("non_str_key", ["key"]),
    ("value_is_str", ["'Y'"]),
    ("value_is_none", ["'Y'"]),
    ("object_array", ["'Y'"]),
    ("wrong_dtype", ["'Y'", "float64"]),
    ("wrong_rows", ["'Y'"]),
    ("wrong_dims", ["'Y'", "3"]),
    ("wrong_rank", ["'Y'"]),
    ("scalar", ["'Y'"]),
    ("unknown_output", ["EXTRA"]),
    ("missing_output", ["'Z'"]),
])
def test_wrong_return_values_are_clear_errors(srv, protocol, mode, needles):
    msg = fault(srv, protocol, mode)
    assert "faulty" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("mode", ["non_contiguous", "fortran_order", "readonly"])
def test_unusual_but_valid_returns_are_answered(srv, protocol, mode):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    r = infer(srv, protocol, "faulty", {"X": x}, parameters={"mode": mode})
    np.testing.assert_array_equal(r.as_numpy("Y"), x)
    assert r.as_numpy("Z").tolist() == [[2], [2]]


def test_plain_lists_are_refused_with_the_dtype_they_became(srv, protocol):
    """Outputs are numpy arrays (docs/python-api.md). A plain list of Python
    floats is converted the way numpy converts it, to float64, and refused
    for the FP32 output with that reason."""
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    msg = fault(srv, protocol, "value_is_list", inputs={"X": x})
    assert msg == ("model 'faulty': output 'Y' is a numpy float64 array but the model config "
                   "declares FP32 (expected numpy float32)"), msg


# ------------------------------------------------------------ finalize faults
@pytest.mark.parametrize("model", ["finalize_raises", "finalize_exits"])
def test_finalize_fault_does_not_block_unload(srv, markers, model):
    one = {"X": np.array([1.0], np.float32)}
    assert infer(srv, "http", model, one).as_numpy("Y").tolist() == [2.0]
    status, body = srv.unload_model(model)
    assert status == 200, body
    # The unload completes (UNLOADING -> UNAVAILABLE "unloaded") in spite of
    # the exception in finalize.
    deadline = time.monotonic() + 90
    state = None
    while time.monotonic() < deadline:
        state = {m["name"]: m for m in srv.repository_index()}[model]
        if state.get("state") == "UNAVAILABLE":
            break
        time.sleep(0.1)
    assert state == {"name": model, "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}, state
    assert not srv.model_ready(model)
    assert (markers / f"{model}.finalize").read_text().count("entered") >= 1
    assert srv.wait_for_log(f"model '{model}': finalize raised")
    # It loads and serves again, and so does everything else.
    assert srv.load_model(model)[0] == 200
    assert infer(srv, "grpc", model, one).as_numpy("Y").tolist() == [2.0]
    assert serving(srv)


# --------------------------------------------------------- timeouts/cancel
MS = lambda ms: {"MS": np.array([ms], np.int32)}  # noqa: E731


def calls(s):
    """The number of predict calls sleepy has run, this one included."""
    return int(infer(s, "grpc", "sleepy", MS(0)).as_numpy("CALLS")[0])


def sleepy_log(markers) -> list:
    p = markers / "sleepy.log"
    return p.read_text().splitlines() if p.exists() else []


def wait_for_line(markers, line, timeout=90.0) -> bool:
    """Waits for sleepy's marker `line` (an event; the bound is only there so
    a broken server cannot hang the test)."""
    deadline = time.monotonic() + timeout
    while line not in sleepy_log(markers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_client_timeout_http(srv, markers):
    base = calls(srv)
    c = srv.http_client(network_timeout=0.5, connection_timeout=5)
    # The request is held in predict until released: the client's 0.5 s
    # run out first whatever the load.
    with pytest.raises(TimeoutError) as e:
        c.infer("sleepy", make_inputs("http", MS(-1)))
    assert str(e.value) == "timed out", repr(e.value)
    # The abandoned request is in predict; released, it runs to its end...
    assert wait_for_line(markers, f"start {base + 1} -1"), sleepy_log(markers)
    (markers / "release").write_text("")
    assert wait_for_line(markers, f"end {base + 1}"), sleepy_log(markers)
    # ...and the instance serves the next request (the one after it).
    assert calls(srv) == base + 2
    assert serving(srv)


def test_client_timeout_grpc_deadline(srv, markers):
    """A gRPC deadline that expires while predict runs: the client gets
    DEADLINE_EXCEEDED, predict runs to its end, the instance serves on. The
    deadline is long enough for the request to reach predict on a loaded
    machine (checked: the marker must be there when the deadline fired)."""
    base = calls(srv)
    c = srv.grpc_client()
    with pytest.raises(InferenceServerException) as e:
        c.infer("sleepy", make_inputs("grpc", MS(-1)), client_timeout=10)
    assert (e.value.status(), e.value.message()) == ("StatusCode.DEADLINE_EXCEEDED",
                                                     "Deadline Exceeded"), e.value
    assert f"start {base + 1} -1" in sleepy_log(markers), \
        ("the request had not reached predict within its 10 s deadline", sleepy_log(markers))
    (markers / "release").write_text("")
    assert wait_for_line(markers, f"end {base + 1}"), sleepy_log(markers)
    assert calls(srv) == base + 2
    assert serving(srv)


def test_grpc_cancel_in_flight_and_queued(triton_factory, tmp_path):
    """Cancel one request while predict runs and one while it waits in the
    server's queue behind it: the queued one never reaches predict. A server
    of its own, logging verbosely, so the test sees the moment Triton took
    each cancellation (its gRPC frontend logs "Issuing cancellation for"):
    the client's cancel is local, and the server learns of it a moment later."""
    markers = tmp_path
    s = triton_factory(FAULTS, name="cancel", model_control_mode="explicit",
                       load_models=["sleepy"], wait_models=["sleepy"],
                       env={"RUSTPY_TEST_MARKERS": markers}, log_verbose=1)
    c = s.grpc_client()
    done = queue.Queue()
    # Held in predict until released: the cancels below come while it runs.
    running = c.async_infer("sleepy", make_inputs("grpc", MS(-1)),
                            callback=lambda result, error: done.put(("running", result, error)))
    # Wait until it is really in predict (not on a clock: a loaded machine may be slow).
    assert wait_for_line(markers, "start 1 -1"), "the first request never reached predict"
    queued = c.async_infer("sleepy", make_inputs("grpc", MS(1)),
                           callback=lambda result, error: done.put(("queued", result, error)))
    # Until Triton has it queued: a cancel before it got there would only be
    # the client's, and the server would never see it.
    deadline = time.monotonic() + 90
    while _pending(s, "sleepy") < 1:
        assert time.monotonic() < deadline, "the second request never reached the server's queue"
        time.sleep(0.05)
    queued.cancel()
    running.cancel()
    got = {}
    for _ in range(2):
        name, r, e = done.get(timeout=90)
        got[name] = e
    assert {name: (e.status(), e.message()) for name, e in got.items()} == {
        name: ("StatusCode.CANCELLED", "Locally cancelled by application!")
        for name in ("running", "queued")}, got
    deadline = time.monotonic() + 90
    while s.log_text().count('"Issuing cancellation for ') < 2:
        assert time.monotonic() < deadline, "the server never took both cancellations"
        time.sleep(0.05)
    (markers / "release").write_text("")
    assert wait_for_line(markers, "end 1"), sleepy_log(markers)
    # The next call is the one after the running request: the cancelled
    # queued request (MS 1) never reached predict.
    assert calls(s) == 2
    assert sleepy_log(markers) == ["start 1 -1", "end 1", "start 2 0", "end 2"]
    assert s.running and s.is_live()


def _pending(s, model):
    """nv_inference_pending_request_count of `model` (queued, not yet executing)."""
    import urllib.request
    with urllib.request.urlopen(s.metrics_url, timeout=60) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("nv_inference_pending_request_count") and f'model="{model}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _stream_markers(markers):
    p = markers / "slow_stream.log"
    return p.read_text().split() if p.exists() else []


def test_grpc_stream_cancel_stops_the_generator(srv, markers):
    c = srv.grpc_client()
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    c.async_stream_infer("slow_stream", make_inputs("grpc", {"COUNT": np.array([200], np.int32)}),
                         request_id="long", enable_empty_final_response=True)
    outs = []
    while len(outs) < 3:
        r, e = q.get(timeout=90)
        assert e is None, e
        outs.append(int(r.as_numpy("OUT")[0]))
    assert outs == [0, 1, 2]
    c.stop_stream(cancel_requests=True)
    # The generator is closed at the next yield instead of producing all 200.
    deadline = time.monotonic() + 90
    while not any(m.startswith("200:") for m in _stream_markers(markers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = [m for m in _stream_markers(markers) if m.startswith("200:")]
    assert ended, "the generator did not end after the stream was cancelled"
    count, sent, how = ended[-1].split(":")
    assert int(sent) < 200 and how == "closed", ended
    # The instance is free again: a new stream completes normally.
    c2 = srv.grpc_client()
    q2 = queue.Queue()
    c2.start_stream(callback=lambda result, error: q2.put((result, error)))
    c2.async_stream_infer("slow_stream", make_inputs("grpc", {"COUNT": np.array([3], np.int32)}),
                          request_id="short", enable_empty_final_response=True)
    got, final = [], False
    while not final:
        r, e = q2.get(timeout=90)
        assert e is None, e
        final = r.get_response().parameters["triton_final_response"].bool_param
        if r.as_numpy("OUT") is not None:
            got.append(int(r.as_numpy("OUT")[0]))
    c2.stop_stream()
    assert got == [0, 1, 2]
    assert serving(srv)


def test_everything_still_loaded_at_the_end(srv):
    for m in LOADABLE:
        assert srv.model_ready(m), m
    assert srv.running and srv.is_live()
