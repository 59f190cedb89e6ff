"""Error paths over the wire: exceptions in predict, bad outputs, bad inputs, load
failures. The server must stay up and keep serving through all of them."""
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import LOADABLE_ERROR_MODELS
from e2e_client import has_word, infer, infer_error, make_inputs

ONE = {"IN": np.array([[1.5]], dtype=np.float32)}
PAIR = {"IN": np.array([[1, 2]], dtype=np.float32)}


# ------------------------------------------------------- exceptions in predict
def test_predict_raises(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "raises", ONE)
    assert "raises" in msg, msg           # the model name
    assert "ValueError" in msg, msg       # the exception type
    assert "boom" in msg, msg             # the exception message
    assert errors_server.model_ready("raises")


def test_predict_raises_repeatedly_and_concurrently(errors_server):
    c = errors_server.grpc_client()

    def one(i):
        try:
            c.infer("raises", make_inputs("grpc", ONE))
        except InferenceServerException as e:
            return e.message()
        return None

    with ThreadPoolExecutor(16) as pool:
        msgs = list(pool.map(one, range(32)))
    assert all(m and "boom" in m for m in msgs), msgs
    if not errors_server.reference:  # the python backend counts error responses as successes
        # Statistics are reported just after the responses go out: poll briefly.
        stats = errors_server.model_stats_when(
            "raises", lambda st: st["inference_stats"]["fail"]["count"] >= 32)
        assert stats["inference_stats"]["fail"]["count"] >= 32, stats["inference_stats"]
    assert errors_server.is_live()


# ------------------------------------------------------------- bad outputs
def test_bad_output_ok_mode_works(errors_server, protocol):
    r = infer(errors_server, protocol, "bad_output", PAIR, parameters={"mode": "ok"})
    np.testing.assert_array_equal(r.as_numpy("OUT"), PAIR["IN"])


def test_bad_output_wrong_name(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "bad_output", PAIR,
                      parameters={"mode": "wrong_name"})
    # which output: the unknown name returned, or the declared one that is missing
    assert "WRONG_NAME" in msg or has_word(msg, "OUT"), msg


def test_bad_output_wrong_dtype(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "bad_output", PAIR,
                      parameters={"mode": "wrong_dtype"})
    assert has_word(msg, "OUT"), msg
    assert "int64" in msg.lower(), msg                       # what it got
    assert "fp32" in msg.lower() or "float32" in msg, msg    # what the config says


def test_bad_output_wrong_leading_dim(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "bad_output", PAIR,
                      parameters={"mode": "wrong_dim"})
    assert has_word(msg, "OUT"), msg
    assert re.search(r"batch|dim|shape|rows", msg, re.I), msg


def test_bad_output_not_an_array(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "bad_output", PAIR,
                      parameters={"mode": "not_array"})
    assert has_word(msg, "OUT"), msg


def test_bad_output_not_a_dict(errors_server, protocol):
    msg = infer_error(errors_server, protocol, "bad_output", PAIR,
                      parameters={"mode": "not_dict"})
    assert "dict" in msg.lower(), msg


def test_bad_output_model_still_serves(errors_server):
    for mode in ("wrong_name", "wrong_dtype", "wrong_dim", "not_array", "not_dict"):
        infer_error(errors_server, "grpc", "bad_output", PAIR, parameters={"mode": mode})
    r = infer(errors_server, "grpc", "bad_output", PAIR)
    np.testing.assert_array_equal(r.as_numpy("OUT"), PAIR["IN"])
    assert errors_server.is_live() and errors_server.model_ready("bad_output")


# -------------------------------------------------------------- bad inputs
def _good_pair(i):
    a = np.full((1, 4), i, dtype=np.float32)
    b = np.arange(4, dtype=np.float32)[None]
    return {"INPUT0": a, "INPUT1": b}


