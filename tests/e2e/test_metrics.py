"""rustpy's own metrics on Triton's /metrics (docs/metrics.md), scraped after
known traffic and checked for exact counts.

Models: tests/e2e/repos/metrics (README there). `gate` makes exact batches: a
request with hold=true keeps the only instance busy until the test creates
<model dir>/release, so the requests sent meanwhile reach the next execution
together. The checkpoint test serves an archive from a static HTTP server on
loopback (checkpoint_services.py).
"""
import hashlib
import io
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from checkpoint_services import StaticFiles
from e2e_client import infer, infer_error
from reliability import assert_setting_refused, copy_models, start_server
from tritonharness import E2E_DIR

METRICS_REPO = E2E_DIR / "repos" / "metrics"


class Scrape:
    """One scrape of /metrics: every sample by name and labels (parsed by
    prometheus-client, which names a counter's samples `<family>_total`:
    Triton's `nv_inference_count` is read as `nv_inference_count_total`)."""

    def __init__(self, server):
        with urllib.request.urlopen(server.metrics_url, timeout=30) as r:
            self.text = r.read().decode()
        self.samples = [s for f in text_string_to_metric_families(self.text) for s in f.samples]

    def get(self, name: str, **labels) -> float:
        """The one sample `name` whose labels include `labels` (0 if none)."""
        found = [s.value for s in self.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def has(self, name: str, **labels) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples)

    def names(self, prefix: str) -> set:
        return {s.name for s in self.samples if s.name.startswith(prefix)}


def scrape(server) -> Scrape:
    return Scrape(server)


def settled(server, name: str, at_least: float, **labels) -> Scrape:
    """A scrape once `name` reached `at_least`. The backend records an
    execution after its responses went out (as Triton's own statistics), so
    a client can hold its answer a moment before the counters move."""
    m = wait_for(lambda: (m := scrape(server)).get(name, **labels) >= at_least and m)
    return m or scrape(server)


