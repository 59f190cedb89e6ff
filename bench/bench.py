"""rustpy vs Triton's official Python backend, side by side in one server.

Run through ci/bench (which installs, builds and then runs this with the
client venv's Python); directly it is:

    .rustpy-deps/venv/bin/python bench/bench.py [--quick] [--duration S] [--repeat N]
        [--drivers inproc,http] [--workloads add_sub,identity,upper,mlp,embed,ragged]
        [--variants python,python_batched,rustpy_compat,rustpy,native,rustpy_split]
        [--loadgen PATH] [--inproc PATH] [--out DIR] [--compare OLD/results.json]

    bench/bench.py --compare OLD/results.json --against NEW/results.json   (no run)

bench/models/ holds every workload as up to five models with identical configs:

    <w>_python          backend "python", TritonPythonModel (pb_utils), one request at a time
    <w>_python_batched  backend "python", the same API, requests concatenated in user code (mlp)
    <w>_rustpy_compat   backend "rustpy", the TritonPythonModel file of <w>_python (a symlink to it:
                        the same bytes, one source)
    <w>_rustpy          backend "rustpy", rustpy's batched API (class Model)
    <w>_native          backend "rustpy", rustpy.native=echo: no Python at all (where in == out)
    <w>_rustpy_split    backend "rustpy", the batched API without allow_ragged_batch/batch_input
                        (ragged: requests split per shape, the behaviour before issue 12)

Two drivers measure them: `inproc` (rustpy-inproc: Triton's in-process C API,
TRITONSERVER_ServerInferAsync, no network: what each backend costs per
request) and `http` (rustpy-loadgen against a tritonserver process: what a
client on this machine sees). Each (driver, workload, size, concurrency,
variant) point is measured --repeat times, interleaving the variants; the
batch sizes the dynamic batcher formed come from the model statistics.
Results: bench-results/<timestamp>/{results.json, runs.jsonl, table.md,
bench.png, tritonserver-{http,grpc}.log, inproc-server.log}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bench" / "models"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from tritonharness import (TritonServer, TritonStartError, clean_env, make_triton_install,  # noqa: E402
                           rustpy_backend_lib, tritonserver_private_libs)
import perf_analyzer  # noqa: E402  (bench/perf_analyzer.py)

MiB = 1 << 20

VARIANTS = ["python", "python_batched", "rustpy_compat", "rustpy", "native",
            "rustpy_compat_process", "rustpy_process", "rustpy_split"]
VARIANT_LABEL = {
    "python": "python (official backend)",
    "python_batched": "python hand-batched (official backend)",
    "rustpy_compat": "rustpy compat (same file)",
    "rustpy": "rustpy batched API",
    "native": "native echo (ceiling)",
    "rustpy_compat_process": "rustpy compat, process-isolated",
    "rustpy_process": "rustpy batched API, process-isolated",
    "rustpy_split": "rustpy batched API, split per shape (no ragged batching)",
}
DRIVERS = ["inproc", "grpc", "http"]
# Triton's own perf_analyzer (bench/perf_analyzer.py): opt in with --drivers.
PA_DRIVERS = list(perf_analyzer.MODES)
DRIVER_LABEL = {
    "inproc": "in-process C API (rustpy-inproc, no network)",
    "grpc": "gRPC over loopback (rustpy-loadgen --protocol grpc, tonic)",
    "http": "HTTP/1.1 over loopback (rustpy-loadgen)",
    **perf_analyzer.LABELS,
}

# workload -> (description, [(payload bytes or None, [concurrency, ...])], variants it has)
# Process-isolation variants (<w>_rustpy_process, <w>_rustpy_compat_process)
# exist for add_sub, identity and upper. The ragged workload (issue 12) has
# rustpy_split: the rustpy model without allow_ragged_batch/batch_input.
WORKLOADS = {
    "add_sub": ("small tensors: FP32[4] add/sub", [(None, [1, 8, 32])],
                ["python", "rustpy_compat", "rustpy", "native", "rustpy_compat_process", "rustpy_process"]),
    "identity": ("large tensors: UINT8 identity", [(1 * MiB, [1, 4]), (16 * MiB, [1, 4])],
                 ["python", "rustpy_compat", "rustpy", "native", "rustpy_compat_process", "rustpy_process"]),
    "upper": ("BYTES: upper-case one string", [(None, [8])],
              ["python", "rustpy_compat", "rustpy", "native", "rustpy_compat_process", "rustpy_process"]),
    "mlp": ("MLP: FP32[512] → dense 1024 + ReLU → dense 128 (numpy)", [(None, [1, 8, 32])],
            ["python", "python_batched", "rustpy_compat", "rustpy"]),
    "embed": ("text embedding: BYTES → pure-Python tokenizer → FP32[64]", [(None, [1, 32])],
              ["python", "rustpy_compat", "rustpy"]),
    # Issue 11's first target: pure-Python CPU work (~10 ms a request, GIL held),
    # the same TritonPythonModel file with count 1 and count 2 (process mode vs
    # in-process vs the official backend); rustpy-loadgen sends the embed workload.
    "pycpu_count1": ("pure-Python CPU work (embed × 1000 tokenizer rounds), instance count 1",
                     [(None, [4])], ["python", "rustpy_compat", "rustpy_compat_process"]),
    "pycpu_count2": ("pure-Python CPU work (embed × 1000 tokenizer rounds), instance count 2",
                     [(None, [4])], ["python", "rustpy_compat", "rustpy_compat_process"]),
    "ragged": ("variable-length token ids: INT32[n], n uniform 8..128 → mean embedding FP32[16]",
               [(None, [8, 32])], ["python", "rustpy_split", "rustpy"]),
    # Issue 24: real frameworks. A Hugging Face tokenizer + an onnxruntime session
    # (bench/models/textcls_python/1/textcls_build.py builds both in code), from
    # ci/install.sh's serving-site (SERVING_SITE below).
    "textcls": ("text classifier: BYTES → HF tokenizers (WordLevel) → onnxruntime (embedding, mean "
                "pool, linear, softmax) → FP32[4]", [(None, [1, 16])],
                ["python", "rustpy_compat", "rustpy", "rustpy_process"]),
}
# Workloads whose requests and checks are another workload's (rustpy-loadgen --workload).
LOADGEN_WORKLOAD = {"pycpu_count1": "embed", "pycpu_count2": "embed"}


def set_concurrency(levels) -> None:
    """Measures every workload at `levels` (--concurrency) instead of its own."""
    levels = list(levels)
    for w, (desc, sizes, variants) in list(WORKLOADS.items()):
        WORKLOADS[w] = (desc, [(size, list(levels)) for size, _ in sizes], variants)


def workload_variants(w, variants):
    return [v for v in variants if v in WORKLOADS[w][2]]

# Lines of a config that may differ between the variants of one workload.
_VARIANT_LINE = re.compile(r'^\s*(#.*|name\s*:.*|backend\s*:.*|parameters\s*\{\s*key:\s*"rustpy\.(native|isolation|threads)".*)$')
# ... and, for rustpy_split, what makes a batch ragged.
_RAGGED_LINE = re.compile(r'^\s*batch_input\s*\[.*$')
_RAGGED_FLAG = re.compile(r'\s*allow_ragged_batch\s*:\s*true')


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- preflight
def check_repository(workloads, variants) -> list[str]:
    """The same model code and the same config across variants."""
    problems = []
    for w in workloads:
        ref = MODELS / f"{w}_python" / "1" / "model.py"
        for compat_variant in ("rustpy_compat", "rustpy_compat_process"):
            if compat_variant not in WORKLOADS[w][2]:
                continue
            compat = MODELS / f"{w}_{compat_variant}" / "1" / "model.py"
            if ref.is_file() and compat.is_file():
                if hashlib.sha256(ref.read_bytes()).digest() != hashlib.sha256(compat.read_bytes()).digest():
                    problems.append(f"{compat.relative_to(ROOT)} differs from {ref.relative_to(ROOT)} "
                                    "(the compat variants must run the same file)")
            else:
                problems.append(f"missing {ref.relative_to(ROOT)} or {compat.relative_to(ROOT)}")
        configs = {}
        for v in WORKLOADS[w][2]:
            cfg = MODELS / f"{w}_{v}" / "config.pbtxt"
            if not cfg.is_file():
                problems.append(f"missing {cfg.relative_to(ROOT)}")
                continue
            text = cfg.read_text()
            if f'name: "{w}_{v}"' not in text:
                problems.append(f"{cfg.relative_to(ROOT)}: name is not {w}_{v}")
            configs[v] = [ln.strip() for ln in text.splitlines()
                          if ln.strip() and not _VARIANT_LINE.match(ln)]
            if v in ("rustpy", "rustpy_split") and "rustpy_split" in WORKLOADS[w][2]:
                configs[v] = [_RAGGED_FLAG.sub("", ln) for ln in configs[v] if not _RAGGED_LINE.match(ln)]
            elif v == "python" and "rustpy_split" in WORKLOADS[w][2]:
                configs[v] = [_RAGGED_FLAG.sub("", ln) for ln in configs[v]]
        base = configs.get("python")
        for v, lines in configs.items():
            if base is not None and lines != base:
                problems.append(f"bench/models/{w}_{v}/config.pbtxt differs from {w}_python's "
                                "beyond name/backend/rustpy.native/rustpy.isolation/rustpy.threads"
                                + (" and allow_ragged_batch/batch_input" if "rustpy_split" in WORKLOADS[w][2] else ""))
    return problems


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "os": platform.platform(),
        "virtualized": Path("/proc/cpuinfo").exists() and "hypervisor" in Path("/proc/cpuinfo").read_text(),
        "loadavg_start": os.getloadavg(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


# ------------------------------------------------------------------ running
STATS_TIMEOUT_S = 60.0


def model_stats(server, model: str) -> dict:
    """The model's statistics, or RuntimeError when the server does not give
    them within STATS_TIMEOUT_S (a loaded machine, a stuck server): the point
    is then recorded as failed, and the run goes on."""
    status, body = server.get(f"/v2/models/{model}/stats", timeout=STATS_TIMEOUT_S)
    if status != 200 or not isinstance(body, dict) or len(body.get("model_stats") or []) != 1:
        why = f"no answer within {STATS_TIMEOUT_S:g} s" if status == 0 else f"HTTP {status}: {str(body)[:200]}"
        raise RuntimeError(f"statistics of {model}: {why}")
    return body["model_stats"][0]


def batch_delta(before: dict, after: dict) -> dict:
    def hist(stats):
        return {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                for b in stats.get("batch_stats", [])}
    h0, h1 = hist(before), hist(after)
    h = {k: h1.get(k, 0) - h0.get(k, 0) for k in sorted(set(h0) | set(h1))}
    h = {k: v for k, v in h.items() if v}
    inferences = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    return {
        "inferences": inferences,
        "executions": executions,
        "avg_batch": round(inferences / executions, 2) if executions else None,
        "max_batch": max(h) if h else None,
        "batch_hist": {str(k): v for k, v in h.items()},
    }


BLAS_PROBE = r"""
import json, os, time
import numpy as np
info = {"numpy": np.__version__}
try:
    import threadpoolctl
    info["threadpoolctl"] = threadpoolctl.threadpool_info()
