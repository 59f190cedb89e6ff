"""BLS from a process-isolated model with large tensors (docs/isolation.md,
"Calls into the server"): BLS inputs and outputs of more than 4 KiB go
through two shared-memory regions per worker, not through the control
socket. Models: tests/e2e/repos/process_bls (the caller, `bls_caller`, runs
in a worker; its targets run in-process).

Where the tensors went is seen from outside: the worker's BLS regions are
memfds (`/proc/PID/fd/N` -> `/memfd:rustpy-bls-in`, `...-bls-out`), sparse
files of a fixed size (`rustpy.shm_limit_mb`) whose allocated bytes are the
memory they hold; inline in the frames, nothing would be written there.
"""
import os
import shutil
import time

import numpy as np
import pytest

from e2e_client import infer
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

REPO = E2E_DIR / "repos" / "process_bls"
KEY = np.uint8(0x5A)  # bls_target answers IN ^ 0x5A


@pytest.fixture(scope="module")
def bls_server(tmp_path_factory):
    # The repository plus `bls_caller_inproc`: the same caller in-process.
    repo = copy_models(tmp_path_factory.mktemp("process_bls") / "repo",
                       *sorted(p for p in REPO.iterdir() if p.is_dir()))
    inproc = repo / "bls_caller_inproc"
    shutil.copytree(repo / "bls_caller", inproc)
    config = (inproc / "config.pbtxt").read_text().replace('"bls_caller"', '"bls_caller_inproc"')
    (inproc / "config.pbtxt").write_text(
        "".join(l for l in config.splitlines(True) if "rustpy.isolation" not in l))
    s = start_server(repo, name="process_bls", model_control_mode="explicit", wait_models=[])
    # The targets first: bls_caller's initialize starts a thread calling one.
    for m in ("bls_target", "bls_stream_target", "bls_caller", "bls_caller_inproc"):
        status, body = s.load_model(m)
        assert status == 200, (m, body)
    yield s
    s.stop()


def run(s, x, mode, caller="bls_caller"):
    r = infer(s, "http", caller, {"IN": x, "MODE": np.array([mode], np.int32)})
    return r.as_numpy("OUT"), int(r.as_numpy("N")[0]), int(r.as_numpy("PID")[0])


def bls_regions(pid: int) -> dict:
    """{"in": bytes, "out": bytes}: the memory the worker's BLS memfds hold
    (their allocated bytes; the files are sparse)."""
    sizes = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("/memfd:rustpy-bls-"):
                kind = target[len("/memfd:rustpy-bls-"):].split()[0]
                sizes[kind] = os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except OSError:
            continue
    return sizes


def wait_until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def pattern(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, n, dtype=np.uint8)


def test_large_bls_tensor_both_ways_through_shared_memory(bls_server):
    s = bls_server
    small = pattern(16)
    out, _, pid = run(s, small, 0)  # inline (small): the same answer
    np.testing.assert_array_equal(out, small ^ KEY)
    x = pattern(32 << 20, seed=1)
    started = time.monotonic()
    out, _, pid2 = run(s, x, 0)
    took = time.monotonic() - started
    assert pid2 == pid
    assert out.shape == x.shape
    assert np.array_equal(out, x ^ KEY), "the 32 MiB BLS round trip changed bytes"
    print(f"32 MiB BLS round trip through a worker, whole HTTP request: {took * 1000:.0f} ms")
    # Both ways through the worker's BLS regions, which now hold it.
    sizes = bls_regions(pid)
    assert sizes.get("in", 0) >= 32 << 20 and sizes.get("out", 0) >= 32 << 20, sizes
    # A second one reuses the regions and still gets its own bytes.
    y = pattern(32 << 20, seed=2)
    out, _, _ = run(s, y, 0)
    assert np.array_equal(out, y ^ KEY)


