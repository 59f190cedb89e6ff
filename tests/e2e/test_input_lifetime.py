"""Inputs a model keeps stay what the client sent, and keeping them does not
pin the model (issue 9, item 1).

The models (tests/e2e/repos/lifetime/) keep a reference to every input they
see, as a cache would: `keeper` (batched API, max_batch_size 0, so every
request is alone in its call) keeps the numpy array; `keeper_pb` (the official
API) keeps the pb_utils.Tensor, its array and a DLPack capsule. A request with
the parameter `recall` returns everything kept so far.

Over each protocol the server's frontends own the input bytes and reuse them
once the response is out: gRPC reuses its message buffers, HTTP frees the
body, and a client-registered system shared-memory region is unmapped when the
client unregisters it (the next region is usually mapped at the same address).
So every kept input is read back after >= 20 later requests (each with other
values; with shared memory, each in its own region that the client destroys
after the response) and compared with what was sent.
"""
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tritonharness import E2E_DIR

LIFETIME = E2E_DIR / "repos" / "lifetime"
MODELS = ["keeper", "keeper_pb"]
PROTOCOLS = ["http_binary", "http_json", "grpc", "shm_http", "shm_grpc"]
KEPT = 25  # the first kept input outlives 24 later requests
ELEMS = 16 * 1024  # 64 KiB per input: big enough for buffers to be pooled and reused


def sent_values(i: int) -> np.ndarray:
    return np.random.default_rng(1000 + i).standard_normal(ELEMS).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tritonharness import TritonServer, TritonStartError
    markers = tmp_path_factory.mktemp("markers")
    s = TritonServer(LIFETIME, name="lifetime", env={"RUSTPY_TEST_MARKERS": markers})
    try:
        s.start()
    except TritonStartError as e:
        s.stop()
        pytest.fail(f"could not start tritonserver: {e}", pytrace=False)
    yield s
    s.stop()


def _client(server, protocol):
    return server.grpc_client() if "grpc" in protocol else server.http_client()


def _mod(protocol):
    return grpcclient if "grpc" in protocol else httpclient


def send(server, client, protocol, model, x):
    """One request carrying `x` over `protocol`; returns OUT."""
    mod = _mod(protocol)
    inp = mod.InferInput("IN", list(x.shape), "FP32")
    if not protocol.startswith("shm"):
        if protocol == "http_json":
            inp.set_data_from_numpy(x, binary_data=False)
        else:
            inp.set_data_from_numpy(x)
        return client.infer(model, [inp]).as_numpy("OUT")
    # The client's region lives for this request only: created, registered,
    # used, then unregistered (the server unmaps it) and destroyed.
    name = f"rustpy_lifetime_{uuid.uuid4().hex[:12]}"
    handle = shm.create_shared_memory_region(name, "/" + name, x.nbytes)
    try:
        shm.set_shared_memory_region(handle, [x])
        client.register_system_shared_memory(name, "/" + name, x.nbytes)
        try:
            inp.set_shared_memory(name, x.nbytes)
            return client.infer(model, [inp]).as_numpy("OUT")
        finally:
            unregister(client, name)
    finally:
        shm.destroy_shared_memory_region(handle)


def unregister(client, name):
    """Unregisters a region once Triton lets go of it. The response can reach
    the client before the backend has released the request (rustpy sends the
    final response, then reports statistics and releases), and until then
    Triton refuses: "... it is currently in use". A region still refused after
    60 s is a leak, and fails."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.unregister_system_shared_memory(name)
        except InferenceServerException as e:
            if "currently in use" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def recall(client, protocol, model):
    mod = _mod(protocol)
    inp = mod.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros(1, np.float32))
    return client.infer(model, [inp], parameters={"recall": True}).as_numpy("OUT")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model", MODELS)
def test_kept_inputs_keep_their_values(server, model, protocol):
    c = _client(server, protocol)
    before = recall(c, protocol, model).shape[0]
    for i in range(KEPT):
        x = sent_values(i)
        out = send(server, c, protocol, model, x)
        np.testing.assert_array_equal(out.reshape(-1), x)
    kept = recall(c, protocol, model)[before:]
    assert kept.shape == (KEPT, ELEMS), kept.shape
    changed = [i for i in range(KEPT) if not np.array_equal(kept[i], sent_values(i))]
    assert changed == [], (
        f"{model} over {protocol}: kept inputs {changed} no longer hold the values the client "
        f"sent (they show memory the server reused)")
    assert server.is_live()


def _state(server, model):
    return {m["name"]: m for m in server.repository_index()}[model].get("state")


@pytest.mark.parametrize("model", MODELS)
def test_unload_of_a_model_that_kept_inputs(tmp_path, triton_factory, model):
    """Kept inputs do not hold the model: unload makes it UNAVAILABLE and runs
    finalize (it takes well under a second; the bound is for a loaded machine:
    a pinned model never unloads at all)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    s = triton_factory(LIFETIME, model_control_mode="explicit", load_models=[model],
                       wait_models=[model], env={"RUSTPY_TEST_MARKERS": markers})
    for protocol in ("http_binary", "grpc", "shm_http"):
        c = _client(s, protocol)
        for i in range(8):
            send(s, c, protocol, model, sent_values(i))
    marker = markers / f"{model}.finalized"
    start = time.monotonic()
    status, body = s.unload_model(model)
    assert status == 200, body
    deadline = start + 90.0
    while time.monotonic() < deadline:
        if marker.exists() and _state(s, model) == "UNAVAILABLE":
            break
        time.sleep(0.05)
    assert _state(s, model) == "UNAVAILABLE", (
        f"{model} still {_state(s, model)} 90 s after unload (kept inputs pin it)")
    assert marker.exists(), f"{model}: finalize did not run within 90 s of unload"
    assert marker.read_text().strip() == "24"


def test_shutdown_with_kept_inputs_runs_finalize(tmp_path, triton_factory):
    """Kept inputs do not hold the server either: on SIGTERM both models
    finalize and the server exits cleanly, without waiting out its exit
    timeout (120 s here; the bound below is generous for a loaded machine)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    s = triton_factory(LIFETIME, exit_timeout=120, env={"RUSTPY_TEST_MARKERS": markers})
    for model in MODELS:
        for protocol in ("grpc", "shm_http"):
            c = _client(s, protocol)
            for i in range(4):
                send(s, c, protocol, model, sent_values(i))
    start = time.monotonic()
    rc = s.stop()
    took = time.monotonic() - start
    for model in MODELS:
        marker = markers / f"{model}.finalized"
        assert marker.exists(), f"{model}: finalize did not run at shutdown"
        assert marker.read_text().strip() == "8"
    assert rc == 0, f"tritonserver exited with {rc}"
    assert took < 110, f"shutdown took {took:.0f} s (kept inputs held the models?)"