except Exception:
    pass
a = np.ones((64, 512), np.float32); w = np.ones((512, 1024), np.float32)
a @ w
maps = open("/proc/self/maps").read().splitlines()
info["blas_libraries"] = sorted({l.split()[-1] for l in maps if "blas" in l.lower() and "/" in l})
for rows in (1, 64):
    x = a[:rows]
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < 0.3:
        x @ w; n += 1
    info[f"matmul_512x1024_us_per_row_batch{rows}"] = round((time.perf_counter() - t) / n / rows * 1e6, 1)
print(json.dumps(info))
"""

_BLAS_ENV_PREFIXES = ("OPENBLAS_", "OMP_", "GOTO", "MKL_", "BLIS_")


def blas_env() -> dict:
    """OPENBLAS_* and friends from our environment: recorded, and passed to
    the servers unchanged (the e2e harness's clean environment drops them)."""
    return {k: v for k, v in os.environ.items() if k.startswith(_BLAS_ENV_PREFIXES)}


# Packages of the serving interpreter (ci/install.sh): threadpoolctl (the mlp
# rustpy variants set rustpy.threads) and the textcls frameworks, without numpy
# (Debian's stays). rustpy reads PYTHONPATH (in-process and in its workers);
# the official backend's stub ignores it, so the servers also get the directory
# as RUSTPY_BENCH_SITE and the textcls models append it to sys.path
# (textcls_build.py).
SERVING_SITE = Path(os.environ.get("RUSTPY_DEPS") or ROOT / ".rustpy-deps") / "serving-site"


def server_env() -> dict:
    """The servers' extra environment: blas_env() and SERVING_SITE."""
    env = blas_env()
    if SERVING_SITE.is_dir():
        env["PYTHONPATH"] = env["RUSTPY_BENCH_SITE"] = str(SERVING_SITE)
    return env


def blas_info() -> dict:
    """Which BLAS the server's numpy runs (libraries mapped after a matmul,
    threadpoolctl when installed) and a 512×1024 matmul's cost per row."""
    py = "/usr/bin/python3.11"
    info = {"env": blas_env(), "python": py,
            "libblas.so.3": os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")}
    try:
        p = subprocess.run([py, "-c", BLAS_PROBE], capture_output=True, text=True, timeout=120,
                           env=clean_env(blas_env()))
        info.update(json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-500:]})
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        info["error"] = str(e)
    return info


def textcls_profile() -> dict:
    """bench/textcls_profile.py with the serving interpreter: the textcls
    classifier's per-request work alone (tokenize, arrays, session.run)."""
    try:
        p = subprocess.run(["/usr/bin/python3.11", str(ROOT / "bench" / "textcls_profile.py")],
                           capture_output=True, text=True, timeout=300, env=clean_env(server_env()))
        return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-500:]}
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return {"error": str(e)}


def expect_for(variant: str) -> str:
    return "echo" if variant == "native" else "compute"


class NetworkDriver:
    """A tritonserver process; each run is one rustpy-loadgen process over
    HTTP or gRPC."""

    def __init__(self, args, out_dir, protocol):
        self.args = args
        self.out_dir = out_dir
        self.name = self.protocol = protocol
        self.server = TritonServer([MODELS], exit_on_error=False, wait_models=[], name="bench",
                                   env=server_env())

    def start(self, models) -> dict:
        """Starts the server; returns {model: None if ready, else why not}."""
        self.server.start()
        index = wait_loaded(self.server)
        return {m: None if index.get(m, {}).get("state") == "READY"
                else "not loaded: " + index.get(m, {}).get("reason", "not in the repository index")
                for m in models}

    def version(self):
        status, meta = self.server.get("/v2")
        return meta.get("version") if isinstance(meta, dict) else None

    def run(self, model, workload, size, conc, expect, duration, warmup, label):
        before = model_stats(self.server, model)
        url = self.server.grpc_url if self.protocol == "grpc" else self.server.http_url
        cmd = [str(self.args.loadgen), "--protocol", self.protocol, "--url", url, "--model", model,
               "--workload", LOADGEN_WORKLOAD.get(workload, workload), "--concurrency", str(conc),
               "--duration", str(duration),
               "--warmup", str(warmup), "--expect", expect, "--label", label]
        if size:
            cmd += ["--bytes", str(size)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"rustpy-loadgen failed (exit {p.returncode}): {p.stderr.strip()}")
        after = model_stats(self.server, model)
        if not self.server.running:
            raise RuntimeError("tritonserver died\n" + self.server.log_tail())
        return json.loads(line), batch_delta(before, after)

    def stop(self):
        self.server.stop()
        try:
            (self.out_dir / f"tritonserver-{self.protocol}.log").write_text(self.server.log_text())
        except OSError:
            pass


def tritonserver_library() -> Path | None:
    """libtritonserver from the installed wheel (auditwheel renames it)."""
    libs = tritonserver_private_libs()
    found = sorted(libs.glob("libtritonserver*.so"))
    return found[0] if found else None


