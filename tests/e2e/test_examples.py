"""The example models of model_repository/, over HTTP and gRPC."""
import json
import queue
import time
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import EXAMPLE_MODELS
from e2e_client import client, infer, make_inputs, output_names


def test_all_example_models_ready(server):
    index = {m["name"]: m for m in server.repository_index()}
    for name in EXAMPLE_MODELS:
        assert index[name].get("state") == "READY", index[name]
        assert server.model_ready(name)
    assert server.is_ready()
    if not server.reference:
        # The models really run on our library: its initialisation and each
        # model's import are in the server's own log.
        log = server.log_text()
        assert "rustpy: backend 'rustpy' ready (backend API 1." in log, log[-2000:]
        for name in EXAMPLE_MODELS:
            assert f"rustpy: loaded model '{name}' version 1 from " in log, name


def test_model_config_served(server):
    cfg = server.model_config("add_sub")
    assert cfg["backend"] == "rustpy" or server.reference
    assert cfg["max_batch_size"] == 64
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]
    assert server.model_config("stream_counter")["model_transaction_policy"]["decoupled"]


# ---------------------------------------------------------------- add_sub
def test_add_sub(server, protocol):
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    b = np.array([[10, 20, 30, 40]], dtype=np.float32)
    r = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": b})
    assert r.as_numpy("OUTPUT0").dtype == np.float32
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_add_sub_multi_row_request(server, protocol):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    r = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": b})
    assert r.as_numpy("OUTPUT0").shape == (5, 4)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_requested_outputs_subset(server, protocol):
    a = np.full((1, 4), 3, dtype=np.float32)
    b = np.ones((1, 4), dtype=np.float32)
    r = infer(server, protocol, "add_sub", {"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
    assert output_names(r, protocol) == ["OUTPUT1"]
    assert r.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def _add_sub_pair(i, rows=1):
    a = (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + i * 100)
    b = np.full((rows, 4), float(i), dtype=np.float32)
    return a, b


def _stats_counts(server, rows_at_least=0):
    """Counts once they have settled: a backend reports a request's
    statistics just after sending its response, so a client can see the
    answer a moment before the counters move (true of every Triton backend).
    Waits for inference_count >= rows_at_least (the rows the caller just
    had answered), then for the counters to stay put for 0.5 s; a loaded
    machine can take long for either, so the bound is 90 s, not a count of
    quick reads."""
    def read():
        st = server.model_stats("add_sub")
        return st["inference_count"], st["execution_count"], st["inference_stats"]["fail"]["count"]
    deadline = time.monotonic() + 90
    last, still = read(), 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        still = still + 1 if now == last else 0
        last = now
        if still >= 5 and now[0] >= rows_at_least:
            break
    return last


N_CONCURRENT = 64


def _burst_grpc_async(server, pairs):
    """Fires every request with async_infer before waiting for any response."""
    c = server.grpc_client()
    done = queue.Queue()
    for i, (a, b) in enumerate(pairs):
        c.async_infer("add_sub", make_inputs("grpc", {"INPUT0": a, "INPUT1": b}),
                      request_id=str(i),
                      # tritonclient calls callback(result=..., error=...) by keyword
                      callback=lambda result, error: done.put((result, error)))
    results = {}
    for _ in pairs:
        result, error = done.get(timeout=60)
        assert error is None, error
        results[int(result.get_response().id)] = result
    c.close()
    return [results[i] for i in range(len(pairs))]


def test_concurrent_requests_are_batched(server):
    """64 requests in flight at once: every answer is right, and the dynamic
    batcher grouped them (fewer executions than requests, per /stats)."""
    batched = []
    for attempt in range(10):  # a loaded machine may rarely send too slowly to batch
        inf0, exe0, fail0 = _stats_counts(server)
        pairs = [_add_sub_pair(i + attempt * 1000, rows=1 + i % 3) for i in range(N_CONCURRENT)]
        results = _burst_grpc_async(server, pairs)
        for (a, b), r in zip(pairs, results):
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
        inf1, exe1, fail1 = _stats_counts(server, inf0 + sum(a.shape[0] for a, _ in pairs))
        assert inf1 - inf0 == sum(a.shape[0] for a, _ in pairs)  # counts rows
        assert fail1 == fail0
        batched.append((exe1 - exe0, N_CONCURRENT))
        if exe1 - exe0 < N_CONCURRENT:
            break
    assert batched[-1][0] < N_CONCURRENT, f"no dynamic batches were formed: {batched}"
    sizes = [b["batch_size"] for b in server.model_stats("add_sub")["batch_stats"]]
    assert max(sizes) > 1, sizes  # some execution had rows of several requests


@pytest.mark.parametrize("protocol_", ["http", "grpc"])
def test_concurrent_requests_thread_pool(server, protocol_):
    """Blocking infer() from 64 threads (one client per thread for HTTP)."""
    inf0, exe0, _ = _stats_counts(server)
    pairs = [_add_sub_pair(i) for i in range(N_CONCURRENT)]
    shared = server.grpc_client() if protocol_ == "grpc" else None
    local = threading.local()

    def one(pair):
        if shared is None and not hasattr(local, "c"):
            local.c = server.http_client()
        a, b = pair
        return infer(shared or local.c, protocol_, "add_sub", {"INPUT0": a, "INPUT1": b})

    with ThreadPoolExecutor(N_CONCURRENT) as pool:
        results = list(pool.map(one, pairs))
    for (a, b), r in zip(pairs, results):
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    inf1, exe1, _ = _stats_counts(server, inf0 + N_CONCURRENT)
    assert inf1 - inf0 == N_CONCURRENT
    assert exe1 - exe0 <= N_CONCURRENT


def test_stats_shape(server):
    st = server.model_stats("add_sub")
    assert st["name"] == "add_sub" and st["version"] == "1"
    assert st["inference_stats"]["success"]["count"] >= 1
    assert st["batch_stats"], "batch_stats lists one entry per executed batch size"
    assert all({"batch_size", "compute_infer"} <= set(b) for b in st["batch_stats"])


# ----------------------------------------------------------- string_upper
TEXTS = ["hello", "Grüße aus Köln", "", "ß", "日本語テキスト", "emoji 🙂 ok", "a\x00b"]


def test_string_upper_roundtrip(server, protocol):
    texts = np.array([[t.encode("utf-8")] for t in TEXTS], dtype=object)
    r = infer(server, protocol, "string_upper", {"TEXT": texts})
    upper = r.as_numpy("UPPER")
    assert upper.shape == (len(TEXTS), 1)
    assert [u.decode("utf-8") for u in upper.reshape(-1)] == [t.upper() for t in TEXTS]
    np.testing.assert_array_equal(r.as_numpy("LENGTH").reshape(-1), [len(t) for t in TEXTS])
    assert r.as_numpy("LENGTH").dtype == np.int32


def test_string_upper_single_empty(server, protocol):
    r = infer(server, protocol, "string_upper", {"TEXT": np.array([[b""]], dtype=object)})
    assert r.as_numpy("UPPER").reshape(-1).tolist() == [b""]
    assert r.as_numpy("LENGTH").reshape(-1).tolist() == [0]


def test_string_upper_concurrent(server):
    c = server.grpc_client()
    words = [f"word-{i}-é" * (i % 5) for i in range(32)]

    def one(w):
        return c.infer("string_upper", make_inputs(
            "grpc", {"TEXT": np.array([[w.encode()]], dtype=object)}))

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, words))
    for w, r in zip(words, results):
        assert r.as_numpy("UPPER")[0, 0].decode() == w.upper()
        assert r.as_numpy("LENGTH")[0, 0] == len(w)


