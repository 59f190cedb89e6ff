"""`rustpy top` against a served repository (docs/metrics.md, "rustpy top"):
`--json` returns every model with its figures after known traffic, against
`rustpy serve` (which turns on Triton's latency summaries: p50/p99) and
against a tritonserver started any other way (no summaries: p50/p99 null);
on a terminal the view is redrawn in place; errors exit with their codes.

Models: tests/e2e/repos/metrics (README there).
"""
import json
import os
import pty
import select
import signal
import subprocess
import time

import numpy as np
import pytest

from e2e_client import infer, infer_error
from reliability import copy_models, start_server
from test_metrics import METRICS_REPO
from tritonharness import clean_env, rustpy_backend_lib, tritonserver_binary


def cli() -> str:
    exe = os.environ.get("RUSTPY_CLI") or str(rustpy_backend_lib().parent / "rustpy")
    assert os.path.isfile(exe), f"{exe} missing: cargo build --release -p rustpy-cli"
    return exe


def top(*args, check=0, timeout=120):
    r = subprocess.run([cli(), "top", *args], capture_output=True, text=True,
                       timeout=timeout, env=clean_env())
    assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def snapshot(url, metrics_url, **kw) -> dict:
    out = top("--url", url, "--metrics-url", metrics_url, "--json", "--interval", "0.5", **kw)
    return json.loads(out.stdout)


def by_name(snap: dict) -> dict:
    return {m["name"]: m for m in snap["models"]}


def until(url, metrics_url, ready, timeout=90.0) -> dict:
    """A snapshot once ready(models by name) holds (Triton's statistics and
    rustpy's counters move just after the client has its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot(url, metrics_url)
        if ready(by_name(snap)) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


class Served:
    """`rustpy serve REPO --json` in the background."""

    def __init__(self, repo):
        env = clean_env({"TRITONSERVER": str(tritonserver_binary()),
                         "RUSTPY_BACKEND_LIB": str(rustpy_backend_lib())})
        self.proc = subprocess.Popen([cli(), "serve", str(repo), "--json", "-q"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        ready = json.loads(line)
        self.url = ready["endpoints"]["http"]
        self.metrics_url = ready["endpoints"]["metrics"]
        self.http_url = self.url.removeprefix("http://")

    def http_client(self):
        import tritonclient.http as httpclient
        return httpclient.InferenceServerClient(self.http_url, network_timeout=120.0)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = copy_models(tmp_path_factory.mktemp("top") / "repo",
                       *sorted(p for p in METRICS_REPO.iterdir() if p.is_dir()))
    s = Served(repo)
    yield s
    s.stop()


def test_json_snapshot_of_a_served_repository(served):
    c = served.http_client()
    for i in range(5):
        assert infer(c, "http", "gate", {"X": np.array([[i]], np.int32)}).as_numpy("Y")[0, 0] == 2 * i
    for i in range(3):
        infer(c, "http", "crashy", {"X": np.array([i], np.int32)})
    assert "SIGSEGV" in infer_error(c, "http", "crashy", {"X": np.array([-11], np.int32)})
    infer(c, "http", "crashy", {"X": np.array([1], np.int32)})
    c.close()

    snap = until(served.url, served.metrics_url, lambda m: (
        m["gate"]["requests_total"] == 5 and m["crashy"]["requests_total"] == 5
        and m["gate"]["rustpy"]["executions_total"] == 5))
    assert snap["url"] == served.url and snap["metrics_url"] == served.metrics_url
    assert snap["latency_quantiles"] is True
    models = by_name(snap)
    assert set(models) == {"gate", "crashy"}
    gate, crashy = models["gate"], models["crashy"]
    for m in (gate, crashy):
        assert m["version"] == "1" and m["state"] == "READY", m
        # rustpy serve turns Triton's summaries on: quantiles over its window.
        assert m["p50_ms"] is not None and m["p99_ms"] >= m["p50_ms"] > 0, m
    assert gate["requests_total"] == 5
    assert gate["rustpy"]["executions_total"] == 5
    assert gate["rustpy"]["workers"] is None
    assert crashy["requests_total"] == 5  # 4 answered, 1 failed
    w = crashy["rustpy"]["workers"]
    assert (w["up"], w["total"], w["restarts"]) == (1, 1, 1), w
    assert w["restarts_by_cause"] == {"SIGSEGV": 1}
    assert w["resident_bytes"] > 1 << 20


def test_requests_per_second_over_the_interval(served):
    stop = time.monotonic() + 6
    sent = 0

    def load():
        nonlocal sent
        c = served.http_client()
        while time.monotonic() < stop:
            infer(c, "http", "gate", {"X": np.array([[1]], np.int32)})
            sent += 1
        c.close()

    import threading
    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(1)
        snap = top("--url", served.url, "--metrics-url", served.metrics_url, "--json",
                   "--interval", "2", "--model", "gate")
    finally:
        t.join()
    models = json.loads(snap.stdout)["models"]
    assert [m["name"] for m in models] == ["gate"]
    # Requests answered during the interval: some, never more than were sent.
    rate = models[0]["requests_per_s"]
    assert rate is not None and 0 < rate * 2 <= sent + 1, (rate, sent)
    assert models[0]["mean_ms"] > 0


def test_any_tritonserver_url(tmp_path):
    s = start_server(METRICS_REPO, name="top-plain")
    try:
        infer(s, "http", "gate", {"X": np.array([[1]], np.int32)})
        snap = until(f"http://{s.http_url}", s.metrics_url,
                     lambda m: m["gate"]["requests_total"] == 1)
        assert snap["latency_quantiles"] is False
        gate = by_name(snap)["gate"]
        assert gate["state"] == "READY" and gate["requests_total"] == 1
        assert gate["p50_ms"] is None and gate["p99_ms"] is None
        assert gate["rustpy"]["executions_total"] == 1
    finally:
        s.stop()


def test_redrawn_in_place_on_a_terminal(served):
    """Two frames on a pseudo-terminal: each starts by homing the cursor and
    clearing the screen."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(cli(), [cli(), "top", "--url", served.url, "--metrics-url",
                          served.metrics_url, "--interval", "0.3", "--count", "2"], clean_env())
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert text.count("\x1b[H\x1b[2J") == 2, text
    frame = text.split("\x1b[H\x1b[2J")[-1]
    assert "MODEL" in frame and "REQ/S" in frame and "gate" in frame and "crashy" in frame


def test_errors_have_their_exit_codes(served):
    r = top("--url", "http://127.0.0.1:1", "--json", check=4)
    assert "cannot reach tritonserver at http://127.0.0.1:1" in r.stderr
    r = top("--url", served.url, "--metrics-url", served.metrics_url, "--json",
            "--model", "nope", check=2)
    assert "--model nope: the server has no such model" in r.stderr
    top("--url", "https://127.0.0.1:1", "--json", check=2)
