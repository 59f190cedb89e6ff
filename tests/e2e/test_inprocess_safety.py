"""In-process safety (issue 9), Python side, against the real tritonserver:

- no lock is held across user code: a thread started in initialize imports a
  sibling module; pb_utils.load_model() of another rustpy model inside
  initialize; a serving model's lazy `import` while another model's
  initialize is still running;
- pb_utils.get_model_dir() answers for the calling model, from any thread of
  it (auto_complete_config, initialize, execute, the model's own thread),
  also while another model executes concurrently;
- asyncio: each instance has its own event loop for its lifetime (a reload
  while an `async def execute` is in flight does not stop the new instance's
  coroutines); an exception from a decoupled `async def execute` is logged
  and fails the requests it left open; several coroutines of one decoupled
  instance run concurrently, each awaiting a decoupled BLS call.

Models: tests/e2e/repos/reliability/safety/ (copied per test). Waits are
bounded generously and the assertions are on behaviour, never on timing.
"""
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from e2e_client import infer, make_inputs, stream
from reliability import RELIABILITY, copy_models

SAFETY = RELIABILITY / "safety"
X = {"X": np.array([1], dtype=np.int32)}


def wait_for(pred, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def model_state(server, model):
    return {m["name"]: m for m in server.repository_index()}.get(model, {}).get("state")


@pytest.fixture
def markers(tmp_path):
    d = tmp_path / "markers"
    d.mkdir()
    return d


def explicit(triton_factory, repo, markers, **kw):
    return triton_factory(repo, model_control_mode="explicit", wait_models=[],
                          env={"RUSTPY_TEST_MARKERS": str(markers)}, **kw)


# ------------------------------------------------------- no lock across user code
def test_thread_started_in_initialize_imports_a_sibling(tmp_path, triton_factory, markers):
    repo = copy_models(tmp_path / "repo", SAFETY / "thread_import")
    s = explicit(triton_factory, repo, markers)
    status, body = s.load_model("thread_import")
    assert status == 200, body
    out = infer(s, "http", "thread_import", X).as_numpy("OUT")
    assert out[0] == b"late helper imported on a thread"


def test_load_model_inside_initialize(tmp_path, triton_factory, markers):
    """pb_utils.load_model("loaded") in initialize, where `loaded` is a rustpy
    model: both become READY (it used to hang forever on the load lock)."""
    repo = copy_models(tmp_path / "repo", SAFETY / "loader", SAFETY / "loaded")
    s = explicit(triton_factory, repo, markers)
    # Loaded through the repository API once the server is up (during startup
    # Triton refuses model control: "Server not ready", on both backends).
    threading.Thread(target=s.load_model, args=("loader",), daemon=True).start()
    wait_for(lambda: model_state(s, "loader") in ("READY", "UNAVAILABLE"), 60,
             "loader to finish loading")
    assert model_state(s, "loader") == "READY", s.log_tail(30)
    assert model_state(s, "loaded") == "READY"
    assert infer(s, "http", "loader", X).as_numpy("OUT")[0] == b"loaded ready: True"
    assert infer(s, "grpc", "loaded", {"X": np.array([21], np.int32)}).as_numpy("Y")[0] == 42


def test_lazy_import_does_not_wait_for_another_models_initialize(tmp_path, triton_factory, markers):
    repo = copy_models(tmp_path / "repo", SAFETY / "slow_init", SAFETY / "lazy_import")
    s = explicit(triton_factory, repo, markers, load_models=["lazy_import"])
    wait_for(lambda: model_state(s, "lazy_import") == "READY", 60, "lazy_import READY")
    loading = threading.Thread(target=s.load_model, args=("slow_init",), daemon=True)
    loading.start()
    try:
        wait_for(lambda: (markers / "slow_init_started").exists(), 60,
                 "slow_init's initialize to start")
        # slow_init's initialize now waits for release_slow_init: the lazy
        # `import lazy_helper` of the first request must not wait for it.
        got = {}

        def ask():
            got["out"] = infer(s, "grpc", "lazy_import", X).as_numpy("OUT")[0]

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(90)
        assert got.get("out") == b"lazy helper", "the request waited for another model's initialize"
        assert not (markers / "slow_init_done").exists()
    finally:
        (markers / "release_slow_init").touch()
    loading.join(60)
    wait_for(lambda: model_state(s, "slow_init") == "READY", 60, "slow_init READY")


# ------------------------------------------------------------- get_model_dir
def test_get_model_dir_is_the_calling_models(tmp_path, triton_factory, markers):
    repo = tmp_path / "repo"
    for name in ("dir_a", "dir_b"):
        shutil.copytree(SAFETY / "which_dir", repo / name)
        cfg = repo / name / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace('name: "which_dir"', f'name: "{name}"'))
    s = explicit(triton_factory, repo, markers, load_models=["dir_a", "dir_b"])
    for name in ("dir_a", "dir_b"):
        wait_for(lambda: model_state(s, name) == "READY", 60, f"{name} READY")
    got = {}

    def ask(name, protocol):
        got[name] = json.loads(infer(s, protocol, name, X).as_numpy("OUT")[0])

    threads = [threading.Thread(target=ask, args=(n, p)) for n, p in
               (("dir_a", "http"), ("dir_b", "grpc"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for name in ("dir_a", "dir_b"):
        expected = str(repo / name / "1")
        assert got[name] == {k: expected for k in (
            "auto_complete_config", "initialize", "execute_entry",
            "execute_after_other_entered", "own_thread")}, got


# ------------------------------------------------------------------- asyncio
def test_reload_during_async_execute(tmp_path, triton_factory, markers):
    """Request 1 runs on the old instance, request 2 on the reloaded one; the
    old instance's finalize (after request 1) must not stop request 2's loop."""
    repo = copy_models(tmp_path / "repo", SAFETY / "async_reload")
    s = explicit(triton_factory, repo, markers, load_models=["async_reload"])
    wait_for(lambda: model_state(s, "async_reload") == "READY", 60, "async_reload READY")
    got = {}

    def ask(tag):
        c = s.grpc_client()
        got[tag] = int(c.infer("async_reload", make_inputs(
            "grpc", {"X": np.array([tag], np.int32)})).as_numpy("Y")[0])

    first = threading.Thread(target=ask, args=(1,), daemon=True)
    first.start()
    wait_for(lambda: (markers / "started_1").exists(), 90, "request 1 to start")
    model_py = repo / "async_reload" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# edited: reload\n")
    status, body = s.load_model("async_reload")
    assert status == 200, body
    second = threading.Thread(target=ask, args=(2,), daemon=True)
    second.start()
    wait_for(lambda: (markers / "started_2").exists(), 90, "request 2 to start")
    (markers / "release_1").touch()
    first.join(90)
    assert got.get(1) == 1
    wait_for(lambda: (markers / "finalized").exists(), 90, "the old instance's finalize")
    (markers / "release_2").touch()
    second.join(90)
    assert got.get(2) == 2, "the reloaded instance's async execute never finished"


def test_decoupled_async_execute_exception(tmp_path, triton_factory, markers):
    repo = copy_models(tmp_path / "repo", SAFETY / "async_raise")
    s = explicit(triton_factory, repo, markers, load_models=["async_raise"])
    wait_for(lambda: model_state(s, "async_raise") == "READY", 60, "async_raise READY")
    got = stream(s, "async_raise", [("r1", {"X": np.array([7], np.int32)})], timeout=90)["r1"]
    assert len(got) == 2, got
    first, final = got
    assert first[0].as_numpy("Y")[0] == 7 and not first[1]
    error, is_final = final
    assert is_final and "ValueError: async boom after the first response" in str(error), error
    assert "async_raise" in str(error)
    assert s.wait_for_log("ValueError: async boom after the first response")
    log = s.log_text()
    assert "model.py" in log and "Traceback" in log


def test_decoupled_async_executes_run_concurrently(tmp_path, triton_factory, markers):
    """Four requests to a decoupled async caller, each awaiting a decoupled
    BLS call to a callee that holds its answer until 4 of its coroutines run
    at once (at most 10 s): every answer reports 4 running together. Each
    request is sent once the previous one reached the callee."""
    repo = copy_models(tmp_path / "repo", SAFETY / "async_caller", SAFETY / "async_callee")
    s = explicit(triton_factory, repo, markers, load_models=["async_caller", "async_callee"])
    for name in ("async_caller", "async_callee"):
        wait_for(lambda: model_state(s, name) == "READY", 60, f"{name} READY")
    results = []
    done = threading.Event()
    c = s.grpc_client()

    def callback(result, error):
        results.append((result, error))
        if sum(1 for r, e in results if e is not None or r.as_numpy("MAX") is not None) >= 4:
            done.set()

    c.start_stream(callback=callback)
    try:
        for tag in range(1, 5):
            c.async_stream_infer("async_caller", make_inputs("grpc", {"TAG": np.array([tag], np.int32)}),
                                 request_id=str(tag))
            try:
                wait_for(lambda: (markers / f"callee_{tag}").exists(), 30, f"callee {tag}")
            except AssertionError:
                pass  # asserted below, from what the callee answered
        done.wait(90)
    finally:
        c.stop_stream()
    errors = [e for _, e in results if e is not None]
    assert not errors, errors
    answers = {r.get_response().id: int(r.as_numpy("MAX")[0]) for r, _ in results
               if r.as_numpy("MAX") is not None}
    assert answers == {"1": 4, "2": 4, "3": 4, "4": 4}, answers