# -------------------------------------------------------------- no_batch
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_no_batch_variable_length(server, protocol, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    r = infer(server, protocol, "no_batch", {"INPUT": x})
    assert r.as_numpy("SUM").dtype == np.float64
    assert r.as_numpy("SUM").shape == (1,)
    np.testing.assert_allclose(r.as_numpy("SUM")[0], x.sum(dtype=np.float64), rtol=1e-12)
    assert r.as_numpy("SORTED").dtype == np.float32
    np.testing.assert_array_equal(r.as_numpy("SORTED"), np.sort(x))


def test_no_batch_concurrent_different_lengths(server):
    c = server.grpc_client()
    xs = [np.arange(n, 0, -1, dtype=np.float32) for n in range(1, 25)]

    def one(x):
        return c.infer("no_batch", make_inputs("grpc", {"INPUT": x}))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, xs))
    for x, r in zip(xs, results):
        assert r.as_numpy("SUM")[0] == x.sum()
        np.testing.assert_array_equal(r.as_numpy("SORTED"), np.sort(x))


# ----------------------------------------------------------- params_echo
@pytest.mark.parametrize("scale", [2, 0.5, "3"])
def test_params_scale(server, protocol, scale):
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    r = infer(server, protocol, "params_echo", {"INPUT": x},
              parameters={"scale": scale, "tag": "hello"}, request_id=f"req-{scale}")
    np.testing.assert_allclose(r.as_numpy("OUTPUT"), x * float(scale))
    echo = json.loads(r.as_numpy("PARAMS")[0, 0])
    assert echo["scale"] == scale and type(echo["scale"]) is type(scale)
    assert echo["tag"] == "hello"
    assert r.as_numpy("REQUEST_ID")[0, 0].decode() == f"req-{scale}"


