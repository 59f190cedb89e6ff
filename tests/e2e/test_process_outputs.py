"""Process isolation: an output that is a view of the batch's inputs (an
identity, a slice) is not copied in the worker (issue 11, "outputs written
once into shared memory and sent from there"): the worker sends its offset
in the shared input region and the backend copies it from there into
Triton's response, before it reads the batch's Done, so the region is
untouched until then. Everything else is copied into the output region
once, as before.

What must hold: the bytes are right when outputs alias inputs, at an
offset, from an older batch the model kept, in concurrent batches, and for
pb_utils, whose inputs are writable, a send takes the bytes before it
returns. That nothing was copied shows in the memory the worker's output
region holds (`OUTMAP`, its file's allocated bytes: the region is sparse, a
page holds memory once written): with 8 MiB outputs copied it would be
>= 8 MiB; views leave it under 1 MiB.

Models: tests/e2e/repos/process/proc_alias (batched API) and proc_alias_pb
(pb_utils, decoupled).

New arrays the model fills itself go out without the worker's copy when it
makes them with `ctx.empty` (proc_empty): they lie in the output region
from the start. The same memory measure shows it: a copied 8 MiB output
would make the region hold it twice.
"""
import queue
import shutil
import threading

import numpy as np
import pytest

from e2e_client import infer, make_inputs
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

PROCESS = E2E_DIR / "repos" / "process"
MiB = 1 << 20
# Outputs copied so far: small ones only (the 8 MiB ones are views).
SMALL_OUTPUTS = 1 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("outputs") / "repo",
                       PROCESS / "proc_alias", PROCESS / "proc_alias_pb",
                       PROCESS / "proc_alias_pb_default", PROCESS / "proc_empty",
                       PROCESS / "proc_empty_stream")
    # The same ctx.empty model in-process: ordinary arrays, the same answers.
    inproc = repo / "proc_empty_inproc"
    shutil.copytree(repo / "proc_empty", inproc)
    config = (inproc / "config.pbtxt").read_text().replace('name: "proc_empty"',
                                                           'name: "proc_empty_inproc"')
    (inproc / "config.pbtxt").write_text(
        "\n".join(line for line in config.splitlines() if "rustpy.isolation" not in line) + "\n")
    s = start_server(repo, name="outputs")
    yield s
    s.stop()


def data(seed: int, n: int, rows: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, n), dtype=np.uint8)