def test_eight_concurrent_bls_calls_from_threads_keep_their_own_data(bls_server):
    x = pattern(1 << 20, seed=3)
    for _ in range(3):
        out, overlapped, _ = run(bls_server, x, 1)
        want = np.concatenate([x ^ np.uint8(k + 1) ^ KEY for k in range(8)])
        assert out.shape == want.shape
        for k in range(8):
            part = out[k * x.size:(k + 1) * x.size]
            assert np.array_equal(part, want[k * x.size:(k + 1) * x.size]), f"thread {k} got other bytes"
        print(f"BLS calls in flight at once: up to {overlapped}")
        assert overlapped >= 2


def test_eight_concurrent_async_exec_calls_keep_their_own_data(bls_server):
    x = pattern((1 << 20) + 13, seed=4)  # not a multiple of the alignment
    out, awaited_at_once, _ = run(bls_server, x, 2)
    # All eight were pending together on the event loop (an async_exec that
    # ran its call before returning would give 1).
    assert awaited_at_once == 8
    for k in range(8):
        part = out[k * x.size:(k + 1) * x.size]
        assert np.array_equal(part, x ^ np.uint8(8 + k + 1) ^ KEY), f"call {k} got other bytes"


def test_decoupled_bls_stream_of_many_large_responses(bls_server):
    x = pattern(256 << 10, seed=5)
    out, n, pid = run(bls_server, x, 3)
    assert n == 40
    for i in range(40):
        part = out[i * x.size:(i + 1) * x.size]
        assert np.array_equal(part, x ^ np.uint8(i)), f"response {i} has other bytes"
    out2, n2, _ = run(bls_server, x, 3)
    assert n2 == 40 and np.array_equal(out2, out)
    assert bls_regions(pid).get("out", 0) >= x.size


def test_bls_from_a_thread_started_in_initialize(bls_server):
    """`exec` in initialize itself raises the upstream phase error; a thread
    that initialize started may call BLS (1 MiB both ways)."""
    out, phase_error, _ = run(bls_server, pattern(4), 4)
    assert phase_error == 1
    x = (np.arange(1 << 20) % 251).astype(np.uint8)
    np.testing.assert_array_equal(out, x ^ KEY)


def test_bls_sizes_up_and_down_in_a_row(bls_server):
    """Region growth: sizes going up and down each get their own bytes
    (the 70 MiB call grows both regions past the 64 MiB shrink threshold)."""
    for i, size in enumerate([5000, 3 << 20, 100 << 10, 40 << 20, 4097, 1 << 20, 70 << 20]):
        x = pattern(size, seed=10 + i)
        out, _, pid = run(bls_server, x, 0)
        assert np.array_equal(out, x ^ KEY), size
    # A region grown past 64 MiB gives its memory back once it is idle.
    assert wait_until(lambda: bls_regions(pid) == {"in": 0, "out": 0}), bls_regions(pid)


def test_a_failed_large_bls_call_frees_its_range(bls_server):
    """A BLS call whose 8 MiB inputs went to the region but whose model is not
    loaded answers with the server's error, and the calls after it work."""
    x = pattern(8 << 20, seed=20)
    for _ in range(3):
        out, has_error, _ = run(bls_server, x, 5)
        assert has_error == 1
        assert "no_such_model" in out.tobytes().decode(), out.tobytes()[:300]
    y = pattern(8 << 20, seed=21)
    out, _, _ = run(bls_server, y, 0)
    assert np.array_equal(out, y ^ KEY)


@pytest.mark.parametrize("caller", ["bls_caller", "bls_caller_inproc"])
def test_bls_answers_are_the_callers_own_while_buffers_are_reused(bls_server, caller):
    # Large answers become the caller's arrays without a copy, and a buffer
    # goes back for reuse only when its array dies (rustpy_core::buffers):
    # a kept answer never changes under later calls, a reused buffer holds
    # its new answer.
    x = pattern(4 << 20, seed=6)
    for _ in range(3):
        out, ok, _ = run(bls_server, x, 6, caller)
        assert ok == 1, "a kept BLS answer changed, was read-only or shared memory"
        assert np.array_equal(out, x ^ np.uint8(0x0F) ^ KEY)
