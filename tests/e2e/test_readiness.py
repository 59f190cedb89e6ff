"""A model's own is_ready() (python_backend r26.03) and instance readiness.

Servers from 2.64 ask the backend through TRITONBACKEND_ModelInstanceReady;
the 2.51 server these tests run does not, so rustpy makes readiness
observable on every server with its readiness probe and the
`rustpy_model_instance_ready` gauge on the metrics endpoint. Both paths share
one implementation (src/readiness.rs over rustpy_core::readiness), which
these tests drive through the probe: the model's answers (True, False, an
exception, a non-bool, a coroutine), the timeout, at most one call in
flight, a dead worker in process mode, in-process and process-isolated.
"""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from e2e_client import PROTOCOLS, infer
from tritonharness import rustpy_backend_lib

CONFIG = """name: "{name}"
backend: "rustpy"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "INFO" data_type: TYPE_STRING dims: [ 1 ] }} ]
{extra}
"""

MODEL = '''
import asyncio, json, threading, time
import numpy as np
import triton_python_backend_utils as pb_utils

ANSWER = {answer!r}
SLEEP = {sleep!r}

class TritonPythonModel:
    def initialize(self, args):
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0

    def execute(self, requests):
        with self.lock:
            info = json.dumps({{"calls": self.calls, "most": self.most}})
        return [pb_utils.InferenceResponse([
            pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()),
            pb_utils.Tensor("INFO", np.array([info.encode()], dtype=np.object_))])
            for r in requests]

{is_ready}
'''

SYNC = '''    def is_ready(self):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(SLEEP)
            if ANSWER == "raise":
                raise RuntimeError("the cache is cold")
            if ANSWER == "string":
                return "ready"
            return ANSWER
        finally:
            with self.lock:
                self.running -= 1
'''

ASYNC = '''    async def is_ready(self):
        with self.lock:
            self.calls += 1
        await asyncio.sleep(SLEEP)
        return ANSWER
'''