def wait_for(cond, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    return cond()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A copy: the gate's release marker is written into its model directory.
    repo = copy_models(tmp_path_factory.mktemp("metrics") / "repo",
                       *sorted(p for p in METRICS_REPO.iterdir() if p.is_dir()))
    s = start_server(repo, name="metrics")
    s.repo = repo
    yield s
    s.stop()


GATE = dict(model="gate", version="1", model_instance="gate_0_0")
CRASHY = dict(model="crashy", version="1", model_instance="crashy_0_0")


def test_each_execution_is_counted_per_instance(server):
    before = scrape(server).get("rustpy_executions_total", **GATE)
    for i in range(3):
        r = infer(server, "http", "gate", {"X": np.array([[i]], np.int32)})
        assert r.as_numpy("Y")[0, 0] == 2 * i
    after = settled(server, "rustpy_executions_total", before + 3, **GATE)
    assert after.get("rustpy_executions_total", **GATE) - before == 3
    # Families next to Triton's own, on the same port.
    assert after.has("nv_inference_count_total", model="gate")


def _gate_figures(m: Scrape) -> dict:
    """The gate instance's execution figures in one scrape."""
    return {
        "executions": m.get("rustpy_executions_total", **GATE),
        "calls": m.get("rustpy_calls_total", **GATE),
        "rows_count": m.get("rustpy_call_rows_count", **GATE),
        "rows_sum": m.get("rustpy_call_rows_sum", **GATE),
        **{f"split_{r}": m.get("rustpy_batch_splits_total", reason=r, **GATE)
           for r in ("shape", "inputs", "parameters")},
        **{f"refused_{r}": m.get("rustpy_parameter_refusals_total", reason=r, **GATE)
           for r in ("unknown", "missing", "invalid")},
        **{f"phase_{p}": m.get("rustpy_phase_duration_seconds_count", phase=p, **GATE)
           for p in ("gather", "python", "scatter", "send")},
        "gil_wait": m.get("rustpy_gil_wait_seconds_count", **GATE),
    }


def test_a_batch_counts_its_calls_rows_parameter_splits_and_refusals(server):
    """One execution of six requests (made exact by the gate): three with
    tag a (1 + 2 + 1 rows), two with tag b (1 row each; the model splits
    calls by parameters), one with scale=99, which request_parameters.json
    refuses. Triton's batcher keeps shapes and input sets apart before
    rustpy sees them (crates/rustpy-core/tests/metrics_exec.rs counts those
    splits); parameters it cannot."""
    gate_dir = server.repo / "gate"
    before = _gate_figures(scrape(server))
    results, errors = {}, {}

    def send(key, rows, params):
        x = np.arange(rows, dtype=np.int32).reshape(rows, 1) + 1
        try:
            results[key] = (x, infer(server, "http", "gate", {"X": x}, parameters=params))
        except Exception as e:  # noqa: BLE001 - the refusal is checked below
            errors[key] = str(e)

    holder = threading.Thread(target=send, args=("hold", 1, {"hold": True}))
    holder.start()
    # The holding call runs: the next requests queue behind it.
    assert wait_for(lambda: (gate_dir / "holding").exists()), errors
    batch = [("a1", 1, {"tag": "a"}), ("a2", 2, {"tag": "a"}), ("a3", 1, {"tag": "a"}),
             ("b1", 1, {"tag": "b"}), ("b2", 1, {"tag": "b"}), ("bad", 1, {"scale": 99})]
    threads = [threading.Thread(target=send, args=b) for b in batch]
    for t in threads:
        t.start()
    queued = wait_for(lambda: scrape(server).get("nv_inference_pending_request_count",
                                                 model="gate") == len(batch))
    assert queued, scrape(server).text
    (gate_dir / "release").touch()
    for t in [holder, *threads]:
        t.join(120)
    assert sorted(errors) == ["bad"], errors
    assert "scale" in errors["bad"] and "gate" in errors["bad"], errors["bad"]
    for key, (x, r) in results.items():
        assert (r.as_numpy("Y") == x * 2).all(), key
    after = _gate_figures(settled(server, "rustpy_executions_total", before["executions"] + 2, **GATE))
    delta = {k: after[k] - before[k] for k in before}
    assert delta == {
        "executions": 2,
        # the holding call; then one call per tag
        "calls": 3,
        "rows_count": 3,
        "rows_sum": 1 + (1 + 2 + 1) + (1 + 1),
        "split_shape": 0, "split_inputs": 0, "split_parameters": 1,
        "refused_unknown": 0, "refused_missing": 0, "refused_invalid": 1,
        "phase_gather": 3, "phase_python": 3, "phase_scatter": 3, "phase_send": 3,
        "gil_wait": 3,
    }, delta
    # The holding call's time is user code's.
    m = scrape(server)
    python = m.get("rustpy_phase_duration_seconds_sum", phase="python", **GATE)
    gather = m.get("rustpy_phase_duration_seconds_sum", phase="gather", **GATE)
    assert python > gather, (python, gather)


def test_worker_killed_by_sigsegv_counts_one_restart_with_its_cause(server):
    x = lambda v: {"X": np.array([v], np.int32)}  # noqa: E731
    assert infer(server, "http", "crashy", x(4)).as_numpy("Y")[0] == 8
    before = settled(server, "rustpy_calls_total", 1, **CRASHY)
    assert before.get("rustpy_worker_up", **CRASHY) == 1
    assert before.get("rustpy_worker_restarts_total", cause="SIGSEGV", **CRASHY) == 0
    msg = infer_error(server, "http", "crashy", x(-11))
    assert "exited on SIGSEGV" in msg, msg
    # The worker was restarted before the failed request was answered.
    assert infer(server, "http", "crashy", x(5)).as_numpy("Y")[0] == 10
    after = settled(server, "rustpy_worker_resident_memory_bytes", 1, **CRASHY)
    assert after.get("rustpy_worker_restarts_total", cause="SIGSEGV", **CRASHY) == 1
    for cause in ("SIGABRT", "SIGKILL", "exit", "timeout"):
        assert after.get("rustpy_worker_restarts_total", cause=cause, **CRASHY) == 0, cause
    assert after.get("rustpy_worker_start_failures_total", **CRASHY) == 0
    assert after.get("rustpy_worker_up", **CRASHY) == 1
    # The new worker's memory, sampled after its first batch.
    assert after.get("rustpy_worker_resident_memory_bytes", **CRASHY) > 1 << 20
    # The regions are sparse: they hold the pages written (this batch's
    # input and output, a page each), far below their fixed size.
    for region in ("input", "output"):
        held = after.get("rustpy_worker_shared_memory_bytes", region=region, **CRASHY)
        assert 4096 <= held < 1 << 20, (region, held)
    # The worker counts its calls and sends them back with each batch; the
    # call that crashed died with its worker.
    assert after.get("rustpy_calls_total", **CRASHY) - before.get("rustpy_calls_total", **CRASHY) == 1
    assert after.get("rustpy_call_rows_sum", **CRASHY) - before.get("rustpy_call_rows_sum", **CRASHY) == 1
    # In-process instances have no worker series.
    assert not after.has("rustpy_worker_up", model="gate")


# ------------------------------------------------------------------ checkpoints

def _tgz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CK_MODEL = '''
import os
import numpy as np

class Model:
    def initialize(self, ctx):
        self.size = os.path.getsize(os.path.join(ctx.checkpoint_dir, "weights.bin"))

    def predict(self, inputs):
        return {"Y": np.array([self.size], np.int32)}
'''


def _ck_model(repo: Path, name: str, params: dict, count: int = 1):
    d = repo / name
    (d / "1").mkdir(parents=True)
    p = "\n".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}'
                  for k, v in params.items())
    (d / "config.pbtxt").write_text(f'''name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_INT32 dims: [ 1 ] }} ]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
{p}
''')
    (d / "1" / "model.py").write_text(CK_MODEL)