def alias(server, x, protocol="http", **params):
    r = infer(server, protocol, "proc_alias", {"X": x}, parameters=params or None)
    return {k: r.as_numpy(k) for k in ("Y", "TAIL", "OLD", "OUTMAP")}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_identity_output_is_sent_from_the_input_region(server, protocol):
    """8 MiB in, the same 8 MiB out (and its second half, a view at an
    offset): right bytes, and the worker's output region never had to hold
    them."""
    for i in range(3):
        x = data(10 + i, 8 * MiB if protocol == "http" else 3 * MiB)
        out = alias(server, x, protocol)
        np.testing.assert_array_equal(out["Y"], x)
        np.testing.assert_array_equal(out["TAIL"], x[:, x.shape[1] // 2:])
        np.testing.assert_array_equal(out["OLD"], x)
    # OUTMAP is read in predict: this request shows the region after the
    # 8 MiB ones were sent.
    out = alias(server, data(1, 1024), protocol)
    assert 0 <= int(out["OUTMAP"][0, 0]) < SMALL_OUTPUTS, (
        f"the worker's output region grew to {int(out['OUTMAP'][0, 0])} bytes: "
        "outputs that are views of the inputs were copied into it")


def test_outputs_kept_across_batches_keep_their_bytes(server):
    """A kept input (pinned, in an older mapping) returned by later calls
    as an output, next to this call's own input: each has its own bytes."""
    n = 2 * MiB
    kept = data(100, n)
    out = alias(server, kept, keep="1")
    np.testing.assert_array_equal(out["OLD"], kept)
    for i in range(6):
        x = data(200 + i, n)
        out = alias(server, x)
        np.testing.assert_array_equal(out["Y"], x)
        np.testing.assert_array_equal(out["OLD"], kept)
    kept2 = data(300, n)
    alias(server, kept2, keep="1")
    x = data(301, n)
    out = alias(server, x)
    np.testing.assert_array_equal(out["Y"], x)
    np.testing.assert_array_equal(out["OLD"], kept2)


def run_clients(client, clients: int) -> None:
    """Runs client(k) for k < clients on threads at once; fails with every
    client's failure."""
    errors, lock = [], threading.Lock()

    def run(k):
        try:
            client(k)
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"client {k}: {e}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 120 s"
    assert not errors, errors


def test_concurrent_batches_get_their_own_rows(server):
    """Concurrent clients are batched into calls whose Y is a view of the
    whole batch; every client gets exactly its own bytes back, over several
    rounds (later batches reuse the region)."""
    n, rounds = 256 * 1024, 4

    def client(k):
        for r in range(rounds):
            x = data(1000 + 100 * k + r, n)
            out = alias(server, x)
            np.testing.assert_array_equal(out["Y"], x)
            np.testing.assert_array_equal(out["TAIL"], x[:, n // 2:])

    run_clients(client, 12)
    stats = server.model_stats("proc_alias")
    sizes = {int(b["batch_size"]) for b in stats.get("batch_stats", [])}
    assert max(sizes) > 1, f"no call had more than one request: {sizes}"


def test_pb_utils_send_takes_the_bytes_before_returning(server):
    """pb_utils inputs are writable: execute sends its input array as Y,
    then overwrites it with 7s and sends it again. The first response must
    carry the client's bytes, the second the 7s; neither went through the
    output region."""
    c = server.grpc_client()
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        for i in range(4):
            x = data(50 + i, 3 * MiB)[0]
            c.async_stream_infer("proc_alias_pb", make_inputs("grpc", {"X": x}),
                                 request_id=f"r{i}")
            got = []
            for _ in range(2):
                r, e = q.get(timeout=60)
                assert e is None, e
                got.append((r.as_numpy("Y"), int(r.as_numpy("OUTMAP")[0])))
            np.testing.assert_array_equal(got[0][0], x, err_msg="the first response "
                                          "shows bytes written after it was sent")
            assert (got[1][0] == 7).all()
        assert 0 <= got[1][1] < SMALL_OUTPUTS, (
            f"the worker's output region grew to {got[1][1]} bytes")
    finally:
        c.stop_stream()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_default_model_sending_a_view_through_its_sender_gets_its_bytes_out(server, protocol):
    """A default model's response sent by the batch's own thread normally
    waits for the batch's Done; one whose send must wait until the backend
    took its bytes (a view of the writable inputs) goes out at once, or the
    send would wait for ever. The bytes are the client's, not the 7s execute
    writes right after."""
    for i in range(3):
        x = data(40 + i, 2 * MiB)[0]
        r = infer(server, protocol, "proc_alias_pb_default", {"X": x})
        np.testing.assert_array_equal(r.as_numpy("Y"), x)


def empty_model(server, x, model="proc_empty", protocol="http", **params):
    r = infer(server, protocol, model, {"X": x}, parameters=params or None)
    return {k: r.as_numpy(k) for k in ("Y", "KEPT", "PLACED", "OUTMAP")}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_arrays_from_ctx_empty_are_sent_from_the_output_region(server, protocol):
    """8 MiB outputs computed into ctx.empty arrays: right bytes, the arrays
    lie in the output region, and the region holds them once (a copy of
    each into the region would make it hold >= 16 MiB)."""
    n = 8 * MiB if protocol == "http" else 3 * MiB
    before = int(empty_model(server, data(2, 1024), protocol=protocol)["OUTMAP"][0, 0])
    for i in range(3):
        x = data(500 + i, n)
        out = empty_model(server, x, protocol=protocol)
        np.testing.assert_array_equal(out["Y"], x ^ 0x5A)
        assert int(out["PLACED"][0, 0]) == 1
    out = empty_model(server, data(1, 1024), protocol=protocol)  # shows the region after them
    # The three calls' arrays take the same range (none is kept): the region
    # holds at most what it held before or one of them, not a second copy.
    assert 0 <= int(out["OUTMAP"][0, 0]) < max(before, n) + n // 2, (
        f"the worker's output region holds {int(out['OUTMAP'][0, 0])} bytes: "
        "arrays from ctx.empty were copied into it")
    # Small ones are ordinary arrays (a copy costs less than a held range).
    assert int(out["PLACED"][0, 0]) == 0


def test_a_kept_ctx_empty_array_keeps_its_bytes_while_later_batches_run(server):
    """The model keeps one answer array from ctx.empty and returns it from later
    calls: later batches' arrays go elsewhere in the region while it lives."""
    n = 2 * MiB
    kept = data(600, n)
    empty_model(server, kept, keep="1")
    for i in range(6):
        x = data(610 + i, n)
        out = empty_model(server, x)
        np.testing.assert_array_equal(out["Y"], x ^ 0x5A)
        np.testing.assert_array_equal(out["KEPT"], kept ^ 0x5A)
        assert int(out["PLACED"][0, 0]) == 1
    # Replaced: the old one's range is free again, the new one is kept.
    kept2 = data(620, n)
    empty_model(server, kept2, keep="1")
    out = empty_model(server, data(621, n))
    np.testing.assert_array_equal(out["KEPT"], kept2 ^ 0x5A)


def test_ctx_empty_in_concurrent_batches_and_in_process(server):
    """Batched clients each get their own rows of a ctx.empty array; the same
    model in-process gets ordinary arrays and the same answers."""
    n, rounds = 256 * 1024, 3

    def client(k):
        for r in range(rounds):
            x = data(2000 + 100 * k + r, n)
            for model in ("proc_empty", "proc_empty_inproc"):
                out = empty_model(server, x, model=model)
                np.testing.assert_array_equal(out["Y"], x ^ 0x5A)
                assert int(out["PLACED"][0, 0]) == (model == "proc_empty")

    run_clients(client, 8)


def test_a_streaming_model_refilling_one_ctx_empty_array_sends_each_fill(server):
    """A generator yields the same ctx.empty array 8 times, refilled each
    time: a response whose outputs the model may write again waits until the
    backend took them, so each carries its own fill."""
    c = server.grpc_client()
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        for k in range(3):
            x = data(700 + k, 4 * MiB)[0]
            c.async_stream_infer("proc_empty_stream", make_inputs("grpc", {"X": x}),
                                 request_id=f"s{k}")
            for i in range(8):
                r, e = q.get(timeout=60)
                assert e is None, e
                np.testing.assert_array_equal(r.as_numpy("Y"), x ^ np.uint8(i),
                                              err_msg=f"response {i} of stream {k}")
    finally:
        c.stop_stream()