BAD_REQUESTS = {
    "wrong_shape": ({"INPUT0": np.ones((1, 5), np.float32),
                     "INPUT1": np.ones((1, 4), np.float32)}, "INPUT0"),
    "wrong_dtype": ({"INPUT0": np.ones((1, 4), np.float32),
                     "INPUT1": np.ones((1, 4), np.int32)}, "INPUT1"),
    "missing_input": ({"INPUT0": np.ones((1, 4), np.float32)}, "INPUT1"),
    "unknown_input": ({"INPUT0": np.ones((1, 4), np.float32),
                       "INPUT1": np.ones((1, 4), np.float32),
                       "INPUT9": np.ones((1, 4), np.float32)}, "INPUT9"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input(server, protocol, case):
    arrays, name = BAD_REQUESTS[case]
    msg = infer_error(server, protocol, "add_sub", arrays)
    assert name in msg, msg
    assert server.is_ready()


@pytest.mark.parametrize("case", ["wrong_shape", "wrong_dtype", "missing_input"])
def test_bad_input_does_not_hurt_concurrent_good_requests(server, case):
    """A bad request sent among concurrent good ones (which the dynamic batcher
    groups) fails alone, naming the input; every good request succeeds."""
    bad_arrays, name = BAD_REQUESTS[case]
    c = server.grpc_client()
    jobs = [("good", i) for i in range(24)]
    jobs.insert(12, ("bad", -1))
    jobs.insert(5, ("bad", -2))

    def one(job):
        kind, i = job
        arrays = bad_arrays if kind == "bad" else _good_pair(i)
        try:
            return c.infer("add_sub", make_inputs("grpc", arrays))
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    for (kind, i), r in zip(jobs, results):
        if kind == "bad":
            assert isinstance(r, InferenceServerException), r
            assert name in r.message(), r.message()
        else:
            assert not isinstance(r, Exception), r
            good = _good_pair(i)
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), good["INPUT0"] + good["INPUT1"])
            np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), good["INPUT0"] - good["INPUT1"])
    assert server.is_ready()


def test_input_batch_larger_than_max_batch_size(server, protocol):
    arrays = {"INPUT0": np.ones((65, 4), np.float32), "INPUT1": np.ones((65, 4), np.float32)}
    msg = infer_error(server, protocol, "add_sub", arrays)
    assert "batch" in msg.lower(), msg


def test_unknown_model(server, protocol):
    msg = infer_error(server, protocol, "no_such_model", {"X": np.ones(1, np.float32)})
    assert "no_such_model" in msg, msg


# ----------------------------------------------------------- load failures
def _index(server):
    return {m["name"]: m for m in server.repository_index()}


def test_loadable_error_models_are_ready(errors_server):
    index = _index(errors_server)
    for name in LOADABLE_ERROR_MODELS:
        assert index[name].get("state") == "READY", index[name]
    assert errors_server.is_live()
    assert not errors_server.is_ready()  # strict readiness: some models failed


def _load_error(server, model):
    """The load error of `model`: its repository-index reason plus the server log."""
    entry = _index(server).get(model, {})
    assert entry.get("state") != "READY", entry
    assert not server.model_ready(model)
    return entry.get("reason", "") + "\n" + server.log_text()


def test_bad_syntax_names_file_and_line(errors_server):
    entry = _index(errors_server)["bad_syntax"]
    assert entry["state"] == "UNAVAILABLE", entry
    text = _load_error(errors_server, "bad_syntax")
    assert "model.py" in text, text[-3000:]
    assert re.search(r"line 7\b|model\.py\"?[:,(]\s*(line\s*)?7\b", text), text[-3000:]
    assert "SyntaxError" in text, text[-3000:]


def test_bad_syntax_reason_in_repository_index(errors_server):
    reason = _index(errors_server)["bad_syntax"].get("reason", "")
    assert "model.py" in reason and "7" in reason, reason


def test_init_raises_reports_the_exception(errors_server):
    entry = _index(errors_server)["init_raises"]
    assert entry["state"] == "UNAVAILABLE", entry
    assert "RuntimeError" in entry.get("reason", ""), entry
    assert "init_raises refuses to start" in entry.get("reason", ""), entry


def test_bad_config_does_not_load(errors_server):
    text = _load_error(errors_server, "bad_config")
    assert "bad_config" in text
    assert "TYPE_FLOAT32" in text, text[-3000:]


def test_errors_server_still_serves(errors_server, protocol):
    r = infer(errors_server, protocol, "bad_output", PAIR)
    np.testing.assert_array_equal(r.as_numpy("OUT"), PAIR["IN"])