def test_checkpoint_download_then_cache_hits_count_once_each(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    weights = b"W" * 5000
    archive = _tgz({"weights.bin": weights, "vocab.txt": b"a\nb\n"})
    (files / "w.tar.gz").write_bytes(archive)
    static = StaticFiles(files)
    try:
        source = {"rustpy.checkpoint": f"{static.url}/w.tar.gz",
                  "rustpy.checkpoint.sha256": hashlib.sha256(archive).hexdigest()}
        repo = tmp_path / "repo"
        _ck_model(repo, "ck_a", source)
        _ck_model(repo, "ck_b", source)
        # Process-isolated, two workers: fetched once by the server, not per worker.
        _ck_model(repo, "ck_proc", {**source, "rustpy.isolation": "process"}, count=2)
        s = start_server(repo, name="metrics-checkpoints", model_control_mode="explicit",
                         wait_models=[], env={"RUSTPY_CACHE": str(tmp_path / "cache")})
        try:
            fetches = lambda m, r: scrape(s).get(  # noqa: E731
                "rustpy_checkpoint_fetches_total", model=m, version="1", source="https", result=r)
            for model, result in [("ck_a", "downloaded"), ("ck_b", "cache_hit"),
                                  ("ck_proc", "cache_hit")]:
                status, body = s.load_model(model)
                assert status == 200, (model, body)
                y = infer(s, "http", model, {"X": np.array([0], np.int32)}).as_numpy("Y")
                assert y[0] == len(weights), model
                assert fetches(model, result) == 1, (model, result)
            m = scrape(s)
            assert fetches("ck_a", "cache_hit") == 0 and fetches("ck_b", "downloaded") == 0
            assert fetches("ck_proc", "downloaded") == 0
            assert static.count("/w.tar.gz") == 1
            # The files put in the cache (the archive's two members).
            assert m.get("rustpy_checkpoint_fetch_bytes_total", model="ck_a") == len(weights) + 4
            assert m.get("rustpy_checkpoint_fetch_bytes_total", model="ck_b") == 0
            assert m.get("rustpy_checkpoint_fetch_seconds_total", model="ck_a") > 0
            # Kept after the model unloads: a fetch outlives the load it served.
            status, body = s.unload_model("ck_a")
            assert status == 200, body
            assert wait_for(lambda: not s.model_ready("ck_a"))
            assert fetches("ck_a", "downloaded") == 1
        finally:
            s.stop()
    finally:
        static.stop()


# ------------------------------------------------------------------ the switch

def test_metrics_false_publishes_no_rustpy_family(tmp_path):
    s = start_server(METRICS_REPO, name="metrics-off",
                     extra_args=["--backend-config=rustpy,metrics=false"])
    try:
        for i in range(2):
            infer(s, "http", "gate", {"X": np.array([[i]], np.int32)})
        infer(s, "http", "crashy", {"X": np.array([1], np.int32)})
        m = scrape(s)
        assert m.names("rustpy_") == set(), sorted(m.names("rustpy_"))
        assert "rustpy_" not in m.text
        # Triton's own metrics are still there.
        assert m.get("nv_inference_count_total", model="gate", version="1") == 2
        assert "metrics off" in s.log_text()
    finally:
        s.stop()


def test_a_bad_metrics_setting_fails_the_backend_with_the_reason(tmp_path):
    assert_setting_refused(METRICS_REPO, "gate", "metrics=maybe",
                           "metrics=maybe: expected true or false")