GAUGE = re.compile(r'^rustpy_model_instance_ready\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def add_model(repo, name, answer=True, sleep=0.0, kind="sync", extra=""):
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(CONFIG.format(name=name, extra=extra))
    body = {"sync": SYNC, "async": ASYNC, "none": ""}[kind]
    (d / "1" / "model.py").write_text(MODEL.format(answer=answer, sleep=sleep, is_ready=body))


def gauges(server):
    with urllib.request.urlopen(server.metrics_url, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for m in GAUGE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        out[labels["model"]] = float(m.group("value"))
    return out


def wait_gauges(server, want, timeout=60.0):
    """Waits until every model in `want` shows its value; returns the last scrape."""
    deadline = time.time() + timeout
    seen = {}
    while time.time() < deadline:
        try:
            seen = gauges(server)
        except urllib.error.URLError:
            # The metrics endpoint starts just after the server reports ready.
            time.sleep(0.1)
            continue
        if all(seen.get(m) == v for m, v in want.items()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"readiness gauges {seen} never reached {want}")


def info(server, model, protocol="http"):
    out = infer(server, protocol, model, {"IN": np.array([1.5], dtype=np.float32)})
    assert out.as_numpy("OUT").tolist() == [1.5]
    return json.loads(out.as_numpy("INFO")[0])


ISOLATION = {"in_process": "", "process": 'parameters { key: "rustpy.isolation" value { string_value: "process" } }'}


@pytest.mark.parametrize("mode", list(ISOLATION))
def test_is_ready_answers_reach_the_readiness_gauge(tmp_path, triton_factory, mode):
    repo = tmp_path / "repo"
    extra = ISOLATION[mode]
    add_model(repo, "says_yes", True, extra=extra)
    add_model(repo, "says_no", False, extra=extra)
    add_model(repo, "raises", "raise", extra=extra)
    add_model(repo, "not_a_bool", "string", extra=extra)
    add_model(repo, "coroutine_yes", True, 0.05, kind="async", extra=extra)
    add_model(repo, "coroutine_no", False, 0.05, kind="async", extra=extra)
    add_model(repo, "no_is_ready", kind="none", extra=extra)
    s = triton_factory(repo, extra_args=[
        "--backend-config=rustpy,readiness-probe-interval-ms=100"])
    seen = wait_gauges(s, {"says_yes": 1, "says_no": 0, "raises": 0, "not_a_bool": 0,
                           "coroutine_yes": 1, "coroutine_no": 0})
    if mode == "in_process":
        # Nothing to watch: no is_ready(), no worker.
        assert "no_is_ready" not in seen
    else:
        assert seen["no_is_ready"] == 1  # its worker is alive
    # Not ready is no reason to refuse inference (as upstream), over both protocols.
    for model in ("says_yes", "says_no", "raises", "not_a_bool", "coroutine_yes", "no_is_ready"):
        for protocol in PROTOCOLS:
            assert info(s, model, protocol)["calls"] >= (0 if model == "no_is_ready" else 1)
    # The model's own is_ready() ran (the probe asked it, not a default).
    assert info(s, "says_no")["calls"] >= 1


@pytest.mark.parametrize("mode", list(ISOLATION))
def test_one_call_in_flight_and_a_timeout(tmp_path, triton_factory, mode):
    """is_ready() slower than the timeout: every check times out (not ready),
    the probe keeps asking, but never starts a second call while one runs."""
    repo = tmp_path / "repo"
    add_model(repo, "slow", True, sleep=1.0, extra=ISOLATION[mode])
    add_model(repo, "stuck", True, sleep=3600.0, extra=ISOLATION[mode])
    s = triton_factory(repo, extra_args=[
        "--backend-config=rustpy,readiness-probe-interval-ms=50",
        "--backend-config=rustpy,readiness-timeout-ms=200"])
    wait_gauges(s, {"slow": 0, "stuck": 0})
    deadline = time.time() + 60
    while info(s, "slow")["calls"] < 3:
        assert time.time() < deadline, "the probe stopped asking"
        time.sleep(0.2)
    slow, stuck = info(s, "slow"), info(s, "stuck")
    assert slow["most"] == 1, slow
    # Probed every 50 ms for seconds, yet the stuck call is the only one.
    time.sleep(1.0)
    stuck = info(s, "stuck")
    assert stuck == {"calls": 1, "most": 1}, stuck
    assert gauges(s)["stuck"] == 0


def test_a_dead_worker_is_not_ready(tmp_path, triton_factory):
    repo = tmp_path / "repo"
    add_model(repo, "victim", kind="none", extra=ISOLATION["process"])
    s = triton_factory(repo, extra_args=[
        "--backend-config=rustpy,readiness-probe-interval-ms=100"])
    wait_gauges(s, {"victim": 1})
    found = re.search(r"model 'victim' instance '(victim[\w]*)' runs in worker process (\d+)",
                      s.log_text())
    instance, pid = found.group(1), int(found.group(2))
    os.kill(pid, signal.SIGKILL)
    wait_gauges(s, {"victim": 0})
    # Upstream's words, in the server log once (the gauge says it on every scrape).
    assert s.wait_for_log(
        f"instance '{instance}' is not ready: Stub process '{instance}' is not healthy.")
    # The next request restarts the worker; the gauge follows.
    info(s, "victim")
    wait_gauges(s, {"victim": 1})


def test_the_library_exports_the_instance_readiness_entry_point():
    """Servers from 2.64 look TRITONBACKEND_ModelInstanceReady up by name
    (an optional symbol): it must be exported, next to the mandatory ones."""
    out = subprocess.run(["nm", "-D", "--defined-only", str(rustpy_backend_lib())],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    for name in ("TRITONBACKEND_ModelInstanceExecute", "TRITONBACKEND_ModelInstanceReady"):
        assert name in exported, name


SLOW_EXECUTE = """
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(5)
        return [pb_utils.InferenceResponse(
            [pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests]

    def is_ready(self):
        return True
"""


def test_is_ready_is_answered_while_a_long_batch_runs_in_the_worker(tmp_path, triton_factory):
    """Process mode: the worker of a model with is_ready() keeps reading its
    control socket while execute runs, so readiness does not wait for (and
    time out behind) a long batch."""
    repo = tmp_path / "repo"
    d = repo / "slow"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(CONFIG.format(name="slow", extra=ISOLATION["process"])
                                    .replace('output [ { name: "INFO" data_type: TYPE_STRING dims: [ 1 ] } ]', ""))
    (d / "1" / "model.py").write_text(SLOW_EXECUTE)
    s = triton_factory(repo, extra_args=[
        "--backend-config=rustpy,readiness-probe-interval-ms=100",
        "--backend-config=rustpy,readiness-timeout-ms=2000"])
    wait_gauges(s, {"slow": 1})
    out = infer(s, "http", "slow", {"IN": np.array([1.0], dtype=np.float32)})
    assert out.as_numpy("OUT").tolist() == [1.0]
    # Probed ~50 times during the 5 s batch: never timed out.
    assert "is not ready" not in s.log_text(), s.log_tail()
    assert gauges(s)["slow"] == 1

