"""Process isolation: inputs reach `predict` / `execute` as views of the
worker's shared input region, not copies (issue 11), safely.

A view Python keeps after the call must never show a later batch's bytes,
and the region must not leak: after each execution the worker checks whether
anything still references the region's owner (the base of every view); if
so, that batch's range is pinned, the backend writes the next batches
elsewhere, and the old mapping is unmapped when Python frees the last view.

Models: tests/e2e/repos/process/proc_views (reports VIEW / MAPS / KEPT_OK),
and the in-process lifetime models (tests/e2e/repos/lifetime: keeper, the
batched API, and keeper_pb, the official API with pb_utils.Tensor, its array
and a DLPack import) copied with `rustpy.isolation: "process"` added.
"""
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from e2e_client import infer
from reliability import copy_models, start_server
from tritonharness import E2E_DIR

PROCESS = E2E_DIR / "repos" / "process"
LIFETIME = E2E_DIR / "repos" / "lifetime"
ISOLATE = '\nparameters { key: "rustpy.isolation" value { string_value: "process" } }\n'
KEPT = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("views") / "repo", PROCESS / "proc_views",
                       LIFETIME / "keeper", LIFETIME / "keeper_pb")
    for m in ("keeper", "keeper_pb"):
        cfg = repo / m / "config.pbtxt"
        cfg.write_text(cfg.read_text() + ISOLATE)
    s = start_server(repo, name="views")
    yield s
    s.stop()


def rows(i: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(500 + i).standard_normal((n, 256)).astype(np.float32)


def views(server, x, **params):
    r = infer(server, "grpc", "proc_views", {"X": x}, parameters=params or None)
    return {k: r.as_numpy(k) for k in ("Y", "VIEW", "MAPS", "KEPT_OK")}


def test_batched_inputs_are_views_and_nothing_accumulates(server):
    """Concurrent requests are batched into one call whose X is a view of the
    region; with nothing kept the worker keeps exactly one mapping."""
    before = server.model_stats("proc_views")
    c = grpcclient.InferenceServerClient(server.grpc_url)
    results, sent = {}, {}
    for i in range(48):
        x = rows(i)
        inp = grpcclient.InferInput("X", [1, 256], "FP32")
        inp.set_data_from_numpy(x)
        sent[i] = x
        c.async_infer("proc_views", [inp],
                      callback=lambda result, error, i=i: results.__setitem__(i, (result, error)))
    deadline = time.monotonic() + 60
    while len(results) < 48 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(results) == 48, f"{len(results)} of 48 answered within 60 s"
    for i, (r, e) in results.items():
        assert e is None, e
        np.testing.assert_array_equal(r.as_numpy("Y"), sent[i])
        assert r.as_numpy("VIEW")[0, 0] == 1, "X reached predict as a copy, not a view"
    after = server.model_stats("proc_views")
    sizes = {int(b["batch_size"]) for b in after.get("batch_stats", [])}
    assert max(sizes) > 1, f"no call had more than one request: {sizes} ({before})"
    # A larger batch of many rows in one request is a view too.
    out = views(server, rows(99, 16))
    np.testing.assert_array_equal(out["Y"], rows(99, 16))
    assert (out["VIEW"] == 1).all()
    for _ in range(20):
        out = views(server, rows(7))
    assert out["MAPS"][0, 0] == 1, f"{out['MAPS'][0, 0]} input mappings with nothing kept"


def test_kept_views_never_see_later_batches_and_are_unmapped_when_dropped(server):
    views(server, rows(0), drop=True)
    for i in range(KEPT):
        out = views(server, rows(1000 + i), keep=True)
        assert out["KEPT_OK"][0, 0] == 1, f"a kept view changed by batch {i}"
        assert out["VIEW"][0, 0] == 1
    # Later batches (each with other values) do not touch what is kept.
    for i in range(10):
        out = views(server, rows(2000 + i, 1 + i % 4))
        assert out["KEPT_OK"][0, 0] == 1, "a later batch overwrote a kept view"
    # Each kept batch pinned its own mapping (the current one is extra).
    assert out["MAPS"][0, 0] >= KEPT, out["MAPS"][0, 0]
    # Dropping them unmaps every pinned mapping; the region is reused from then on.
    out = views(server, rows(3), drop=True)
    assert out["MAPS"][0, 0] <= 2, f"{out['MAPS'][0, 0]} mappings after the kept views were freed"
    for _ in range(5):
        out = views(server, rows(4))
    assert out["MAPS"][0, 0] == 1


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["keeper", "keeper_pb"])
def test_kept_inputs_keep_their_values_in_a_worker(server, model, protocol):
    """Like tests/e2e/test_input_lifetime.py, in process mode: 25 kept inputs
    (arrays, pb_utils.Tensors and DLPack imports) read back after later
    requests hold what the client sent."""
    def values(i):
        return np.random.default_rng(3000 + i).standard_normal(4096).astype(np.float32)

    def recall():
        return infer(server, protocol, model, {"IN": np.zeros(1, np.float32)},
                     parameters={"recall": True}).as_numpy("OUT")
    before = recall().shape[0]
    for i in range(KEPT):
        out = infer(server, protocol, model, {"IN": values(i)}).as_numpy("OUT")
        np.testing.assert_array_equal(out.reshape(-1), values(i))
    kept = recall()[before:]
    assert kept.shape == (KEPT, 4096), kept.shape
    changed = [i for i in range(KEPT) if not np.array_equal(kept[i], values(i))]
    assert changed == [], f"{model} in a worker: kept inputs {changed} show later batches' bytes"
