"""Each instance's response thread (src/send_thread.rs) and its switch,
`--backend-config=rustpy,response-thread=false`: the same answers, in the same
order, under concurrent load, either way; a bad value fails the load naming
the key."""
import concurrent.futures
import os

import numpy as np
import pytest

from e2e_client import infer, stream
from reliability import assert_setting_refused, start_server
from tritonharness import MODEL_REPOSITORY


@pytest.fixture(scope="module", params=["thread", "inline"])
def either(request, server):
    if request.param == "thread":  # the default
        yield server
        return
    s = start_server(MODEL_REPOSITORY, name="inline-responses",
                     extra_args=["--backend-config=rustpy,response-thread=false"])
    yield s
    s.stop()


def _thread_names(server):
    tasks = f"/proc/{server.proc.pid}/task"
    names = []
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return names


def test_the_setting_decides_whether_instances_have_a_response_thread(either, request):
    infer(either, "http", "add_sub", {"INPUT0": np.ones((1, 4), np.float32),
                                      "INPUT1": np.ones((1, 4), np.float32)})
    senders = [n for n in _thread_names(either) if n.startswith("rsend-")]
    if request.node.callspec.params["either"] == "thread":
        # One per loaded rustpy instance, named after it (cut to Linux's 15 bytes).
        assert "rsend-add_sub_0" in senders, senders
    else:
        assert senders == []


def test_concurrent_requests_each_get_their_own_answer(either):
    def one(i):
        a = np.full((1, 4), i, np.float32)
        b = np.arange(4, dtype=np.float32).reshape(1, 4)
        r = infer(either, "grpc" if i % 2 else "http", "add_sub", {"INPUT0": a, "INPUT1": b})
        return i, r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for i, out0, out1 in pool.map(one, range(200)):
            want = np.arange(4, dtype=np.float32).reshape(1, 4)
            np.testing.assert_array_equal(out0, i + want)
            np.testing.assert_array_equal(out1, i - want)


def test_streams_keep_their_order_and_end_once(either):
    counts = {f"r{i}": n for i, n in enumerate([50, 0, 17, 3, 33])}
    got = stream(either, "stream_counter",
                 [(rid, {"COUNT": np.array([n], np.int32)}) for rid, n in counts.items()])
    for rid, n in counts.items():
        responses = got[rid]
        values = [int(r.as_numpy("OUT")[0]) for r, _ in responses if r.as_numpy("OUT") is not None]
        assert values == list(range(n)), rid
        assert [final for _, final in responses] == [False] * (len(responses) - 1) + [True], rid


def test_a_bad_response_thread_setting_fails_the_load_with_the_reason():
    assert_setting_refused(MODEL_REPOSITORY, "add_sub", "response-thread=sometimes",
                           "response-thread=sometimes: expected true or false")