class InprocDriver:
    """One rustpy-inproc process hosts the server in-process and runs every
    point; run specs go to its stdin, one JSON result per line comes back."""
    name = "inproc"

    def __init__(self, args, out_dir, backend_config=(), tag=""):
        self.args = args
        self.out_dir = out_dir
        self.proc = None
        self.tmp = None
        self.shm_prefix = f"rustpy_bench_inproc_{os.getpid()}_"
        # More --backend-config BACKEND,KEY=VALUE (e.g. rustpy,metrics=false).
        self.backend_config = list(backend_config)
        # Distinguishes the logs of several servers of one run.
        self.tag = tag
        self.log_file = out_dir / f"inproc-server{tag}.log"

    def start(self, models) -> dict:
        lib = self.args.tritonserver_lib or tritonserver_library()
        if lib is None or not Path(lib).is_file():
            raise RuntimeError("libtritonserver*.so not found next to the installed tritonserver "
                               "(ci/install.sh); pass --tritonserver-lib")
        self.tmp = Path(tempfile.mkdtemp(prefix="rustpy-bench-inproc-"))
        # A Triton install's layout: the driver opens libtritonserver RTLD_LOCAL,
        # so backends find it through their own needed libtritonserver.so.
        bdir = make_triton_install(self.tmp / "triton") / "backends"
        cmd = [str(self.args.inproc), "--lib", str(lib), "--repo", str(MODELS), "--backend-dir", str(bdir),
               "--load", ",".join(models), "--log-file", str(self.log_file),
               "--backend-config", f"python,shm-region-prefix-name={self.shm_prefix}"]
        for bc in self.backend_config:
            cmd += ["--backend-config", bc]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.out_dir / f"inproc-driver{self.tag}.stderr", "wb"),
                                     text=True, env=clean_env(server_env()), cwd=self.tmp,
                                     start_new_session=True)
        ready = self._read(600)
        if "ready" not in ready:
            raise RuntimeError(f"rustpy-inproc did not start: {ready}")
        return {m: None if ready["ready"].get(m) else "not loaded (see inproc-server.log)"
                for m in models}

    def _read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if r else ""
        if not line:
            err = (self.out_dir / f"inproc-driver{self.tag}.stderr").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"rustpy-inproc gave no answer (exit {self.proc.poll()}): {err}")
        return json.loads(line)

    def version(self):
        return None

    def run(self, model, workload, size, conc, expect, duration, warmup, label):
        spec = {"model": model, "workload": LOADGEN_WORKLOAD.get(workload, workload),
                "concurrency": conc, "duration": duration,
                "warmup": warmup, "expect": expect, "label": label}
        if size:
            spec["bytes"] = size
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        r = self._read(duration + warmup + 300)
        if "error" in r:
            raise RuntimeError(r["error"])
        return r, batch_delta(r.pop("stats_before") or {}, r.pop("stats_after") or {})

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait()
        for shm in Path("/dev/shm").glob(self.shm_prefix + "*"):
            try:
                shm.unlink()
            except OSError:
                pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class PerfAnalyzerDriver:
    """Triton's perf_analyzer (bench/perf_analyzer.py) in one of its modes:
    pa_capi runs the server inside perf_analyzer (one server per run, on a
    repository of the one model measured); pa_grpc / pa_http load one
    tritonserver process, like the gRPC/HTTP drivers. perf_analyzer does not
    check answers (see perf_analyzer.py); our own drivers do, on the same
    models."""

    def __init__(self, args, out_dir, name):
        self.name = name
        self.out_dir = out_dir
        self.tmp = Path(tempfile.mkdtemp(prefix=f"rustpy-bench-{name}-"))
        self.pa = perf_analyzer.PerfAnalyzer(perf_analyzer.MODES[name], self.tmp, MODELS, env=server_env())
        self.server = None if name == "pa_capi" else \
            TritonServer([MODELS], exit_on_error=False, wait_models=[], name=f"bench-{name}", env=server_env())

    def start(self, models) -> dict:
        if not self.pa.exe.exists():
            raise RuntimeError(f"perf_analyzer not found at {self.pa.exe} (ci/install.sh installs it)")
        if self.server is None:
            return {m: None for m in models}   # each run loads its model: the probe tells
        self.server.start()
        index = wait_loaded(self.server)
        return {m: None if index.get(m, {}).get("state") == "READY"
                else "not loaded: " + index.get(m, {}).get("reason", "not in the repository index")
                for m in models}

    def version(self):
        return self.pa.version()

    def run(self, model, workload, size, conc, expect, duration, warmup, label):
        url = None
        if self.server is not None:
            url = self.server.grpc_url if self.name == "pa_grpc" else self.server.http_url
            before = model_stats(self.server, model)
        rc, log, rep = self.pa.run(model, workload, size, conc, duration, url=url, label=label)
        if rep is None:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
            (self.out_dir / f"{self.name}-{stem}.log").write_text(log)
            raise RuntimeError(f"perf_analyzer ({self.name}, {model}) failed, exit {rc}: "
                               + perf_analyzer.failure_summary(log))
        if self.server is not None:
            stats = batch_delta(before, model_stats(self.server, model))
            if not self.server.running:
                raise RuntimeError("tritonserver died\n" + self.server.log_tail())
        else:
            inf, ex = rep["inferences"] or 0, rep["executions"] or 0
            stats = {"inferences": inf, "executions": ex, "avg_batch": round(inf / ex, 2) if ex else None,
                     "max_batch": None, "batch_hist": {}}
        lat = rep["latency_us"]
        result = {"throughput_rps": rep["throughput_rps"],
                  "in_bytes_per_s": rep["throughput_rps"] * rep["request_bytes"],
                  "latency_us": {"p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"]},
                  "server_us": rep["server_us"], "completed": rep["client_requests"] or 0,
                  "errors": 0, "validation_errors": 0, "first_error": None, "checked": False,
                  "unstable": rep["unstable"]}
        return result, stats

    def stop(self):
        if self.server is not None:
            self.server.stop()
            try:
                (self.out_dir / f"tritonserver-{self.name}.log").write_text(self.server.log_text())
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------- load/unload cycles
CYCLE_MODELS = ["add_sub_rustpy_process", "add_sub_rustpy_compat_process"]


