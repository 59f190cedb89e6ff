"""Triton's own perf_analyzer as a bench driver, in its three modes.

    pa_capi   perf_analyzer --service-kind=triton_c_api: the server runs inside
              perf_analyzer's process (it opens <triton>/lib/libtritonserver.so
              itself, without making its symbols global), no network
    pa_grpc   perf_analyzer -i grpc against a tritonserver process on loopback
    pa_http   perf_analyzer -i http against a tritonserver process on loopback

perf_analyzer comes from the tritonclient 2.41.0 wheel's bin/ (the last wheel
that ships it); ci/install.sh puts it, with the libcudart.so.12 it links, in
$RUSTPY_DEPS/perf_analyzer/ (PERF_ANALYZER overrides the path of its wrapper).

Each run is one perf_analyzer process: --concurrency-range C, measurement
windows of duration/3 (perf_analyzer needs three windows within
--stability-percentage of each other, so a stable run measures about
`duration`), its CSV report (-f) for throughput and percentiles, and its
printed server-side counts for the batch sizes the dynamic batcher formed.
C API mode starts a server per run on a repository holding only the model
measured (perf_analyzer loads every model of the repository it is given).

perf_analyzer does not check answers here: its --input-data "validation_data"
is ignored over gRPC/HTTP by 2.41.0 and fails every request in C API mode
(even the official backend's, "Output size doesn't match expected size").
bench.py's own drivers check every response of the same models; this driver
checks that every request succeeded (perf_analyzer exits non-zero otherwise).

To add a workload: write a function returning perf_analyzer's --input-data
JSON for one request size (see the ones below) and add it to INPUTS.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
from pathlib import Path

from tritonharness import clean_env, deps_dir, make_triton_install, tritonserver_private_libs

MODES = {"pa_capi": "triton_c_api", "pa_grpc": "grpc", "pa_http": "http"}
LABELS = {
    "pa_capi": "perf_analyzer C API mode (server inside perf_analyzer, no network)",
    "pa_grpc": "perf_analyzer over gRPC (loopback)",
    "pa_http": "perf_analyzer over HTTP (loopback)",
}
# Lenient: on a shared 2-core machine three windows within 10% (the default)
# are often out of reach, and perf_analyzer then reports nothing at all. A run
# that misses even this is repeated accepting any three windows, and marked.
STABILITY_PERCENT = 50
ANY_WINDOWS_PERCENT = 10_000
MAX_TRIALS = 10
UNSTABLE = "Failed to obtain stable measurement"


def perf_analyzer_path() -> Path:
    exe = os.environ.get("PERF_ANALYZER")
    return Path(exe) if exe else deps_dir() / "perf_analyzer" / "perf_analyzer"


# ----------------------------------------------------------------- workloads
# Each returns perf_analyzer's --input-data JSON: a pool of requests that
# perf_analyzer's threads send in turn (one entry = one request of batch 1).

def _floats(values):
    return [float(v) for v in values]


def add_sub_inputs(size):
    return {"data": [{"INPUT0": _floats((s + i) % 17 - 8 for i in range(4)),
                      "INPUT1": _floats((3 * s + i) % 13 - 6 for i in range(4))} for s in range(16)]}


def identity_inputs(size):
    size = size or 1 << 20
    return {"data": [{"INPUT0": {"b64": base64.b64encode(bytes([(s * 31 + 7) % 256]) * size).decode(),
                                 "shape": [size]}} for s in range(2)]}


WORDS = ("Triton serves models from Python and Rust in one process batching requests numpy "
         "arrays tokens are hashed into a vocabulary of 4096 entries quickly").split()


def text(s: int) -> str:
    """Sentence number s: 8 to 39 words (rustpy-bench's embed::text)."""
    n = 8 + (s * 13) % 32
    out = []
    for k in range(n):
        if k:
            out.append(", " if k % 7 == 0 else " ")
        out.append(WORDS[(s * 5 + k * 11 + k * k) % len(WORDS)])
    return "".join(out) + "."


def text_inputs(size):
    return {"data": [{"TEXT": [text(s)]} for s in range(64)]}


def mlp_inputs(size):
    return {"data": [{"INPUT": _floats((((i * (2 * s + 1) + 7 * s) % 101) - 50) / 64 for i in range(512))}
                     for s in range(16)]}


def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def ragged_tokens(s: int) -> list:
    """Request number s of the ragged pool (rustpy-bench's ragged::tokens)."""
    st = 0x005EED12 ^ ((s * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF)
    st, r = _splitmix(st)
    n = 8 + r % (128 - 8 + 1)
    out = []
    for _ in range(n):
        st, r = _splitmix(st)
        out.append(r % 1024)
    return out


def ragged_inputs(size):
    data = []
    for s in range(64):
        t = ragged_tokens(s)
        data.append({"TOKENS": {"content": t, "shape": [len(t)]}})
    return {"data": data}


INPUTS = {
    "add_sub": add_sub_inputs,
    "identity": identity_inputs,
    "upper": text_inputs,
    "embed": text_inputs,
    "pycpu_count1": text_inputs,
    "pycpu_count2": text_inputs,
    "mlp": mlp_inputs,
    "ragged": ragged_inputs,
}


def request_bytes(data: dict) -> float:
    """Mean input bytes of one request of the pool (for MiB/s)."""
    total = 0
    for entry in data["data"]:
        for v in entry.values():
            if isinstance(v, dict) and "b64" in v:
                total += len(base64.b64decode(v["b64"]))
            elif isinstance(v, dict):
                total += 4 * len(v["content"])
            elif v and isinstance(v[0], str):
                total += sum(len(x.encode()) + 4 for x in v)
            else:
                total += 4 * len(v)
    return total / max(1, len(data["data"]))


# -------------------------------------------------------------------- output
_COUNT = {
    "client_requests": re.compile(r"Client:\s*\n\s*Request count:\s*(\d+)"),
    "inferences": re.compile(r"Server:\s*\n\s*Inference count:\s*(\d+)"),
    "executions": re.compile(r"Execution count:\s*(\d+)"),
    "successes": re.compile(r"Successful request count:\s*(\d+)"),
}


def parse_report(stdout: str, csv_text: str) -> dict:
    """perf_analyzer's CSV row (the one concurrency measured) and the server
    counts it printed, as {throughput_rps, latency_us: {p50, p90, p95, p99},
    server_us: {...}, client_requests, inferences, executions, successes}."""
    rows = list(csv.DictReader(csv_text.splitlines()))
    if not rows:
        raise ValueError("perf_analyzer wrote no CSV row")
    row = rows[-1]
    out = {
        "throughput_rps": float(row["Inferences/Second"]),
        "latency_us": {p: float(row[f"{p} latency"]) for p in ("p50", "p90", "p95", "p99")},
        "server_us": {k: float(row[c]) for k, c in (
            ("queue", "Server Queue"), ("compute_input", "Server Compute Input"),
            ("compute_infer", "Server Compute Infer"), ("compute_output", "Server Compute Output"))
            if c in row},
    }
    for k, rx in _COUNT.items():
        # The last match: with several windows, the report of the stable ones.
        found = rx.findall(stdout)
        out[k] = int(found[-1]) if found else None
    return out


# -------------------------------------------------------------------- runner
class PerfAnalyzer:
    """Runs perf_analyzer in one mode ("triton_c_api", "grpc" or "http") with
    its files in `workdir`. C API mode serves `models_dir`'s models from a
    Triton install's layout under workdir (make_triton_install), one model per
    run."""

    def __init__(self, kind: str, workdir: Path, models_dir: Path, env: dict | None = None):
        self.kind = kind
        self.workdir = Path(workdir)
        self.models_dir = Path(models_dir)
        self.extra_env = dict(env or {})
        self.exe = perf_analyzer_path()
        self._install: Path | None = None

    def env(self) -> dict:
        env = clean_env(self.extra_env)
        if self.kind == "triton_c_api":
            # The wheel's libtritonserver finds its own dependencies only on the
            # library path (the tritonserver binary's RPATH does it otherwise).
            # Nothing is preloaded: backends resolve the server API through
            # their own needed libtritonserver.so.
            env["LD_LIBRARY_PATH"] = str(tritonserver_private_libs())
        return env

    @property
    def install(self) -> Path:
        if self._install is None:
            self._install = make_triton_install(self.workdir / "triton")
        return self._install

    def version(self) -> str | None:
        p = subprocess.run([str(self.exe), "--version"], capture_output=True, text=True,
                           env=self.env(), timeout=60)
        return p.stdout.strip() or None

    def repository(self, model: str) -> Path:
        """C API mode: a repository holding only `model` (a symlink), since
        perf_analyzer loads every model of the repository it is given."""
        repo = self.workdir / "repos" / model
        if not repo.is_dir():
            repo.mkdir(parents=True)
            os.symlink(self.models_dir / model, repo / model, target_is_directory=True)
        return repo

    def command(self, model, conc, window_ms, data_file, csv_file, url=None,
                stability=STABILITY_PERCENT) -> list:
        cmd = [str(self.exe), "-m", model, "--concurrency-range", str(conc),
               "--measurement-interval", str(window_ms),
               "--stability-percentage", str(stability), "--max-trials", str(MAX_TRIALS),
               "--input-data", str(data_file), "-f", str(csv_file)]
        if self.kind == "triton_c_api":
            cmd += ["--service-kind=triton_c_api", f"--triton-server-directory={self.install}",
                    f"--model-repository={self.repository(model)}"]
        else:
            cmd += ["-i", self.kind, "-u", url]
        return cmd

    def run(self, model: str, workload: str, size, conc: int, duration: float,
            url: str | None = None, label: str = "run") -> tuple:
        """One measurement of `workload` (INPUTS) at `size`: (exit code,
        stdout + stderr, parsed report or None). Windows of duration/3: three
        stable windows make a measurement, the ones before (not yet stable)
        are the warm-up. If no three windows agree within STABILITY_PERCENT,
        measures again taking the first three (report["unstable"] = True)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        data_file = self.workdir / f"input-{workload}-{size or 0}.json"
        if not data_file.exists():
            data_file.write_text(json.dumps(INPUTS[workload](size)))
        csv_file = self.workdir / f"{stem}.csv"
        csv_file.unlink(missing_ok=True)
        window_ms = max(200, int(duration * 1000 / 3))
        timeout = 180 + 2 * (MAX_TRIALS + 1) * window_ms / 1000
        unstable = False
        for stability in (STABILITY_PERCENT, ANY_WINDOWS_PERCENT):
            p = subprocess.run(self.command(model, conc, window_ms, data_file, csv_file, url, stability),
                               capture_output=True, text=True, env=self.env(), cwd=self.workdir,
                               timeout=timeout)
            log = p.stdout + p.stderr
            if p.returncode == 0 or UNSTABLE not in log:
                break
            unstable = True
        report = None
        if p.returncode == 0 and csv_file.exists():
            report = parse_report(p.stdout, csv_file.read_text())
            report["request_bytes"] = request_bytes(json.loads(data_file.read_text()))
            report["unstable"] = unstable
        return p.returncode, log, report


def failure_summary(log: str) -> str:
    """perf_analyzer's own error lines (the server's I/W log lines dropped)."""
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(("I1", "W1"))]
    return "\n".join(lines)[-1500:]
