"""Soak: concurrent HTTP and gRPC clients against several models at once
(add_sub, string_upper, stream_counter of model_repository/) for a bounded
time, loopback only. Every response's values and request id are checked; no
request may be lost or answered twice; the server's own statistics must agree
with what the clients sent; the server is ready afterwards.

~20 s by default; RUSTPY_LONG=1 makes it 5 minutes (RUSTPY_SOAK_SECS
overrides both).
"""
import json
import os
import queue
import threading
import time
from collections import Counter

import numpy as np
import pytest

from e2e_client import make_inputs
from reliability import long_run, rss_kib, start_server
from tritonharness import MODEL_REPOSITORY

SOAK_MODELS = ["add_sub", "string_upper", "stream_counter"]


def soak_seconds() -> float:
    if os.environ.get("RUSTPY_SOAK_SECS"):
        return float(os.environ["RUSTPY_SOAK_SECS"])
    return 300.0 if long_run() else 20.0


@pytest.fixture(scope="module")
def soak_server():
    s = start_server(MODEL_REPOSITORY, name="soak")
    yield s
    s.stop()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter()      # (model, protocol) -> requests answered correctly
        self.rows = Counter()          # model -> batch rows (inference_count)
        self.responses = 0             # individual responses checked (streams: many per request)
        self.errors = []

    def ok(self, model, protocol, rows=1, responses=1):
        with self.lock:
            self.requests[(model, protocol)] += 1
            self.rows[model] += rows
            self.responses += responses

    def fail(self, what):
        with self.lock:
            self.errors.append(what)


def add_sub_worker(server, protocol, wid, stop, tally):
    c = server.http_client() if protocol == "http" else server.grpc_client()
    i = 0
    while not stop.is_set():
        rows = 1 + i % 3
        a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + wid * 1e5 + i
        b = np.full((rows, 4), float(i % 97), dtype=np.float32)
        rid = f"{protocol}-as-{wid}-{i}"
        try:
            r = c.infer("add_sub", make_inputs(protocol, {"INPUT0": a, "INPUT1": b}), request_id=rid)
            got_id = r.get_response()["id"] if protocol == "http" else r.get_response().id
            if got_id != rid:
                tally.fail(f"{rid}: answered as {got_id}")
            elif not (np.array_equal(r.as_numpy("OUTPUT0"), a + b)
                      and np.array_equal(r.as_numpy("OUTPUT1"), a - b)):
                tally.fail(f"{rid}: wrong values")
            else:
                tally.ok("add_sub", protocol, rows)
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            tally.fail(f"{rid}: {e}")
        i += 1


WORDS = ["grüße", "ß", "", "日本語", "emoji 🙂", "a\x00b", "plain"]


def string_worker(server, protocol, wid, stop, tally):
    c = server.http_client() if protocol == "http" else server.grpc_client()
    i = 0
    while not stop.is_set():
        texts = [f"{WORDS[(i + k) % len(WORDS)]}-{protocol}-{wid}-{i}-{k}" for k in range(1 + i % 4)]
        arr = np.array([[t.encode()] for t in texts], dtype=object)
        rid = f"{protocol}-su-{wid}-{i}"
        try:
            r = c.infer("string_upper", make_inputs(protocol, {"TEXT": arr}), request_id=rid)
            upper = [u.decode() for u in r.as_numpy("UPPER").reshape(-1)]
            length = r.as_numpy("LENGTH").reshape(-1).tolist()
            if upper != [t.upper() for t in texts] or length != [len(t) for t in texts]:
                tally.fail(f"{rid}: wrong values {upper!r}")
            else:
                tally.ok("string_upper", protocol, len(texts))
        except Exception as e:  # noqa: BLE001
            tally.fail(f"{rid}: {e}")
        i += 1


def stream_worker(server, wid, stop, tally, window=8):
    """One gRPC stream with up to `window` requests in flight; each request
    COUNT=n must get exactly OUT=0..n-1 then one final flag."""
    q: "queue.Queue" = queue.Queue()
    c = server.grpc_client()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    pending = {}                       # request id -> (count, received values)
    i = 0
    try:
        while not stop.is_set() or pending:
            while not stop.is_set() and len(pending) < window:
                n = i % 6
                rid = f"st-{wid}-{i}"
                pending[rid] = (n, [])
                c.async_stream_infer("stream_counter",
                                     make_inputs("grpc", {"COUNT": np.array([n], np.int32)}),
                                     request_id=rid, enable_empty_final_response=True)
                i += 1
            try:
                result, error = q.get(timeout=90)
            except queue.Empty:
                tally.fail(f"stream {wid}: no response in 90 s for {sorted(pending)[:5]}")
                return
            if error is not None:
                tally.fail(f"stream {wid}: {error}")
                return
            resp = result.get_response()
            rid = resp.id
            if rid not in pending:
                tally.fail(f"stream {wid}: response for unknown/finished request {rid!r} (duplicate?)")
                continue
            n, got = pending[rid]
            out = result.as_numpy("OUT")
            if out is not None:
                got.append(int(out[0]))
            if resp.parameters["triton_final_response"].bool_param:
                del pending[rid]
                if got != list(range(n)):
                    tally.fail(f"{rid}: streamed {got}, expected {list(range(n))}")
                else:
                    tally.ok("stream_counter", "grpc", 1, responses=n + 1)
    finally:
        c.stop_stream()
        c.close()