def processes() -> dict:
    """{pid: (comm, ppid, CPU ticks)} of every process now: /proc/<pid>/stat's
    name, parent and utime + stime + cutime + cstime (USER_HZ ticks)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        rest = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (stat[stat.index("(") + 1:stat.rindex(")")], int(rest[1]),
                             sum(int(x) for x in rest[11:15]))
    return table


def _worker_children(server_pid: int) -> list[int]:
    """Pids of the rustpy-worker processes (zombies included) whose parent is the server."""
    return [pid for pid, (comm, ppid, _) in processes().items()
            if comm == "rustpy-worker" and ppid == server_pid]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_unload_cycles(out_dir: Path, cycles: int) -> dict:
    """Issue 11's target: `cycles` load/unload cycles of the process-isolated
    add_sub models (both APIs, one request each per cycle) leave no worker
    behind and grow the server's RSS by < 20 MiB (measured after 3 warm-up
    cycles, when the first loads' one-time allocations are done)."""
    server = TritonServer([MODELS], exit_on_error=False, wait_models=[], name="bench-cycles",
                          model_control_mode="explicit", env=blas_env())
    header = {"inputs": [{"name": n, "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                         for n in ("INPUT0", "INPUT1")]}
    leftovers, t0 = 0, time.monotonic()
    try:
        server.start()
        pid = server.proc.pid

        def cycle():
            nonlocal leftovers
            for m in CYCLE_MODELS:
                status, body = server.load_model(m)
                if status != 200:
                    raise RuntimeError(f"load {m}: {status} {body}")
                status, body = server.request("POST", f"/v2/models/{m}/infer", header)
                outs = {o["name"]: o["data"] for o in body.get("outputs", [])} if isinstance(body, dict) else {}
                if status != 200 or outs.get("OUTPUT0") != [2, 4, 6, 8]:
                    raise RuntimeError(f"infer {m}: {status} {body}")
            for m in CYCLE_MODELS:
                status, body = server.unload_model(m)
                if status != 200:
                    raise RuntimeError(f"unload {m}: {status} {body}")
            deadline = time.monotonic() + 30
            while _worker_children(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            leftovers = max(leftovers, len(_worker_children(pid)))

        for _ in range(3):
            cycle()
        rss0 = _rss_mib(pid)
        t0 = time.monotonic()
        for i in range(cycles):
            cycle()
            if (i + 1) % 50 == 0:
                log(f"cycles: {i + 1}/{cycles}, server RSS {_rss_mib(pid):.1f} MiB")
        rss1 = _rss_mib(pid)
        return {"cycles": cycles, "models": CYCLE_MODELS, "rss_start_mib": round(rss0, 1),
                "rss_end_mib": round(rss1, 1), "rss_growth_mib": round(rss1 - rss0, 1),
                "max_leftover_workers": leftovers, "seconds": round(time.monotonic() - t0, 1)}
    except (TritonStartError, RuntimeError, OSError) as e:
        return {"cycles": cycles, "error": str(e)[:2000]}
    finally:
        server.stop()
        try:
            (out_dir / "tritonserver-cycles.log").write_text(server.log_text())
        except OSError:
            pass


def render_cycles(c: dict) -> str:
    if "error" in c:
        return f"## Load/unload cycles\n\nFailed: {c['error']}\n"
    ok_workers = c["max_leftover_workers"] == 0
    ok_rss = c["rss_growth_mib"] < 20
    return (f"## Load/unload cycles (process isolation)\n\n"
            f"{c['cycles']} cycles of load → one request each → unload of {', '.join(c['models'])} "
            f"(after 3 warm-up cycles), {c['seconds']:g} s: worker processes left after an unload: "
            f"**{c['max_leftover_workers']}** (target 0: {'meets' if ok_workers else 'misses'}); "
            f"server RSS {c['rss_start_mib']:g} → {c['rss_end_mib']:g} MiB, growth "
            f"**{c['rss_growth_mib']:g} MiB** (target < 20 MiB: {'meets' if ok_rss else 'misses'}).\n")


def probe(driver, model, workload, size, variant) -> str | None:
    """None if the model answers correctly, else why not."""
    try:
        r, _ = driver.run(model, workload, size, 1, expect_for(variant), 0.3, 0.0, "probe")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r["completed"] == 0 or r["errors"] or r["validation_errors"]:
        return r.get("first_error") or "no request completed"
    return None


def wait_loaded(server, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        index = server.repository_index()
        if all(m.get("state") not in (None, "LOADING", "UNLOADING") for m in index) or \
                time.monotonic() > deadline:
            return {m["name"]: m for m in index}
        time.sleep(0.5)


def summarize(runs: list[dict]) -> dict:
    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    failed = [r for r in runs if "failed" in r]
    runs = [r for r in runs if "failed" not in r]
    ok = [r for r in runs if r["loadgen"]["completed"] > 0]
    inferences = sum(r["stats"]["inferences"] for r in runs)
    executions = sum(r["stats"]["executions"] for r in runs)
    hist: dict = {}
    for r in runs:
        for k, v in r["stats"]["batch_hist"].items():
            hist[k] = hist.get(k, 0) + v
    return {
        "repeats": len(runs) + len(failed),
        # Runs that ended without a figure (bench.main: a driver error, a
        # statistics read that timed out); the figures are over the others.
        "failed_runs": len(failed),
        "first_failure": failed[0]["failed"] if failed else None,
        "throughput_rps": stat([r["loadgen"]["throughput_rps"] for r in ok]),
        "in_bytes_per_s": stat([r["loadgen"]["in_bytes_per_s"] for r in ok]),
        "p50_us": stat([r["loadgen"]["latency_us"]["p50"] for r in ok]),
        "p90_us": stat([r["loadgen"]["latency_us"]["p90"] for r in ok]),
        "p99_us": stat([r["loadgen"]["latency_us"]["p99"] for r in ok]),
        "errors": sum(r["loadgen"]["errors"] for r in runs),
        "validation_errors": sum(r["loadgen"]["validation_errors"] for r in runs),
        "first_error": next((r["loadgen"]["first_error"] for r in runs if r["loadgen"]["first_error"]), None),
        "avg_batch": round(inferences / executions, 2) if executions else None,
        "max_batch": max((int(k) for k in hist), default=None),
        "batch_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        # The 1-minute load average when the point's runs ended (the worst).
        "loadavg_max": max((r["loadavg"][0] for r in runs + failed if r.get("loadavg")), default=None),
        # CPUs' worth of other processes' work during the point's runs (the worst).
        "foreign_cpus_max": max((r["foreign_cpus"] for r in runs if r.get("foreign_cpus") is not None),
                                default=None),
        # perf_analyzer found no three windows within its stability bound.
        "unstable_runs": sum(1 for r in runs if r["loadgen"].get("unstable")),
        # perf_analyzer's server-side breakdown per request (µs, median over repeats).
        "server_us": {k: statistics.median(r["loadgen"]["server_us"][k] for r in ok)
                      for k in (ok[0]["loadgen"].get("server_us") or {})} if ok else {},
    }


# A 1-minute load average above this on the machine's 2 cores: the figure is noise.
NOISY_LOAD = 4.0
# CPUs' worth of work by processes outside the bench during a point above
# this: somebody else was using the machine.
NOISY_FOREIGN = 0.25


class ForeignCpu:
    """CPU time used by processes that are not the bench's (its own process,
    its servers, perf_analyzer, workers: all descendants), over a run, in
    CPUs' worth. The load average counts the bench's own threads too (at
    c=16 perf_analyzer alone keeps it above 4 on 2 CPUs); this does not."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        table = processes()
        children = {}
        for pid, (_, ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        ours, todo = 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            ours += table[pid][2] if pid in table else 0
            todo += children.get(pid, [])
        return time.monotonic(), busy, ours

    def seconds(self) -> tuple:
        """(CPU seconds of other processes, of the bench's, wall seconds) so far."""
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self._sample()
        hz = os.sysconf("SC_CLK_TCK")
        ours = (ours1 - ours0) / hz
        return max(0.0, (busy1 - busy0) / hz - ours), ours, t1 - t0

    def cpus(self) -> float:
        foreign, _, wall = self.seconds()
        return foreign / max(wall, 1e-3)


def fmt_load(load, foreign=None):
    """The load average; with the other processes' CPU when it was measured,
    which alone decides noise then (the load counts the bench's own threads)."""
    if load is None:
        return "n/a"
    if foreign is None:
        return f"{load:.1f} **noise**" if load > NOISY_LOAD else f"{load:.1f}"
    text = f"{load:.1f}, other {foreign:.2f} CPU"
    return f"{text} **noise**" if foreign > NOISY_FOREIGN else text


def fmt_num(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_range(s, scale=1.0, digits=0):
    """median (min–max) or n/a."""
    if not s:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt_num(s["median"] * scale, digits)
    return (f"{fmt_num(s['median'] * scale, digits)} "
            f"({fmt_num(s['min'] * scale, digits)}–{fmt_num(s['max'] * scale, digits)})")


def ms_digits(us):
    return 2 if us is not None and us < 10_000 else 1


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def median_of(summary, key):
    s = summary.get(key) if summary else None
    return s["median"] if s else None


def key_of(driver, workload, size, conc, variant) -> str:
    s = f"{size // MiB}MiB" if size else "-"
    return f"{driver}:{workload}/{s}/c{conc}/{variant}"


def parse_key(key):
    driver, rest = key.split(":", 1)
    w, s, c, v = rest.split("/")
    return driver, w, s, int(c[1:]), v


def target_lines(results, driver, w, cell) -> list[str]:
    """Ratios measured in this run, with the issue's targets where it sets them."""
    settings = results["settings"]
    sizes = WORKLOADS[w][1]
    concs = sizes[0][1]
    cmax, cmin = max(concs), min(concs)
    have = set(workload_variants(w, settings["variants"]))
    lines = []

    def tp(v, c, size=None):
        return median_of(cell(w, size, c, v), "throughput_rps")

    def p50(v, c, size=None):
        return median_of(cell(w, size, c, v), "p50_us")

    def line(text, value, target=None, higher=True, unit="×"):
        t = f" (target {'≥' if higher else '≤'} {target:g}{unit if unit == '×' else ''}: " \
            f"{verdict(value, target, higher)})" if target is not None else ""
        lines.append(f"- {text}: **{fmt_num(value, 2)}{unit}**{t}")

    if w == "add_sub" and "python" in have:
        # Issue 16 set the in-process targets; issue 24 raised the same file's
        # to ≥ 3× in perf_analyzer's C API mode (at c=16) and p50 ≤ 0.4 at c=1.
        targets = {"inproc": {"rustpy": (5, 0.25), "rustpy_compat": (2, 0.4)},
                   "pa_capi": {"rustpy_compat": (3, None)}}.get(driver, {})
        for v in ("rustpy", "rustpy_compat"):
            if v in have:
                tt, tl = targets.get(v, (None, None))
                line(f"{VARIANT_LABEL[v]} / python throughput at c={cmax}", ratio(tp(v, cmax), tp("python", cmax)), tt)
                line(f"{VARIANT_LABEL[v]} / python p50 at c={cmin}", ratio(p50(v, cmin), p50("python", cmin)),
                     tl, higher=False, unit="")
        # Issue 11: process mode at least the official backend's throughput at
        # c=32 and no more than its p50 at c=1 (every driver).
        for v in ("rustpy_process", "rustpy_compat_process"):
            if v in have:
                line(f"{VARIANT_LABEL[v]} / python throughput at c={cmax}",
                     ratio(tp(v, cmax), tp("python", cmax)), 1)
                line(f"{VARIANT_LABEL[v]} / python p50 at c={cmin}",
                     ratio(p50(v, cmin), p50("python", cmin)), 1, higher=False, unit="")
        if "native" in have:
            lines.append(f"- bound: native echo / python is {fmt_num(ratio(tp('native', cmax), tp('python', cmax)), 2)}× "
                         f"throughput at c={cmax} and {fmt_num(ratio(p50('native', cmin), p50('python', cmin)), 2)} "
                         f"p50 at c={cmin}")
    if w == "add_sub" and "native" in have:
        for v in ("rustpy", "rustpy_compat"):
            if v in have:
                parts = [f"c={c}: {fmt_num(None if ratio(tp(v, c), tp('native', c)) is None else 100 * ratio(tp(v, c), tp('native', c)), 0)}%"
                         for c in concs]
                r = ratio(tp(v, cmax), tp("native", cmax))
                t = f" (target ≥ 80% at c={cmax}: {verdict(r, 0.8)})" if v == "rustpy" and driver == "inproc" else ""
                lines.append(f"- {VARIANT_LABEL[v]} / native echo throughput: {', '.join(parts)}{t}")
    elif w == "identity" and "native" in have:
        for v in ("rustpy", "rustpy_compat", "python", "rustpy_process", "rustpy_compat_process"):
            if v not in have:
                continue
            parts, worst = [], None
            for size, cs in sizes:
                for c in cs:
                    r = ratio(median_of(cell(w, size, c, "native"), "in_bytes_per_s"),
                              median_of(cell(w, size, c, v), "in_bytes_per_s"))
                    parts.append(f"{size // MiB} MiB c={c}: {fmt_num(r, 2)}×")
                    if r is not None:
                        worst = r if worst is None else max(worst, r)
            t = f" (target ≤ 1.5×: {verdict(worst, 1.5, False)})" if v in ("rustpy", "rustpy_process") else ""
            lines.append(f"- per-byte cost {VARIANT_LABEL[v]} / native echo: {', '.join(parts)}{t}")
    elif w == "mlp" and "python" in have:
        for v in ("rustpy", "rustpy_compat", "python_batched"):
            if v in have:
                parts = ", ".join(f"c={c}: {fmt_num(ratio(tp(v, c), tp('python', c)), 2)}×" for c in concs)
                t = ""
                if v == "rustpy":
                    # Issue 24: ≥ 3.5× the official per-request loop in
                    # perf_analyzer's C API mode and ≥ 2× over its gRPC (c=16).
                    goal = {"pa_capi": 3.5, "pa_grpc": 2.0}.get(driver)
                    r = ratio(tp(v, cmax), tp("python", cmax))
                    if goal:
                        t = f" (target ≥ {goal:g}× at c={cmax}: {verdict(r, goal)})"
                lines.append(f"- {VARIANT_LABEL[v]} / python throughput: {parts}{t}")
        if "rustpy" in have and "python_batched" in have:
            r = ratio(tp("rustpy", cmax), tp("python_batched", cmax))
            lines.append(f"- rustpy batched API / python hand-batched throughput at c={cmax}: **{fmt_num(r, 2)}×** "
                         f"(target > 1, ahead of it: {verdict(r, 1.0 + 1e-9)})")
    elif w == "ragged":
        if "rustpy" in have and "rustpy_split" in have:
            parts = ", ".join(f"c={c}: {fmt_num(ratio(tp('rustpy', c), tp('rustpy_split', c)), 2)}×" for c in concs)
            r = ratio(tp("rustpy", cmax), tp("rustpy_split", cmax))
            lines.append(f"- rustpy ragged / rustpy split per shape throughput: {parts} "
                         f"(target ≥ 3× at c={cmax}: {verdict(r, 3.0)})")
        if "rustpy" in have and "python" in have:
            parts = ", ".join(f"c={c}: {fmt_num(ratio(tp('rustpy', c), tp('python', c)), 2)}×" for c in concs)
            r = ratio(tp("rustpy", cmax), tp("python", cmax))
            lines.append(f"- rustpy ragged / python throughput: {parts} "
                         f"(target > 1, ahead of it: {verdict(r, 1.0 + 1e-9)})")
    elif w == "textcls" and "python" in have:
        # Issue 24: batched API ≥ 1.3× the official backend at c=16 (set for
        # gRPC), process mode within 10% of in-process.
        for v in ("rustpy", "rustpy_compat", "rustpy_process"):
            if v in have:
                parts = ", ".join(f"c={c}: {fmt_num(ratio(tp(v, c), tp('python', c)), 2)}×" for c in concs)
                t = ""
                if v == "rustpy":
                    t = f" (target ≥ 1.3× at c={cmax}, set for gRPC: {verdict(ratio(tp(v, cmax), tp('python', cmax)), 1.3)})"
                lines.append(f"- {VARIANT_LABEL[v]} / python throughput: {parts}{t}")
        prof = results["machine"].get("textcls_profile") or {}
        b1, b16 = prof.get("batch1_us"), prof.get("batch16_us_per_row")
        if b1 and b16:
            def us_per_req(v):
                t = tp(v, cmax)
                return 1e6 / t if t else None
            lines.append(
                f"- the classifier alone (bench/textcls_profile.py, load {prof.get('loadavg', 0):.1f}): per request "
                f"at batch 1 tokenize {b1['tokenize']:g} + arrays {b1['arrays']:g} + session.run {b1['session_run']:g} "
                f"= **{b1['total']:g} µs**; per row at batch 16 tokenize {b16['tokenize']:g} + arrays {b16['arrays']:g} "
                f"+ session.run {b16['session_run']:g} = **{b16['total']:g} µs** (tokenizing "
                f"{100 * b16['tokenize'] / b16['total']:.0f}%). Measured per request at c={cmax} (1 / throughput): "
                + ", ".join(f"{v} {fmt_num(us_per_req(v), 0)} µs" for v in ("python", "rustpy_compat", "rustpy", "rustpy_process")
                            if v in have)
                + f". Framework-bound ceiling of the batched API / official per-request loop: "
                  f"{fmt_num(ratio(us_per_req('python'), b16['total']), 2)}× (official measured / batch-16 work alone)")
        if "rustpy" in have and "rustpy_process" in have:
            r = ratio(tp("rustpy_process", cmax), tp("rustpy", cmax))
            lines.append(f"- process mode / in-process (batched API) throughput at c={cmax}: **{fmt_num(r, 2)}×** "
                         f"(target ≥ 0.9: {verdict(r, 0.9)})")
    elif w in ("upper", "embed") and "python" in have:
        for v in ("rustpy", "rustpy_compat"):
            if v in have:
                parts = ", ".join(f"c={c}: {fmt_num(ratio(tp(v, c), tp('python', c)), 2)}×" for c in concs)
                lines.append(f"- {VARIANT_LABEL[v]} / python throughput: {parts}")
    elif w == "pycpu_count2" and "pycpu_count1" in settings["workloads"]:
        # What the second instance buys: count 2 / count 1, each variant, same run.
        for v in ("rustpy_compat_process", "python", "rustpy_compat"):
            if v in have:
                parts = ", ".join(f"c={c}: {fmt_num(ratio(tp(v, c), median_of(cell('pycpu_count1', None, c, v), 'throughput_rps')), 2)}×"
                                  for c in concs)
                r = ratio(tp(v, cmax), median_of(cell("pycpu_count1", None, cmax, v), "throughput_rps"))
                t = f" (target ≥ 1.7×: {verdict(r, 1.7)})" if v == "rustpy_compat_process" else ""
                lines.append(f"- {VARIANT_LABEL[v]}: count 2 / count 1 throughput {parts}{t}")
    return lines


def headline(results: dict) -> list[str]:
    """One table per workload: each variant's throughput at the highest
    concurrency (× the official backend's, same driver, same run) and p50 at
    the lowest, for every driver of the run side by side; the highest load
    average any of a row's points saw. docs/benchmarks.md quotes it."""
    settings, points = results["settings"], results["points"]
    out = ["## Headline", ""]
    for w in settings["workloads"]:
        desc, sizes, _ = WORKLOADS[w]
        size = sizes[-1][0]
        concs = sizes[-1][1]
        cmax, cmin = max(concs), min(concs)
        drivers = settings["drivers"]
        shown = f"{size // MiB} MiB, " if size else ""
        out.append(f"### {w} — {desc} ({shown}req/s at c={cmax} (× official), p50 ms at c={cmin})")
        out.append("")
        out.append("| variant | " + " | ".join(f"{d} c={cmax} | {d} p50" for d in drivers) + " | load (max) |")
        out.append("|---|" + "---|---|" * len(drivers) + "---|")
        for v in workload_variants(w, settings["variants"]):
            row, loads, foreign = [VARIANT_LABEL[v]], [], []
            for d in drivers:
                hi = points.get(key_of(d, w, size, cmax, v)) or {}
                lo = points.get(key_of(d, w, size, cmin, v)) or {}
                base = points.get(key_of(d, w, size, cmax, "python")) or {}
                tp = median_of(hi, "throughput_rps")
                r = ratio(tp, median_of(base, "throughput_rps"))
                row.append("n/a" if tp is None else
                           f"{fmt_num(tp)}" + ("" if v == "python" or r is None else f" ({r:.2f}×)"))
                p50 = median_of(lo, "p50_us")
                row.append(fmt_num(None if p50 is None else p50 / 1000, 3))
                loads += [x.get("loadavg_max") for x in (hi, lo) if x.get("loadavg_max") is not None]
                foreign += [x.get("foreign_cpus_max") for x in (hi, lo) if x.get("foreign_cpus_max") is not None]
            row.append(fmt_load(max(loads), max(foreign) if foreign else None) if loads else "n/a")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def render(results: dict) -> str:
    out = []
    settings = results["settings"]
    if settings.get("concurrency"):  # an earlier run's own levels
        set_concurrency(int(c) for c in settings["concurrency"].split(","))
    out.append(f"Settings: {settings['repeat']} repeat(s) × {settings['duration_s']:g} s per point "
               f"(+{settings['warmup_s']:g} s warm-up), variants interleaved; figures are the median "
               "over repeats with (min–max) across repeats.")
    blas = results["machine"].get("blas", {})
    if blas:
        out.append(f"numpy BLAS: {', '.join(blas.get('blas_libraries', [])) or blas.get('libblas.so.3')}; "
                   f"512×1024 matmul {blas.get('matmul_512x1024_us_per_row_batch1', 'n/a')} µs/row alone, "
                   f"{blas.get('matmul_512x1024_us_per_row_batch64', 'n/a')} µs/row in a batch of 64; "
                   f"BLAS environment: {blas.get('env') or 'none set'}.")
    out.append("")
    out += headline(results)
    avail = results["availability"]
    points = results["points"]
    failures = []
    for driver in settings["drivers"]:
        out.append(f"## {driver}: {DRIVER_LABEL[driver]}")
        out.append("")

        for w in settings["workloads"]:
            desc, sizes, _ = WORKLOADS[w]

            def cell(workload, size, conc, variant, driver=driver):
                return points.get(key_of(driver, workload, size, conc, variant))

            out.append(f"### {driver} · {w} — {desc}")
            out.append("")
            large = w == "identity"
            head = ["size"] if large else []
            head += ["c", "variant", "req/s"]
            head += ["MiB/s (per direction)"] if large else []
            head += ["p50 ms", "p90 ms", "p99 ms", "batch avg (max)", "errors"]
            server_split = driver in PA_DRIVERS
            head += ["server µs/req queue·in·infer·out"] if server_split else []
            head += ["load"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for size, concs in sizes:
                for c in concs:
                    for v in workload_variants(w, settings["variants"]):
                        model = f"{w}_{v}"
                        s = cell(w, size, c, v)
                        row = [f"{size // MiB} MiB"] if large else []
                        row += [str(c), VARIANT_LABEL[v]]
                        a = avail.get(f"{driver}:{model}", {})
                        if a.get("status", "n/a") != "ok" or s is None:
                            row += [a.get("status", "n/a")] + ["n/a"] * (len(head) - len(row) - 1)
                            out.append("| " + " | ".join(row) + " |")
                            continue
                        if s.get("failed_runs") and s["throughput_rps"] is None:
                            row += ["**failed**"] + ["n/a"] * (len(head) - len(row) - 2)
                            row.append(fmt_load(s.get("loadavg_max"), s.get("foreign_cpus_max")))
                            out.append("| " + " | ".join(row) + " |")
                            failures.append((key_of(driver, w, size, c, v), s))
                            continue
                        if s.get("failed_runs"):
                            failures.append((key_of(driver, w, size, c, v), s))
                        row.append(fmt_range(s["throughput_rps"], 1.0, 1 if large else 0))
                        if large:
                            row.append(fmt_range(s["in_bytes_per_s"], 1 / MiB, 0))
                        for k in ("p50_us", "p90_us", "p99_us"):
                            st = s[k]
                            d = ms_digits(st["median"]) if st else 0
                            row.append(fmt_range(st, 1e-3, d + (1 if st and st["median"] < 1000 else 0)))
                        row.append(f"{fmt_num(s['avg_batch'], 2)} ({s['max_batch'] or 'n/a'})")
                        row.append(str(s["errors"] + s["validation_errors"]))
                        if server_split:
                            su = s.get("server_us") or {}
                            row.append("·".join(fmt_num(su.get(k)) for k in
                                                ("queue", "compute_input", "compute_infer", "compute_output")))
                        row.append(fmt_load(s.get("loadavg_max"), s.get("foreign_cpus_max"))
                                   + (f", {s['unstable_runs']} unstable" if s.get("unstable_runs") else ""))
                        out.append("| " + " | ".join(row) + " |")
            out.append("")
            lines = target_lines(results, driver, w, cell)
            if lines:
                out.extend(lines)
                out.append("")
    if failures:
        out.append("Failed runs (the point's figures, if any, are over its other runs):")
        for key, s in failures:
            out.append(f"- `{key}`: {s['failed_runs']} of {s['repeats']} failed — first: "
                       + s["first_failure"].splitlines()[0][:300])
        out.append("")
    missing = {m: a for m, a in avail.items() if a["status"] != "ok"}
    if missing:
        out.append("Models not measured:")
        for m, a in sorted(missing.items()):
            out.append(f"- `{m}`: {a['status']} — {a.get('reason', '')}")
        out.append("")
    noisy = [f"{k} {100 * sp:.0f}%" for k, sp in sorted(spreads(points).items()) if sp > 0.2]
    if noisy:
        out.append("Noisy points, (max − min) / median of throughput over the repeats above 20%: "
                   + ", ".join(noisy))
        out.append("")
    loads = [r["loadavg"][0] for r in results.get("runs", []) if r.get("loadavg")]
    if loads:
        out.append(f"1-minute load average during the runs: {min(loads):.1f}–{max(loads):.1f} "
                   f"(median {statistics.median(loads):.1f}) on {results['machine']['cpus']} CPUs, "
                   "server and load generator included. The load column is the highest at the end "
                   f"of a point's runs; above {NOISY_LOAD:g} the point is marked **noise**: repeat it "
                   "on a quieter machine before quoting it. \"unstable\" (perf_analyzer): no three "
                   f"windows within {perf_analyzer.STABILITY_PERCENT}% of each other, the figure is "
                   "its first three windows.")
        out.append("")
    return "\n".join(out)


def spreads(points) -> dict:
    """(max − min) / median of throughput per point (0 with one repeat)."""
    out = {}
    for k, s in points.items():
        tp = s.get("throughput_rps")
        if tp and tp["median"]:
            out[k] = (tp["max"] - tp["min"]) / tp["median"]
    return out


# ------------------------------------------------------------- regression
MIN_NOISE = 0.05


def compare(old: dict, new: dict) -> tuple[str, list[str]]:
    """Each variant's throughput ratio to the official backend (same driver,
    workload, size, concurrency), old run vs new run. A ratio that fell by
    more than the measured noise is flagged: the noise of a ratio is taken as
    the larger of the two runs' (spread of the variant + spread of python) / 2,
    at least 5%."""
    rows, flagged = [], []
    po, pn = old.get("points", {}), new.get("points", {})
    so, sn = spreads(po), spreads(pn)
    for key in sorted(set(po) & set(pn)):
        driver, w, s, c, v = parse_key(key)
        if v == "python":
            continue
        ref = key.rsplit("/", 1)[0] + "/python"
        ro = ratio(median_of(po.get(key), "throughput_rps"), median_of(po.get(ref), "throughput_rps"))
        rn = ratio(median_of(pn.get(key), "throughput_rps"), median_of(pn.get(ref), "throughput_rps"))
        abs_change = ratio(median_of(pn.get(key), "throughput_rps"), median_of(po.get(key), "throughput_rps"))
        if ro is None or rn is None:
            continue
        noise = max(MIN_NOISE, (so.get(key, 0) + so.get(ref, 0)) / 2, (sn.get(key, 0) + sn.get(ref, 0)) / 2)
        change = rn / ro - 1
        flag = change < -noise
        if flag:
            flagged.append(key)
        rows.append(f"| {key} | {ro:.2f}× | {rn:.2f}× | {100 * change:+.0f}% | ±{100 * noise:.0f}% | "
                    f"{fmt_num(abs_change, 2)}× | {'**REGRESSED**' if flag else 'ok'} |")
    text = [f"Compared with {old.get('created', '?')} (commit {old.get('machine', {}).get('git_commit', '?')}): "
            f"ratio = variant / python throughput in the same run.", "",
            "| point | old ratio | new ratio | change | noise | new/old req/s | |",
            "|---|---|---|---|---|---|---|", *rows, ""]
    text.append(f"{len(flagged)} point(s) regressed beyond the noise" + (": " + ", ".join(flagged) if flagged else "."))
    return "\n".join(text), flagged


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (ci/bench installs it into the venv)")
        return False
    settings, points = results["settings"], results["points"]
    colors = {"python": "#d62728", "python_batched": "#9467bd", "rustpy_compat": "#ff7f0e",
              "rustpy": "#1f77b4", "native": "#7f7f7f",
              "rustpy_compat_process": "#bcbd22", "rustpy_process": "#17becf", "rustpy_split": "#8c564b"}
    ws = [w for w in ("add_sub", "mlp", "embed", "ragged") if w in settings["workloads"]]
    drivers = settings["drivers"]
    if not ws or not drivers:
        return False
    rows = [(d, m) for d in drivers for m in ("throughput_rps", "p50_us")]
    fig, axes = plt.subplots(len(rows), len(ws), figsize=(5.5 * len(ws), 3.6 * len(rows)), squeeze=False)
    fig.suptitle(f"rustpy vs official Python backend — {results['machine']['cpus']} CPU "
                 f"{results['machine']['cpu']}, {settings['repeat']}×{settings['duration_s']:g} s per point "
                 "(whiskers: min–max over repeats)", fontsize=10)
    for i, (d, metric) in enumerate(rows):
        scale = 1e-3 if metric == "p50_us" else 1.0
        for j, w in enumerate(ws):
            ax = axes[i][j]
            concs = WORKLOADS[w][1][0][1]
            for v in workload_variants(w, settings["variants"]):
                xs, ys, lo, hi = [], [], [], []
                for c in concs:
                    s = (points.get(key_of(d, w, None, c, v)) or {}).get(metric)
                    if s:
                        xs.append(c), ys.append(s["median"] * scale)
                        lo.append((s["median"] - s["min"]) * scale), hi.append((s["max"] - s["median"]) * scale)
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=colors[v], label=VARIANT_LABEL[v])
            ax.set_xscale("log", base=2)
            ax.set_xticks(concs, [str(c) for c in concs])
            ax.set_xlabel("requests in flight")
            if metric == "p50_us":
                ax.set_yscale("log")
                ax.set_ylabel("p50 latency, ms (log)")
                ax.set_title(f"{d} · {w}: p50 latency", fontsize=9)
            else:
                ax.set_ylabel("requests/s")
                ax.set_ylim(bottom=0)
                ax.set_title(f"{d} · {w}: throughput", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="rustpy vs the official Python backend, one server, one run")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per point (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per point (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s per point, 0.5 s warm-up")
    p.add_argument("--repeat", type=int, default=3, help="repeats per point (default 3)")
    p.add_argument("--drivers", default=",".join(DRIVERS + PA_DRIVERS),
                   help="comma-separated subset of %(default)s (pa_*: Triton's perf_analyzer)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of %(default)s")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    p.add_argument("--loadgen", type=Path, default=target / "release" / "rustpy-loadgen")
    p.add_argument("--inproc", type=Path, default=target / "release" / "rustpy-inproc")
    p.add_argument("--tritonserver-lib", type=Path, default=None,
                   help="libtritonserver*.so (default: the one next to the installed tritonserver)")
    p.add_argument("--out", type=Path, default=None, help="results directory (default bench-results/<time>)")
    p.add_argument("--compare", type=Path, default=None,
                   help="an earlier results.json (or its directory): print ratios against it, "
                        "flag regressions beyond the noise (exit 3 if any)")
    p.add_argument("--cycles", type=int, default=None,
                   help="load/unload cycles of the process-isolated models after the runs "
                        "(default 200; 0 skips; --quick skips unless given)")
    p.add_argument("--against", type=Path, default=None,
                   help="with --compare: compare this results.json instead of running")
    p.add_argument("--metrics-overhead", action="store_true",
                   help="only measure rustpy's metrics on vs off (bench/metrics_overhead.py): "
                        "in-process driver, add_sub at c=32, one server per setting and repeat")
    p.add_argument("--concurrency", default=None,
                   help="comma-separated concurrency levels for every workload instead of each "
                        "workload's own (e.g. 1,16, where issue 24 sets its targets)")
    a = p.parse_args(argv)
    if a.concurrency:
        set_concurrency(int(c) for c in a.concurrency.split(","))
    if a.metrics_overhead:
        import metrics_overhead
        return metrics_overhead.main(a)

    def load_results(path: Path) -> dict:
        path = path / "results.json" if path.is_dir() else path
        return json.loads(path.read_text())

    if a.against is not None:
        if a.compare is None:
            p.error("--against needs --compare OLD")
        text, flagged = compare(load_results(a.compare), load_results(a.against))
        print(text)
        return 3 if flagged else 0
    old = load_results(a.compare) if a.compare is not None else None

    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 2.0)
    drivers = [d for d in a.drivers.split(",") if d]
    workloads = [w for w in a.workloads.split(",") if w]
    variants = [v for v in a.variants.split(",") if v]
    bad = [d for d in drivers if d not in DRIVERS + PA_DRIVERS] + [w for w in workloads if w not in WORKLOADS] + \
        [v for v in variants if v not in VARIANTS]
    if bad or a.repeat < 1 or a.duration <= 0:
        p.error(f"bad driver/workload/variant {bad} or repeat/duration")
    for d, exe in (("http", a.loadgen), ("grpc", a.loadgen), ("inproc", a.inproc)):
        if d in drivers and not exe.is_file():
            p.error(f"{exe} not found: cargo build --release -p rustpy-bench")

    problems = check_repository(workloads, variants)
    if problems:
        for pr in problems:
            log("repository check: " + pr)
        return 1
    log("repository check: TritonPythonModel files identical between python and rustpy_compat; "
        "configs identical modulo name/backend/rustpy.native/isolation/threads")

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = (a.out or ROOT / "bench-results" / stamp).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    log("probing numpy's BLAS ...")
    machine["blas"] = blas_info()
    log(f"BLAS: {machine['blas'].get('blas_libraries')} "
        f"({machine['blas'].get('matmul_512x1024_us_per_row_batch1')} µs/row alone, "
        f"{machine['blas'].get('matmul_512x1024_us_per_row_batch64')} µs/row at 64); env {machine['blas']['env']}")
    if "textcls" in workloads:
        log("profiling the textcls classifier alone ...")
        machine["textcls_profile"] = textcls_profile()
        machine["textcls_profile"]["loadavg"] = os.getloadavg()[0]
        log(f"textcls alone: {machine['textcls_profile']}")
    settings = {"duration_s": a.duration, "warmup_s": a.warmup, "repeat": a.repeat, "quick": a.quick,
                "drivers": drivers, "workloads": workloads, "variants": variants,
                "concurrency": a.concurrency,
                "backend_lib": str(rustpy_backend_lib()),
                "loadgen": str(a.loadgen), "inproc": str(a.inproc)}
    runs: list[dict] = []
    availability: dict = {}
    pairs = [(w, v) for w in workloads for v in workload_variants(w, variants)]
    models = [f"{w}_{v}" for w, v in pairs]
    plan = [(w, size, c) for w in workloads for size, concs in WORKLOADS[w][1] for c in concs]
    t_start = time.monotonic()
    with open(out_dir / "runs.jsonl", "w") as jl:
        for dname in drivers:
            driver = InprocDriver(a, out_dir) if dname == "inproc" else \
                PerfAnalyzerDriver(a, out_dir, dname) if dname in PA_DRIVERS else NetworkDriver(a, out_dir, dname)
            log(f"{dname}: starting the server on {MODELS.relative_to(ROOT)} ...")
            try:
                loaded = driver.start(models)
                version = driver.version()
                if version and not machine.get(tool := "perf_analyzer" if dname in PA_DRIVERS else "tritonserver"):
                    machine[tool] = version
                for w, v in pairs:
                    m = f"{w}_{v}"
                    if loaded[m] is not None:
                        availability[f"{dname}:{m}"] = {"status": "n/a (not loaded)", "reason": loaded[m]}
                        continue
                    why = probe(driver, m, w, WORKLOADS[w][1][0][0], v)
                    availability[f"{dname}:{m}"] = {"status": "ok"} if why is None else \
                        {"status": "error", "reason": why}
                for m, av in sorted(availability.items()):
                    if m.startswith(dname + ":"):
                        log(f"{m}: {av['status']}" + (f" ({av['reason'][:200]})" if av.get("reason") else ""))
                todo = [(r, w, size, c, v) for r in range(a.repeat) for (w, size, c) in plan
                        for v in (lambda vs: vs[r % len(vs):] + vs[:r % len(vs)])(workload_variants(w, variants))
                        if availability.get(f"{dname}:{w}_{v}", {}).get("status") == "ok"]
                eta = len(todo) * (a.duration + a.warmup + 0.3)
                log(f"{dname}: {len(todo)} runs, about {eta / 60:.1f} min; results in {out_dir}")
                for i, (r, w, size, c, v) in enumerate(todo, 1):
                    m = f"{w}_{v}"
                    key = key_of(dname, w, size, c, v)
                    run = {"driver": dname, "repeat": r, "workload": w, "size": size, "concurrency": c,
                           "variant": v, "model": m}
                    foreign = ForeignCpu()
                    try:
                        lg, stats = driver.run(m, w, size, c, expect_for(v), a.duration, a.warmup, key)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        # One point that fails (a statistics read or a load
                        # generator that timed out, a driver error) is
                        # recorded as failed; the other points still run.
                        run.update(failed=str(e)[:2000], loadavg=os.getloadavg())
                        runs.append(run)
                        jl.write(json.dumps(run) + "\n")
                        jl.flush()
                        log(f"[{i}/{len(todo)}] rep {r + 1} {key}: FAILED: {str(e)[:300]}")
                        continue
                    run.update(loadgen=lg, stats=stats, loadavg=os.getloadavg(),
                               foreign_cpus=round(foreign.cpus(), 3))
                    runs.append(run)
                    jl.write(json.dumps(run) + "\n")
                    jl.flush()
                    lat = lg["latency_us"]
                    log(f"[{i}/{len(todo)}] rep {r + 1} {key}: {lg['throughput_rps']:,.0f} req/s, "
                        f"p50 {lat['p50'] / 1e3:.3f} ms, p99 {lat['p99'] / 1e3:.2f} ms, "
                        f"batch {stats['avg_batch']}, errors {lg['errors'] + lg['validation_errors']}")
            except (TritonStartError, RuntimeError) as e:
                log(f"{dname}: {e}")
                driver.stop()
                return 1
            driver.stop()
    cycles = a.cycles if a.cycles is not None else (0 if a.quick else 200)
    cycles_result = None
    if cycles > 0:
        log(f"load/unload cycles: {cycles} of {', '.join(CYCLE_MODELS)} ...")
        cycles_result = load_unload_cycles(out_dir, cycles)
        log(f"load/unload cycles: {cycles_result}")
    machine["loadavg_end"] = os.getloadavg()

    grouped: dict = {}
    for run in runs:
        grouped.setdefault(key_of(run["driver"], run["workload"], run["size"], run["concurrency"],
                                  run["variant"]), []).append(run)
    results = {
        "created": stamp,
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "machine": machine,
        "settings": settings,
        "availability": availability,
        "points": {k: summarize(v) for k, v in grouped.items()},
        "runs": runs,
    }
    if cycles_result is not None:
        results["cycles"] = cycles_result
    table = render(results)
    if cycles_result is not None:
        table += "\n" + render_cycles(cycles_result)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "table.md").write_text(table + "\n")
    plotted = plot(results, out_dir / "bench.png")
    print(table)
    log(f"wrote {out_dir}/results.json, runs.jsonl, table.md" + (", bench.png" if plotted else ""))
    rc = 0
    bad_runs = sum(s["errors"] + s["validation_errors"] for s in results["points"].values())
    if bad_runs:
        log(f"{bad_runs} failed or wrong responses during measurement")
        rc = 1
    failed_runs = sum(s["failed_runs"] for s in results["points"].values())
    if failed_runs:
        log(f"{failed_runs} run(s) failed and were recorded as failed points (table.md lists them)")
        rc = 1
    if cycles_result is not None and ("error" in cycles_result or cycles_result["max_leftover_workers"]):
        log("load/unload cycles failed or left worker processes behind")
        rc = 1
    if old is not None:
        text, flagged = compare(old, results)
        (out_dir / "compare.md").write_text(text + "\n")
        print(text)
        if flagged and rc == 0:
            rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