def test_params_bool_and_default(server, protocol):
    x = np.ones((2, 4), dtype=np.float32)
    r = infer(server, protocol, "params_echo", {"INPUT": x}, parameters={"flag": True})
    np.testing.assert_array_equal(r.as_numpy("OUTPUT"), x)  # no scale -> 1
    echo = [json.loads(p) for p in r.as_numpy("PARAMS").reshape(-1)]
    assert len(echo) == 2 and all(e["flag"] is True for e in echo)
    assert "scale" not in echo[0]


def test_params_split_by_parameters_under_concurrency(server):
    """Concurrent requests with different scales: split_by_parameters must keep them
    in separate predict() calls (the model reads the scale of the first request)."""
    c = server.grpc_client()
    jobs = [(i, float(i % 4 + 1)) for i in range(48)]

    def one(job):
        i, scale = job
        x = np.full((1, 4), i, dtype=np.float32)
        return c.infer("params_echo", make_inputs("grpc", {"INPUT": x}),
                       parameters={"scale": scale}, request_id=str(i))

    with ThreadPoolExecutor(48) as pool:
        results = list(pool.map(one, jobs))
    for (i, scale), r in zip(jobs, results):
        np.testing.assert_array_equal(r.as_numpy("OUTPUT"), np.full((1, 4), i * scale))
        assert r.as_numpy("REQUEST_ID")[0, 0].decode() == str(i)
        assert json.loads(r.as_numpy("PARAMS")[0, 0])["scale"] == scale


# ---------------------------------------------------------------- dtypes
DTYPE_VALUES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 9]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [-1, 1, 2]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [-1, 1, 2]], dtype=np.int16),
    "INT32": np.array([[-2**31, 0, 2**31 - 1], [-1, 1, 2]], dtype=np.int32),
    "INT64": np.array([[-2**63, 0, 2**63 - 1], [-1, 1, 2]], dtype=np.int64),
    "FP16": np.array([[0.5, -2.0, 65504.0], [np.inf, -0.0, 1e-3]], dtype=np.float16),
    "FP32": np.array([[1.5, -2.25, 3.4e38], [np.inf, -0.0, 1e-30]], dtype=np.float32),
    "FP64": np.array([[1.5, -2.25, 1.7e308], [np.inf, -0.0, 5e-324]], dtype=np.float64),
}


def test_dtypes_identity(server, protocol):
    r = infer(server, protocol, "dtypes", {f"IN_{t}": v for t, v in DTYPE_VALUES.items()})
    for t, v in DTYPE_VALUES.items():
        out = r.as_numpy(f"OUT_{t}")
        assert out is not None, f"OUT_{t} missing"
        assert out.dtype == v.dtype, (t, out.dtype)
        np.testing.assert_array_equal(out, v, err_msg=t)


def test_dtypes_nan_roundtrip(server, protocol):
    vals = dict(DTYPE_VALUES)
    vals["FP32"] = np.array([[np.nan, 1, 2]] * 2, dtype=np.float32)
    vals["FP64"] = np.array([[np.nan, 1, 2]] * 2, dtype=np.float64)
    r = infer(server, protocol, "dtypes", {f"IN_{t}": v for t, v in vals.items()},
              outputs=["OUT_FP32", "OUT_FP64"])
    assert sorted(output_names(r, protocol)) == ["OUT_FP32", "OUT_FP64"]
    assert np.isnan(r.as_numpy("OUT_FP32")[:, 0]).all()
    assert np.isnan(r.as_numpy("OUT_FP64")[:, 0]).all()


def test_health_after_examples(server):
    assert server.is_live() and server.is_ready()
    c = client(server, "http")
    assert c.is_server_ready()