def http_pipelined_worker(server, stop, tally, depth=16):
    """HTTP async_infer with `depth` requests outstanding (keeps the dynamic
    batcher forming batches across requests)."""
    c = server.http_client(concurrency=depth)
    i = 0
    while not stop.is_set():
        batch = []
        for _ in range(depth):
            a = np.full((1, 4), float(i), np.float32)
            b = np.arange(4, dtype=np.float32).reshape(1, 4)
            batch.append((i, a, b, c.async_infer("add_sub", make_inputs("http", {"INPUT0": a, "INPUT1": b}),
                                                 request_id=f"pipe-{i}")))
            i += 1
        for k, a, b, fut in batch:
            try:
                r = fut.get_result()
                if r.get_response()["id"] != f"pipe-{k}" or not np.array_equal(r.as_numpy("OUTPUT0"), a + b):
                    tally.fail(f"pipe-{k}: wrong answer")
                else:
                    tally.ok("add_sub", "http", 1)
            except Exception as e:  # noqa: BLE001
                tally.fail(f"pipe-{k}: {e}")


def stats(server):
    out = {}
    for m in SOAK_MODELS:
        st = server.model_stats(m)
        out[m] = (st["inference_count"], st["inference_stats"]["success"]["count"],
                  st["inference_stats"]["fail"]["count"])
    return out


def test_soak_mixed_protocols_and_models(soak_server, record_property):
    s = soak_server
    secs = soak_seconds()
    before = stats(s)
    rss0 = rss_kib(s.proc.pid)
    stop = threading.Event()
    tally = Tally()
    workers = [
        threading.Thread(target=add_sub_worker, args=(s, "http", 0, stop, tally)),
        threading.Thread(target=add_sub_worker, args=(s, "grpc", 1, stop, tally)),
        threading.Thread(target=string_worker, args=(s, "http", 0, stop, tally)),
        threading.Thread(target=string_worker, args=(s, "grpc", 1, stop, tally)),
        threading.Thread(target=stream_worker, args=(s, 0, stop, tally)),
        threading.Thread(target=stream_worker, args=(s, 1, stop, tally)),
        threading.Thread(target=http_pipelined_worker, args=(s, stop, tally)),
    ]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    while time.monotonic() - t0 < secs and s.running and len(tally.errors) < 20:
        time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=120)
        assert not w.is_alive(), "a soak client hung"
    elapsed = time.monotonic() - t0

    assert s.running, "tritonserver died during the soak\n" + s.log_tail()
    assert not tally.errors, tally.errors[:20]
    assert s.is_live() and s.is_ready()
    for m in SOAK_MODELS:
        assert s.model_ready(m)

    # The server counted exactly what the clients saw answered: nothing lost,
    # nothing executed twice, nothing failed. The counters move just after a
    # response goes out (later still on a loaded machine): wait, bounded, for
    # the success counts to reach what the clients saw, then for them to stay.
    sent = {m: sum(n for (model, _), n in tally.requests.items() if model == m)
            for m in SOAK_MODELS}
    deadline = time.monotonic() + 90
    after, still = stats(s), 0
    while still < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = stats(s)
        reached = all(now[m][1] - before[m][1] >= sent[m] for m in SOAK_MODELS)
        still = still + 1 if (now == after and reached) else 0
        after = now
    for m in SOAK_MODELS:
        sent = sum(n for (model, _), n in tally.requests.items() if model == m)
        d_inf, d_ok, d_fail = (after[m][k] - before[m][k] for k in range(3))
        assert d_fail == 0, (m, before[m], after[m])
        assert d_ok == sent, (m, d_ok, sent)
        if m != "stream_counter":
            assert d_inf == tally.rows[m], (m, d_inf, tally.rows[m])

    report = {
        "seconds": round(elapsed, 1),
        "requests": sum(tally.requests.values()),
        "responses_checked": tally.responses,
        "by_model_protocol": {f"{m}/{p}": n for (m, p), n in sorted(tally.requests.items())},
        "rss_kib": [rss0, rss_kib(s.proc.pid)],
    }
    print("\nsoak:", json.dumps(report))
    record_property("soak", json.dumps(report))
    out = os.environ.get("RUSTPY_RELIABILITY_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"soak": report}) + "\n")
    assert all(n > 0 for n in tally.requests.values()) and len(tally.requests) == 5, report
